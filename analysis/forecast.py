"""The forecast blocks of fit.json: measured noise, outliers, compute frontier, rollout.

One entry point for `scaling fit`, so the command only passes its options: each block is
computed from the points and the approaches already fitted, and is a plain dict (the
`to_dict()` of the records in analysis.noise, analysis.frontier, analysis.rollout).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.approach2 import PowerLawResult
from analysis.approach3 import Approach3Result
from analysis.extrapolation import estimate_extrapolation
from analysis.fitdoc import FitDocument
from analysis.fits import fit_points, parse_approaches
from analysis.frontier import check_fixed_E, e_sensitivity, frontier_from_minima
from analysis.load import load_curves, load_points
from analysis.noise import (
    DEFAULT_OUTLIER_SIGMA,
    NoiseEstimate,
    estimate_noise,
    exclude_runs,
    flag_outliers,
)
from analysis.rollout import rollout as run_rollout
from scaling.errors import UserError

ROLLOUT_BOOTSTRAP = 200  # resamples per rollout step when `--bootstrap` is not given
exclude = exclude_runs


def forecast_blocks(points: pd.DataFrame, results: Mapping[str, object], *,
                    fix_E: float | None = None, rollout: bool = False,
                    n_bootstrap: int = ROLLOUT_BOOTSTRAP, level: float = 0.8,
                    seed: int = 0, outlier_sigma: float = DEFAULT_OUTLIER_SIGMA) -> dict:
    """{"sweeps"} for runs dirs, {"noise", "outliers"} when Approach 3 was fitted, {"frontier"} when Approach 2's
    minima exist (3+ budgets), {"rollout"} when asked."""
    out: dict = {}
    if "sweep" in points:  # which sweeps a forecast from this fit may be scored against
        out["sweeps"] = sorted({str(x) for x in points["sweep"]})
    law = results.get("approach3")
    if isinstance(law, Approach3Result):
        noise = estimate_noise(points, law, level=level)
        # The PI's error beyond the fitted range, from an inner rollout on these points.
        noise = replace(noise, extrapolation=estimate_extrapolation(points, noise.sigma,
                                                                    seed=seed))
        out["noise"] = noise.to_dict()
        out["outliers"] = [o.to_dict() for o in flag_outliers(points, law, noise.sigma,
                                                              outlier_sigma)]
    a2 = results.get("approach2")
    if isinstance(a2, PowerLawResult) and len(a2.minima) >= 3:
        front = frontier_from_minima(list(a2.minima), fix_E=fix_E)
        budgets = [m.budget for m in a2.minima]
        out["frontier"] = {"law": front.to_dict(), "e_table": e_sensitivity(
            budgets, [m.loss_opt for m in a2.minima], max(budgets) * 100)}
    elif fix_E is not None:
        raise UserError("--fix-E: the compute-frontier law needs Approach 2's minima of at "
                        "least 3 budgets")
    if rollout:
        out["rollout"] = run_rollout(points, n_bootstrap=n_bootstrap, level=level,
                                     seed=seed).to_dict()
    return out


def fit_source_with_forecast(src: str | Path, *, approaches: str | tuple = "all",
                             drop_highest: int = 0, convention: str | None = None,
                             exclude: tuple[str, ...] | list[str] = (),
                             fix_E: float | None = None, rollout: bool = False,
                             metric: str = "loss", **options: Any) -> FitDocument:
    """`analysis.fits.fit_source` plus the forecast blocks: runs named in `exclude` are left
    out before fitting, `fix_E` is checked against the losses before anything is fitted."""
    src = Path(src)
    points, info = load_points(src, drop_highest=drop_highest, convention=convention,
                               metric=metric)
    if exclude:
        points = exclude_runs(points, exclude)
    if fix_E is not None:
        check_fixed_E(fix_E, points["loss"])
    curves = None
    if src.is_dir() and "1" in parse_approaches(approaches) and metric == "loss":
        curves = load_curves(src)  # curves are of the training loss: not another metric's
        if exclude:
            curves = curves[~curves["run"].astype(str).isin(list(exclude))]
    doc = fit_points(points, info, curves, approaches=approaches, metric=metric, **options)
    return replace(with_forecast(doc, points, fix_E=fix_E, rollout=rollout, **options),
                   excluded_runs=tuple(exclude))


def with_forecast(doc: FitDocument, points: pd.DataFrame, *, fix_E: float | None = None,
                  rollout: bool = False, **options: Any) -> FitDocument:
    """`doc` (fitted from `points`) with its forecast blocks as typed fields; `options` as
    for fit_points (n_bootstrap, level and seed size the rollout)."""
    blocks = forecast_blocks(points, doc.approaches, fix_E=fix_E, rollout=rollout,
                             n_bootstrap=options.get("n_bootstrap") or ROLLOUT_BOOTSTRAP,
                             level=options.get("level", 0.8), seed=options.get("seed", 0))
    if "noise" in blocks:
        blocks["noise"] = NoiseEstimate.from_dict(blocks["noise"])
        blocks["outliers"] = tuple(blocks["outliers"])
    if "sweeps" in blocks:
        blocks["sweeps"] = tuple(blocks["sweeps"])
    return replace(doc, **blocks)


__all__ = ["fit_source_with_forecast", "with_forecast", "ROLLOUT_BOOTSTRAP", "check_fixed_E", "exclude", "forecast_blocks"]
