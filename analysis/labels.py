"""Labelled ladders: points split by their `label`, one fit per label, optionally a joint one.

A label says what a ladder varies (data set, architecture, optimiser). It comes from a
sweep spec's top-level `label` (recorded in each run's config.json) or from a CSV's `label`
column (or the column `--label-column` names); `analysis.load` puts it in the points'
`label` column.

    split_labels(points)                   -> {label: points}   (one entry, "" when unlabelled)
    fit_labels(src, label_column, joint)   -> LabelledFit      (what `scaling fit` runs)
    contenders(srcs, label_column, ...)    -> [Contender]      (what `scaling compare` runs)

A FitDocument per label is written beside fit.json as fit.<label>.json (for a CSV,
<stem>.fit.<label>.json) with an index fit.labels.json naming them and holding the joint
fit (docs/architecture.md, "fit.json").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.approach3 import LAW_KEYS, Approach3Result, ParametricLaw
from analysis.bootstrap import bootstrap
from analysis.compare import Contender, fit_throughput
from analysis.fitdoc import FitDocument, write_fit
from analysis.fits import fit_all, fit_points
from analysis.forecast import with_forecast
from analysis.frontier import check_fixed_E
from analysis.joint import JointFit, check_mode, fit_joint
from analysis.load import load_points
from analysis.noise import exclude_runs
from scaling.errors import UserError
from scaling.fileio import atomic_write_json
from scaling.runs import measured_tokens_per_s

LABEL_PATTERN = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"  # as a sweep's name: it goes into file names


def split_labels(points: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{label: its points} in order of first appearance; {"": points} without labels.
    A labelled set where some rows have no label is refused (they would be fitted nowhere)."""
    if "label" not in points or points["label"].isna().all():
        return {"": points}
    missing = points["label"].isna().to_numpy()
    if missing.any():
        raise UserError(f"label: row {int(np.argmax(missing)) + 1} has no label (every row "
                        "of a labelled source needs one)")
    out = {}
    for label in dict.fromkeys(points["label"]):
        if not re.fullmatch(LABEL_PATTERN, label) or label == "labels":
            raise UserError(f"label: expected letters, digits, '-', '_' or '.' (not 'labels'), "
                            f"got {label!r}")
        out[label] = points[points["label"] == label].reset_index(drop=True)
    return out


@dataclass(frozen=True)
class LabelledFit:
    """One FitDocument per label and, when asked, the joint fit across them."""

    docs: Mapping[str, FitDocument]
    joint: JointFit | None = None

    def index(self, paths: Mapping[str, Path]) -> dict:
        return {"labels": {k: {"path": str(paths[k].name), "n_points": doc.n_points}
                           for k, doc in self.docs.items()},
                "joint": None if self.joint is None else self.joint.to_dict()}


def label_fit_path(fit_path: str | Path, label: str) -> Path:
    """fit.json -> fit.<label>.json beside it (`labels` names the index)."""
    p = Path(fit_path)
    return p.with_name(f"{p.stem}.{label}{p.suffix or '.json'}")


def _fit_one(points: pd.DataFrame, info: dict, label: str, options: dict) -> FitDocument:
    info = {**info, "source": f"{info.get('source', '')}#label={label}"}
    fix_E, rollout = options.pop("fix_E", None), options.pop("rollout", False)
    if fix_E is not None:  # as for an unlabelled fit: refused before anything is fitted
        check_fixed_E(fix_E, points["loss"])
    doc = fit_points(points, info, None, **options)
    return with_forecast(doc, points, fix_E=fix_E, rollout=rollout, **options)


