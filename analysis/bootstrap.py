"""Uncertainty: bootstrap over runs, and leave-largest-budget-out validation.

Resampling. Runs are drawn with replacement WITHIN each budget (points without a budget form
one more stratum), so every resample keeps the IsoFLOP design: each budget keeps its number
of runs and Approach 2 always has its budgets. One set of resamples serves every approach,
so the intervals of different approaches are comparable. Percentile intervals at `level`.

Approach 3 is refitted for all resamples in one batched L-BFGS (a resample is a row of
point multiplicities), started from the full-data optimum and four nearby starts
(`analysis.approach3.local_starts`); Approach 2 refits each budget's parabola on numpy arrays;
Approach 1 re-takes the envelope over the resampled set of runs (curves) or per-budget
minima (final points).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.approach1 import envelope_matrix, power_laws_from_envelope
from analysis.approach2 import (
    POWER_KEYS,
    FitWarning,
    PowerLawResult,
    budget_minimum,
    fit_approach2,
    power_laws_from_minima,
    weighted_power_law,
)
from analysis.approach3 import Approach3Result, ParametricLaw, fit_approach3, refit_many
from scaling.errors import UserError

DEFAULT_N = 1000
DEFAULT_LEVEL = 0.8


def check_level(level: float) -> float:
    level = float(level)
    if not 0 < level < 1:
        raise UserError(f"level: expected a confidence level in (0, 1), got {level}")
    return level


def resample_indices(points: pd.DataFrame, n: int, seed: int) -> np.ndarray:
    """(n, P) row indices, drawn with replacement within each budget stratum."""
    if n < 2:
        raise UserError(f"bootstrap: expected at least 2 resamples, got {n}")
    rng = np.random.default_rng(seed)
    budget = points["budget"].to_numpy(float) if "budget" in points else np.full(len(points),
                                                                                np.nan)
    key = np.where(np.isfinite(budget), budget, -1.0)
    idx = np.empty((n, len(points)), dtype=np.int64)
    for value in np.unique(key):
        members = np.nonzero(key == value)[0]
        idx[:, members] = members[rng.integers(0, len(members), (n, len(members)))]
    return idx


def percentile_interval(samples: np.ndarray, level: float) -> list[float]:
    x = np.asarray(samples, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return [math.nan, math.nan]
    q = (1 - level) / 2
    return [float(np.quantile(x, q)), float(np.quantile(x, 1 - q))]


@dataclass(frozen=True)
class Bootstrap:
    """One approach's bootstrap: samples[name] is an (n,) array, NaN where a resample failed."""

    level: float
    n: int
    seed: int
    samples: Mapping[str, np.ndarray] = field(repr=False)

    def interval(self, name: str, level: float | None = None) -> list[float]:
        return percentile_interval(self.samples[name], level or self.level)

    def to_dict(self) -> dict:
        return {"level": self.level, "n": self.n, "seed": self.seed,
                "samples": {k: v.tolist() for k, v in self.samples.items()}}


def _approach3_samples(points, idx, base: Approach3Result) -> dict[str, np.ndarray]:
    n_pts = len(points)
    weights = np.stack([np.bincount(row, minlength=n_pts) for row in idx]).astype(np.float64)
    theta, _ = refit_many(points["params"], points["tokens"],
                          np.log(points["loss"].to_numpy(float))[None], weights, base.theta())
    a_, b_, e_, alpha, beta = theta.T
    law = ParametricLaw(A=np.exp(a_), B=np.exp(b_), E=np.exp(e_), alpha=alpha, beta=beta)
    return {"A": law.A, "B": law.B, "E": law.E, "alpha": alpha, "beta": beta, "a": law.a,
            "b": law.b, "G": law.G}


def _approach2_samples(points, idx) -> dict[str, np.ndarray]:
    budgets = points["budget"].to_numpy(float)
    n, d, loss = (points[c].to_numpy(float) for c in ("params", "tokens", "loss"))
    finite = np.isfinite(budgets)
    levels = np.unique(budgets[finite])
    out = {k: np.full(len(idx), np.nan) for k in POWER_KEYS}
    for s, row in enumerate(idx):
        minima = []
        for c in levels:
            g = row[budgets[row] == c]
            if len(np.unique(n[g])) >= 3:
                minima.append(budget_minimum(c, n[g], d[g], loss[g])[0])
        if len(minima) >= 2:
            pl = power_laws_from_minima(minima)
            for k in out:
                out[k][s] = getattr(pl, k)
    return out


