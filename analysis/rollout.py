"""Rolling-origin validation of Approach 3: fit on what was known, predict what came next.

With budgets (IsoFLOP groups): for every k with enough points, fit on budgets 1..k and
predict budget k+1: its IsoFLOP minimum (N* and loss, observed as the parabola vertex that
Approach 2 takes) and every one of its runs, each with a prediction interval from a bootstrap
of the training fit plus the noise measured on the training runs (`analysis.predict`).
Without budgets: for each model size (from the fourth smallest on), fit on the runs of
smaller models and predict all runs of that size and larger ones (loss only; no N*).

Errors are relative for losses (predicted / observed - 1) and natural-log for N*
(ln(predicted / observed)), as in `analysis.bootstrap.holdout_largest_budget`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.approach2 import budget_minimum
from analysis.approach3 import N_PARAMS, fit_approach3
from analysis.extrapolation import estimate_extrapolation, usable_budgets
from analysis.noise import estimate_noise
from analysis.predict import bootstrap_law_samples, predict_loss
from scaling.errors import UserError

MIN_TRAIN_POINTS = 2 * N_PARAMS  # fewer and five parameters are fitted to noise
MIN_TRAIN_SIZES = 3


@dataclass(frozen=True)
class RolloutStep:
    """One origin: what was fitted and how well it predicted what followed."""

    train: list[float]  # budgets fitted (budget mode) or [largest size fitted] (size mode)
    target: float  # the predicted budget, or the smallest predicted size
    n_train: int
    n_target: int
    points_loss_mean_abs_rel_error: float
    points_pi_coverage: float  # fraction of the target's runs inside their PI
    sigma: float
    noise_source: str
    tau: float  # misspecification scale in the PI (analysis.extrapolation); nan: left out
    predicted: list[dict] = field(default_factory=list)  # per target run: run, observed, ...
    # budget mode only: the IsoFLOP minimum of the target budget
    loss_opt_predicted: float = math.nan
    loss_opt_observed: float = math.nan
    loss_opt_error: float = math.nan
    loss_opt_pi: list[float] | None = None
    loss_opt_inside: bool | None = None
    params_opt_predicted: float = math.nan
    params_opt_observed: float = math.nan
    params_opt_log_error: float = math.nan
    bracketed: bool | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Rollout:
    mode: str  # "budgets" | "sizes"
    level: float
    n_bootstrap: int
    steps: list[RolloutStep]

    def to_dict(self) -> dict:
        return {"mode": self.mode, "level": self.level, "n_bootstrap": self.n_bootstrap,
                "steps": [s.to_dict() for s in self.steps], "summary": self.summary()}

    def summary(self) -> dict:
        def mean_abs(key: str) -> float:
            x = np.array([getattr(s, key) for s in self.steps], dtype=float)
            x = x[np.isfinite(x)]
            return float(np.mean(np.abs(x))) if len(x) else math.nan

        n_pts = sum(s.n_target for s in self.steps)
        covered = sum(s.points_pi_coverage * s.n_target for s in self.steps)
        inside = [s.loss_opt_inside for s in self.steps if s.loss_opt_inside is not None]
        return {"n_steps": len(self.steps),
                "points_loss_mean_abs_rel_error": mean_abs("points_loss_mean_abs_rel_error"),
                "points_pi_coverage": covered / n_pts if n_pts else math.nan,
                "loss_opt_mean_abs_error": mean_abs("loss_opt_error"),
                "params_opt_mean_abs_log_error": mean_abs("params_opt_log_error"),
                "loss_opt_inside": f"{sum(inside)}/{len(inside)}" if inside else None}


def _step(train: pd.DataFrame, target: pd.DataFrame, *, n_bootstrap: int, level: float,
          seed: int, fit_kw: dict, misspecification: bool) -> tuple[Any, dict]:
    """Fit on train and predict every target run; the fields the two modes share."""
    law = fit_approach3(train["params"], train["tokens"], train["loss"], **fit_kw)
    noise = estimate_noise(train, law, level=level)
    extra = (estimate_extrapolation(train, noise.sigma, seed=seed, **fit_kw)
             if misspecification else None)
    samples = bootstrap_law_samples(train, law, n_bootstrap, seed) if n_bootstrap else None
    rows: list[dict[str, Any]] = []  # one JSON row per forecast run
    for _, r in target.iterrows():
        p = predict_loss(law, r["params"], r["tokens"], sigma=noise.sigma, samples=samples,
                         level=level, dof=noise.dof, seed=seed, extrapolation=extra)
        rows.append({"run": str(r["run"]), "params": float(r["params"]),
                     "tokens": float(r["tokens"]), "observed": float(r["loss"]),
                     "predicted": p.loss, "pi": p.loss_pi,
                     "inside": bool(p.loss_pi[0] <= r["loss"] <= p.loss_pi[1])})
    rel = np.array([x["predicted"] / x["observed"] - 1 for x in rows])
    shared = dict(n_train=len(train), n_target=len(target),
                  points_loss_mean_abs_rel_error=float(np.mean(np.abs(rel))),
                  points_pi_coverage=float(np.mean([x["inside"] for x in rows])),
                  sigma=noise.sigma, noise_source=noise.source, predicted=rows,
                  tau=extra.tau if extra is not None else math.nan)
    return (law, noise, samples, extra), shared


def rollout(points: pd.DataFrame, *, n_bootstrap: int = 200, level: float = 0.8,
            seed: int = 0, starts: np.ndarray | None = None,
            misspecification: bool = True) -> Rollout:
    """Rolling-origin validation over budgets when there are at least 3 usable budgets,
    else over model sizes. `starts`: Approach 3 starts per fit (default Chinchilla's grid).
    misspecification: each step's PI includes the extrapolation error measured on its own
    training runs (False: noise and law spread only, the PI before that term existed)."""
    if not 0 < level < 1:
        raise UserError(f"--level: expected a level in (0, 1), got {level}")
    # Every fit of the rollout is padded to the full data's problem size: one compilation.
    fit_kw: dict[str, Any] = {"pad_to": len(points)}
    if starts is not None:
        fit_kw["starts"] = starts
    levels = usable_budgets(points)
    steps: list[RolloutStep] = []
    if len(levels) >= 3:
        budgets = points["budget"].to_numpy(float)
        for k in range(2, len(levels)):
            train = points[np.isin(budgets, levels[:k])]
            target = points[budgets == levels[k]]
            if len(train) < MIN_TRAIN_POINTS:
                continue
            (law, noise, samples, extra), shared = _step(
                train, target, n_bootstrap=n_bootstrap, level=level, seed=seed, fit_kw=fit_kw,
                misspecification=misspecification)
            c = float(levels[k])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                obs, _ = budget_minimum(c, *(target[col].to_numpy(float)
                                             for col in ("params", "tokens", "loss")))
            n_opt, d_opt = float(law.params_opt(c)), float(law.tokens_opt(c))
            p = predict_loss(law, n_opt, d_opt, sigma=noise.sigma, samples=samples,
                             level=level, dof=noise.dof, seed=seed, extrapolation=extra)
            steps.append(RolloutStep(
                train=[float(x) for x in levels[:k]], target=c, **shared,
                loss_opt_predicted=p.loss, loss_opt_observed=obs.loss_opt,
                loss_opt_error=p.loss / obs.loss_opt - 1, loss_opt_pi=p.loss_pi,
                loss_opt_inside=bool(p.loss_pi[0] <= obs.loss_opt <= p.loss_pi[1]),
                params_opt_predicted=n_opt, params_opt_observed=obs.params_opt,
                params_opt_log_error=math.log(n_opt / obs.params_opt),
                bracketed=obs.bracketed))
        mode = "budgets"
    else:
        n = points["params"].to_numpy(float)
        sizes = np.unique(n)
        for threshold in sizes[MIN_TRAIN_SIZES:]:
            train, target = points[n < threshold], points[n >= threshold]
            if len(train) < MIN_TRAIN_POINTS:
                continue
            _, shared = _step(train, target, n_bootstrap=n_bootstrap, level=level, seed=seed,
                              fit_kw=fit_kw, misspecification=misspecification)
            steps.append(RolloutStep(train=[float(n[n < threshold].max())],
                                     target=float(threshold), **shared))
        mode = "sizes"
    if not steps:
        raise UserError(f"rollout: expected enough runs for at least one origin (>= "
                        f"{MIN_TRAIN_POINTS} runs to fit before it), got {len(points)} runs")
    return Rollout(mode, level, n_bootstrap, steps)


__all__ = ["MIN_TRAIN_POINTS", "Rollout", "RolloutStep", "rollout"]
