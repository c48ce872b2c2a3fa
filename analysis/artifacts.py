"""Where the saved analysis artefacts live, and reading them back with clear errors.

`scaling fit SRC` writes `<RUNS_DIR>/fit.json`, or `<stem>.fit.json` beside a CSV;
`scaling report SRC` writes into `<RUNS_DIR>/report/` or `<stem>_report/` beside a CSV.
"""

from __future__ import annotations

from pathlib import Path

from scaling.fileio import read_json_object
from scaling.runs import iter_runs


def default_report_dir(src: str | Path) -> Path:
    src = Path(src)
    if src.suffix.lower() == ".csv":
        return src.with_name(src.stem + "_report")
    return src / "report"


def read_fit(path: str | Path) -> dict:
    """The raw JSON object of a fit.json (analysis.fitdoc.read_fit checks and types it)."""
    return read_json_object(path, expected="a JSON object written by `scaling fit`")


def model_dims(src: str | Path | None) -> tuple[int | None, int | None]:
    """(vocab_size, seq_len) of the runs in a runs directory, from the first run that has them."""
    if src is None or not Path(src).is_dir():
        return None, None
    for run in iter_runs(src):
        if run.vocab_size and run.seq_len:
            return int(run.vocab_size), int(run.seq_len)
    return None, None
