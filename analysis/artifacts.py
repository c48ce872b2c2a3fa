"""Where the saved analysis artefacts live, and reading them back with clear errors.

`scaling fit SRC` writes `<RUNS_DIR>/fit.json`, or `<stem>.fit.json` beside a CSV;
`scaling report SRC` writes into `<RUNS_DIR>/report/` or `<stem>_report/` beside a CSV.
"""

from __future__ import annotations

from pathlib import Path

from scaling.errors import UserError
from scaling.fileio import read_json_object
from scaling.runs import iter_runs


def default_fit_path(src: str | Path) -> Path:
    src = Path(src)
    if src.suffix.lower() == ".csv":
        return src.with_name(src.stem + ".fit.json")
    return src / "fit.json"


def default_report_dir(src: str | Path) -> Path:
    src = Path(src)
    if src.suffix.lower() == ".csv":
        return src.with_name(src.stem + "_report")
    return src / "report"


def resolve_fit_path(arg: str | Path) -> Path:
    """A fit.json given directly, or the saved one of a runs directory or CSV."""
    path = Path(arg)
    if path.suffix.lower() == ".json":
        if not path.is_file():
            raise UserError(f"--fit {path}: no such file")
        return path
    if path.suffix.lower() == ".csv" or path.is_dir():
        fit_path = default_fit_path(path)
        if not fit_path.is_file():
            raise UserError(f"--fit {path}: no saved fit at {fit_path}; run `scaling fit {path}` first")
        return fit_path
    raise UserError(f"--fit {path}: expected a fit.json, a runs directory or a CSV that exists")


def read_fit(path: str | Path) -> dict:
    return read_json_object(path, expected="a JSON object written by `scaling fit`")


def model_dims(src: str | Path | None) -> tuple[int | None, int | None]:
    """(vocab_size, seq_len) of the runs in a runs directory, from the first run that has them."""
    if src is None or not Path(src).is_dir():
        return None, None
    for run in iter_runs(src):
        if run.vocab_size and run.seq_len:
            return int(run.vocab_size), int(run.seq_len)
    return None, None
