"""Where the saved analysis artefacts live, and reading them back with clear errors.

`scaling fit SRC` writes `<RUNS_DIR>/fit.json`, or `<stem>.fit.json` beside a CSV;
`scaling report SRC` writes into `<RUNS_DIR>/report/` or `<stem>_report/` beside a CSV.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scaling.fileio import read_json_object
from scaling.runs import iter_runs
from scaling.shapes import recipe_named


def default_report_dir(src: str | Path) -> Path:
    src = Path(src)
    if src.suffix.lower() == ".csv":
        return src.with_name(src.stem + "_report")
    return src / "report"


def read_fit(path: str | Path) -> dict:
    """The raw JSON object of a fit.json (analysis.fitdoc.read_fit checks and types it)."""
    return read_json_object(path, expected="a JSON object written by `scaling fit`")


@dataclass(frozen=True)
class RunsModel:
    """The model settings a directory's runs share, which a shape recommended from their fit
    keeps: the recommended model is one more run of the same family. None: not recorded
    (solve_shape's own default then)."""

    vocab_size: int | None = None
    seq_len: int | None = None
    mlp: str | None = None
    tie_embeddings: bool | None = None
    qk_norm: bool | None = None
    shape_recipe: str | None = None

    def shape_options(self) -> dict:
        """scaling.shapes.solve_shape's keyword arguments for a shape of this family."""
        options: dict = {k: v for k, v in (("mlp", self.mlp),
                                           ("tie_embeddings", self.tie_embeddings),
                                           ("qk_norm", self.qk_norm)) if v is not None}
        if self.shape_recipe is not None:
            options["recipe"] = recipe_named(self.shape_recipe)
        return options


def runs_model(src: str | Path | None) -> RunsModel:
    """The RunsModel of the runs in a runs directory, from the first run that records its
    vocabulary and sequence length (all None when there is none)."""
    if src is None or not Path(src).is_dir():
        return RunsModel()
    for run in iter_runs(src):
        if run.vocab_size and run.seq_len:
            return RunsModel(int(run.vocab_size), int(run.seq_len), mlp=run.mlp,
                             tie_embeddings=run.tie_embeddings, qk_norm=run.qk_norm,
                             shape_recipe=run.shape_recipe)
    return RunsModel()