def _approach1_samples(points, curves, idx, seed) -> dict[str, np.ndarray]:
    out = {k: np.full(len(idx), np.nan) for k in POWER_KEYS}
    if curves is not None and len(curves):
        em = envelope_matrix(curves)
        rng = np.random.default_rng(seed + 1)
        for s in range(len(idx)):
            use = np.zeros(len(em.runs), bool)
            use[rng.integers(0, len(em.runs), len(em.runs))] = True
            fitted = power_laws_from_envelope(em, use)
            if fitted is not None:
                out["a"][s], out["b"][s], out["k_params"][s], out["k_tokens"][s], _ = fitted
        return out
    budgets = points["budget"].to_numpy(float)
    n, d, loss = (points[c].to_numpy(float) for c in ("params", "tokens", "loss"))
    for s, row in enumerate(idx):
        row = row[np.isfinite(budgets[row])]
        levels = np.unique(budgets[row])
        if len(levels) < 2:
            continue
        best = np.array([row[budgets[row] == c][np.argmin(loss[row[budgets[row] == c]])]
                         for c in levels])
        out["k_params"][s], out["a"][s] = weighted_power_law(levels, n[best])
        out["k_tokens"][s], out["b"][s] = weighted_power_law(levels, d[best])
    return out


def bootstrap(points: pd.DataFrame, base: Mapping[str, Any], *,
              curves: pd.DataFrame | None = None, n: int = DEFAULT_N, seed: int = 0,
              level: float = DEFAULT_LEVEL) -> dict[str, Bootstrap]:
    """Bootstrap every fitted approach in `base` (fits.fit_all on the same points; failed
    approaches and VPNLS, a check of Approach 3, are left out)."""
    level = check_level(level)
    idx = resample_indices(points, n, seed)
    samples: dict[str, dict[str, np.ndarray]] = {}
    if isinstance(base.get("approach3"), Approach3Result):
        samples["approach3"] = _approach3_samples(points, idx, base["approach3"])
    if isinstance(base.get("approach2"), PowerLawResult):
        samples["approach2"] = _approach2_samples(points, idx)
    if isinstance(base.get("approach1"), PowerLawResult):
        from_curves = base["approach1"].extra.get("from") == "curves"
        samples["approach1"] = _approach1_samples(points, curves if from_curves else None,
                                                  idx, seed)
    return {k: Bootstrap(level=level, n=n, seed=seed, samples=v) for k, v in samples.items()}


@dataclass(frozen=True)
class Holdout:
    """Leave-largest-budget-out: each approach fitted on the other budgets, predicting the
    held-out budget's IsoFLOP minimum. predicted[approach] holds params_opt and
    params_opt_log_error (ln predicted / observed), and for Approach 3 also loss_opt,
    loss_opt_error and points_loss_mean_abs_rel_error (over every held-out run)."""

    budget: float
    n_train: int
    n_heldout: int
    observed_params_opt: float
    observed_loss_opt: float
    observed_bracketed: bool
    predicted: Mapping[str, Mapping[str, float]]
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"budget": self.budget, "n_train": self.n_train, "n_heldout": self.n_heldout,
                "observed": {"params_opt": self.observed_params_opt,
                             "loss_opt": self.observed_loss_opt,
                             "bracketed": self.observed_bracketed},
                "notes": list(self.notes), **{k: dict(v) for k, v in self.predicted.items()}}


def holdout_largest_budget(points: pd.DataFrame) -> Holdout:
    """Fit Approaches 2 and 3 on all budgets but the largest; predict the largest.

    Observed at the held-out budget: its IsoFLOP minimum (parabola vertex, as Approach 2
    takes it). Errors: ln(predicted N* / observed N*) and predicted - observed minimum loss;
    for Approach 3 also the mean absolute relative error of the loss of every held-out run.
    """
    budgets = points["budget"].to_numpy(float)
    levels = np.unique(budgets[np.isfinite(budgets)])
    if len(levels) < 3:
        raise UserError(f"holdout: expected at least 3 budgets, got {len(levels)}")
    largest = levels[-1]
    held = points[budgets == largest]
    train = points[budgets != largest]
    obs, notes = budget_minimum(largest, *(held[c].to_numpy(float)
                                           for c in ("params", "tokens", "loss")))
    a3 = fit_approach3(train["params"], train["tokens"], train["loss"])
    pred_n, pred_l = float(a3.params_opt(largest)), float(a3.loss_opt(largest))
    point_err = a3.predict(held["params"], held["tokens"]) / held["loss"].to_numpy(float) - 1
    predicted = {"approach3": {"params_opt": pred_n, "loss_opt": pred_l,
                               "params_opt_log_error": math.log(pred_n / obs.params_opt),
                               "loss_opt_error": pred_l - obs.loss_opt,
                               "points_loss_mean_abs_rel_error":
                                   float(np.mean(np.abs(point_err)))}}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FitWarning)
            pred_n2 = float(fit_approach2(train).params_opt(largest))
        predicted["approach2"] = {"params_opt": pred_n2,
                                  "params_opt_log_error": math.log(pred_n2 / obs.params_opt)}
    except UserError:
        pass  # too few budgets left with 3 sizes: Approach 3's prediction stands alone
    return Holdout(budget=float(largest), n_train=len(train), n_heldout=len(held),
                   observed_params_opt=obs.params_opt, observed_loss_opt=obs.loss_opt,
                   observed_bracketed=obs.bracketed, predicted=predicted, notes=tuple(notes))
