"""The forecast blocks of fit.json: measured noise, outliers, compute frontier, rollout.

One entry point for `scaling fit`, so the command only passes its options: each block is
computed from the points and the approaches already fitted, and is a plain dict (the
`to_dict()` of the records in analysis.noise, analysis.frontier, analysis.rollout).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from analysis.approach2 import PowerLawResult
from analysis.frontier import check_fixed_E, e_sensitivity, frontier_from_minima
from analysis.noise import DEFAULT_OUTLIER_SIGMA, estimate_noise, exclude_runs, flag_outliers
from analysis.rollout import rollout as run_rollout
from scaling.errors import UserError

ROLLOUT_BOOTSTRAP = 200  # resamples per rollout step when `--bootstrap` is not given
exclude = exclude_runs


def forecast_blocks(points: pd.DataFrame, results: dict[str, Any], *,
                    fix_E: float | None = None, rollout: bool = False,
                    n_bootstrap: int = ROLLOUT_BOOTSTRAP, level: float = 0.8,
                    seed: int = 0, outlier_sigma: float = DEFAULT_OUTLIER_SIGMA) -> dict:
    """{"sweeps"} for runs dirs, {"noise", "outliers"} when Approach 3 was fitted, {"frontier"} when Approach 2's
    minima exist (3+ budgets), {"rollout"} when asked."""
    out: dict = {}
    if "sweep" in points:  # which sweeps a forecast from this fit may be scored against
        out["sweeps"] = sorted({str(x) for x in points["sweep"]})
    law = results.get("approach3")
    if law is not None and not isinstance(law, dict):
        noise = estimate_noise(points, law, level=level)
        out["noise"] = noise.to_dict()
        out["outliers"] = [o.to_dict() for o in flag_outliers(points, law, noise.sigma,
                                                              outlier_sigma)]
    a2 = results.get("approach2")
    if isinstance(a2, PowerLawResult) and len(a2.extra.get("minima", [])) >= 3:
        minima = a2.extra["minima"]
        front = frontier_from_minima(minima, fix_E=fix_E)
        budgets = [m["budget"] for m in minima]
        target = max(budgets) * 100
        out["frontier"] = {"law": front.to_dict(), "e_table": e_sensitivity(
            budgets, [m["loss_opt"] for m in minima], target)}
    elif fix_E is not None:
        raise UserError("--fix-E: the compute-frontier law needs Approach 2's minima of at "
                        "least 3 budgets")
    if rollout:
        out["rollout"] = run_rollout(points, n_bootstrap=n_bootstrap, level=level,
                                     seed=seed).to_dict()
    return out


__all__ = ["ROLLOUT_BOOTSTRAP", "check_fixed_E", "exclude", "forecast_blocks"]
