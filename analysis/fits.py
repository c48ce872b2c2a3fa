"""The fit arrow: a source (runs directory or CSV) or its points to a FitDocument.

    fit_source(src, ...)                    -> FitDocument (what `scaling fit` runs)
    fit_points(points, info, curves, ...)   -> FitDocument (already loaded points)
    fit_all(points, curves, approaches)     -> {"approach1": PowerLawResult | ApproachError, ...}

Approach 1 reads training curves when a runs directory has them (else the final points),
Approach 2 the IsoFLOP minima, Approach 3 the parametric law, with VPNLS as its check.
Questionable but usable fits raise a FitWarning (unbracketed or concave minima); callers
decide how to show it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.approach1 import fit_approach1, fit_approach1_points
from analysis.approach2 import FitWarning, fit_approach2
from analysis.approach3 import fit_approach3, fit_vpnls
from analysis.bootstrap import DEFAULT_LEVEL, bootstrap, check_level, holdout_largest_budget
from analysis.fitdoc import ApproachError, FitDocument, Result
from analysis.load import LoadInfo, load_curves, load_points
from scaling.errors import UserError
from scaling.shapes import PARAMS_KINDS

APPROACHES = ("1", "2", "3")


def with_params_kind(points: pd.DataFrame, params_kind: str = "total") -> pd.DataFrame:
    """Points whose `params` column is the chosen parameter count."""
    if params_kind not in PARAMS_KINDS:
        raise UserError(f"params_kind: expected 'total' or 'non_embedding', got {params_kind!r}")
    if params_kind == "total":
        return points
    n = points["params_non_embedding"].to_numpy(float)
    if not np.isfinite(n).all():
        raise UserError("params_kind: 'non_embedding' needs params_non_embedding for "
                        "every run (unknown for some)")
    return points.assign(params=n)


def parse_approaches(approach: str | int | tuple | list) -> tuple[str, ...]:
    if isinstance(approach, list | tuple):
        names = tuple(str(a) for a in approach)
    elif str(approach) == "all":
        names = APPROACHES
    else:
        names = (str(approach),)
    bad = [a for a in names if a not in APPROACHES]
    if bad:
        raise UserError(f"approach: expected 1, 2, 3 or all, got {bad[0]!r}")
    return names


def fit_all(points: pd.DataFrame, curves: pd.DataFrame | None = None,
            approaches: str | tuple = "all", *, vpnls: bool = True,
            starts: np.ndarray | None = None,
            overestimate_penalty: float = 1.0) -> dict[str, Result | ApproachError]:
    """Run the chosen approaches. With several, an approach whose data requirement is not
    met (e.g. Approach 2 with one budget) or whose fit leaves its domain yields an
    ApproachError instead of failing the rest (and a FitWarning); asked for alone, its
    UserError propagates. Approach 3's own data checks always propagate."""
    names = parse_approaches(approaches)
    lenient = len(names) > 1
    out: dict[str, Result | ApproachError] = {}

    def attempt(key: str, fn: Callable[[], Result]) -> None:
        try:
            out[key] = fn()
        except UserError as e:
            if not lenient:
                raise
            warnings.warn(f"{key} skipped: {e}", FitWarning, stacklevel=3)
            out[key] = ApproachError(str(e))

    if "1" in names:
        if curves is not None and len(curves):
            attempt("approach1", lambda: fit_approach1(curves))
        else:
            attempt("approach1", lambda: fit_approach1_points(points))
    if "2" in names:
        attempt("approach2", lambda: fit_approach2(points))
    if "3" in names:
        columns = (points["params"], points["tokens"], points["loss"])
        law = fit_approach3(*columns, starts=starts, overestimate_penalty=overestimate_penalty)
        attempt("approach3", law.checked)
        if vpnls:
            attempt("vpnls", lambda: fit_vpnls(*columns).checked())
    return out


def _check_bootstrap(n_bootstrap: int, level: float) -> None:
    if n_bootstrap < 0:
        raise UserError(f"--bootstrap: expected >= 0 resamples, got {n_bootstrap}")
    if n_bootstrap:
        check_level(level)


def fit_points(points: pd.DataFrame, info: LoadInfo | dict | None = None,
               curves: pd.DataFrame | None = None, *, approaches: str | tuple = "all",
               n_bootstrap: int = 0, level: float = DEFAULT_LEVEL, seed: int = 0,
               params_kind: str = "total", holdout: bool = False,
               metric: str = "loss", overestimate_penalty: float = 1.0) -> FitDocument:
    """Fit, bootstrap (n_bootstrap resamples, 0 for none) and validate loaded points;
    `metric` names what their `loss` column holds (`analysis.load.select_metric`);
    overestimate_penalty: Approach 3's asymmetric objective (1 = symmetric)."""
    _check_bootstrap(n_bootstrap, level)
    info = info.to_dict() if isinstance(info, LoadInfo) else dict(info or {})
    points = with_params_kind(points, params_kind)
    results = fit_all(points, curves, approaches, overestimate_penalty=overestimate_penalty)
    boots = (bootstrap(points, results, curves=curves, n=n_bootstrap, seed=seed, level=level)
             if n_bootstrap else {})
    doc = FitDocument(source=str(info.get("source", "")), kind=str(info.get("kind", "")),
                      n_points=len(points), excluded=dict(info.get("excluded", {})),
                      dropped_highest=int(info.get("dropped_highest", 0)),
                      convention=str(info.get("convention", "6N")), params_kind=params_kind,
                      budgets_inferred=bool(info.get("budgets_inferred", False)),
                      metric=metric, approaches=results, bootstrap=boots)
    if holdout:
        doc = replace(doc, validation={"holdout": holdout_largest_budget(points)})
    return doc


def fit_source(src: str | Path, *, approaches: str | tuple = "all", drop_highest: int = 0,
               convention: str | None = None, metric: str = "loss",
               **options: Any) -> FitDocument:
    """Load a runs directory or CSV (with the runs' training curves for Approach 1) and
    fit it; `options` as for fit_points (n_bootstrap, level, seed, params_kind, holdout).
    With a `metric` other than the held-out loss, Approach 1 takes the final points (the
    curves are of the training loss)."""
    src = Path(src)
    _check_bootstrap(options.get("n_bootstrap", 0), options.get("level", DEFAULT_LEVEL))
    points, info = load_points(src, drop_highest=drop_highest, convention=convention,
                               metric=metric)
    curves = None
    if src.is_dir() and "1" in parse_approaches(approaches) and metric == "loss":
        curves = load_curves(src)
    return fit_points(points, info, curves, approaches=approaches, metric=metric, **options)