def fit_labels(src: str | Path, *, label_column: str | None = None, joint: str | None = None,
               drop_highest: int = 0, convention: str | None = None, metric: str = "loss",
               exclude: tuple[str, ...] | list[str] = (), **options: Any) -> LabelledFit | None:
    """Fit each label of `src` separately (and jointly with `joint`, a JOINT_MODES name);
    None when `src` has fewer than 2 labels and no joint fit is asked for (fit it whole).
    `options` as for `fit_points` plus fix_E and rollout. Approach 1 reads the final points
    (training curves are not split by label)."""
    if joint is not None:
        check_mode(joint)
    points, info = load_points(src, drop_highest=drop_highest, convention=convention,
                               metric=metric, label_column=label_column)
    options["metric"] = metric
    if exclude:
        points = exclude_runs(points, exclude)
    groups = split_labels(points)
    if len(groups) < 2:
        if joint is not None:
            raise UserError(f"--joint: expected at least 2 labels in {src}, got {len(groups)} "
                            "(a `label` column, --label-column, or the specs' `label`)")
        return None
    docs = {}
    for label, pts in groups.items():
        try:
            docs[label] = _fit_one(pts, info.to_dict(), label, dict(options))
        except UserError as e:
            raise UserError(f"label {label!r}: {e}") from None
    fitted = None
    if joint is not None:
        independent = {k: d.approaches.get("approach3") for k, d in docs.items()}
        fitted = fit_joint({k: (g["params"], g["tokens"], g["loss"]) for k, g in groups.items()},
                           joint, independent={k: v for k, v in independent.items()
                                               if isinstance(v, Approach3Result)})
    return LabelledFit(docs=docs, joint=fitted)


def write_labelled(fit: LabelledFit, fit_path: str | Path) -> Path:
    """fit.<label>.json for every label and the index fit.labels.json; returns the index."""
    paths = {k: label_fit_path(fit_path, k) for k in fit.docs}
    for label, doc in fit.docs.items():
        write_fit(paths[label], doc)
    index = label_fit_path(fit_path, "labels")
    atomic_write_json(index, fit.index(paths))
    return index


def _rates(points: pd.DataFrame) -> np.ndarray:
    """Measured tokens/s per point: a CSV's `tokens_per_s` column or the runs' metrics.jsonl."""
    if "tokens_per_s" in points:
        return pd.to_numeric(points["tokens_per_s"], errors="coerce").to_numpy(float)
    if "run_dir" in points:
        return np.array([measured_tokens_per_s(d) or np.nan for d in points["run_dir"]])
    return np.full(len(points), np.nan)


def contenders(srcs: list[str | Path], *, label_column: str | None = None,
               n_bootstrap: int = 200, seed: int = 0, level: float = 0.8) -> list[Contender]:
    """One Contender per (source, label): Approach 3 and its bootstrap (analysis.bootstrap)
    on its points, its swept budgets and measured throughput. Named by its label, else by
    the source (a runs dir's name or a CSV's stem). Each is resampled with its own seed
    (seed + its position), so the two sides of a pair are independent bootstraps."""
    ladders = []
    for src in srcs:
        points, _ = load_points(src, label_column=label_column)
        ladders += [(label or Path(src).stem, pts, src)
                    for label, pts in split_labels(points).items()]
    if len(ladders) < 2:  # before any fit: a wrong invocation fails at once
        raise UserError(f"SRC: expected at least 2 ladders to compare (two sources, or one "
                        f"with 2+ labels), got {len(ladders)}")
    out: list[Contender] = []
    for name, pts, src in ladders:
        try:  # Approach 3 alone: no VPNLS check, no forecast blocks
            results = fit_all(pts, None, "3", vpnls=False)
            law = FitDocument(approaches=results).result("approach3")
            boots = (bootstrap(pts, results, n=n_bootstrap, seed=seed + len(out), level=level)
                     if n_bootstrap else {})
        except UserError as e:
            raise UserError(f"label {name!r}: {e}") from None
        laws = FitDocument(approaches=results, bootstrap=boots).sample_laws("approach3")
        budgets = pts["budget"].to_numpy(float)
        out.append(Contender(
            name=name, law=ParametricLaw(*(getattr(law, k) for k in LAW_KEYS)),
            samples=laws[0] if laws and isinstance(laws[0], ParametricLaw) else None,
            budgets=tuple(float(b) for b in np.unique(budgets[np.isfinite(budgets)])),
            throughput=fit_throughput(pts["params"], _rates(pts)),
            source=str(src), n_points=len(pts)))
    return out


__all__ = ["LabelledFit", "contenders", "fit_labels", "label_fit_path", "split_labels",
           "write_labelled"]
