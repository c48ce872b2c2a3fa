"""Approach 1: the envelope of training curves. At each FLOP level the run with the lowest
loss at that level gives (N*(C), D*(C)); power laws through them by least squares in log
space.

Each run's loss is interpolated linearly in log FLOPs; a run takes part at a level only if
its logged curve spans it (runs are never extrapolated). A level whose winner is the
smallest or the largest model taking part there is dropped: the envelope is then cut by
the grid's edge (the true optimum may lie outside the sizes available at that level).

With only final points (a CSV, no curves), `fit_approach1_points` takes at each budget the
lowest-loss run: the envelope restricted to the final points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.approach2 import PowerLawResult, weighted_power_law
from scaling.errors import UserError

N_LEVELS = 200  # Hoffmann et al. used 1,500; 200 log-spaced levels resolve a 16-size grid


@dataclass(frozen=True)
class EnvelopeMatrix:
    """Each run's loss (and log tokens) interpolated at common log-FLOP levels; inf/NaN where
    the run's curve does not span the level."""

    runs: list
    sizes: np.ndarray  # (R,)
    log_levels: np.ndarray  # (C,)
    loss_RxC: np.ndarray
    log_tokens_RxC: np.ndarray

    def winners(self, use_R: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(level index, winning run index) for usable levels among runs `use_R` (bool)."""
        loss = self.loss_RxC if use_R is None else np.where(use_R[:, None], self.loss_RxC,
                                                            np.inf)
        present = np.isfinite(loss)
        win = np.argmin(loss, axis=0)
        big = np.where(present, self.sizes[:, None], -np.inf).max(axis=0)
        small = np.where(present, self.sizes[:, None], np.inf).min(axis=0)
        size_win = self.sizes[win]
        ok = (present.sum(axis=0) >= 3) & (size_win > small) & (size_win < big)
        levels = np.nonzero(ok)[0]
        return levels, win[levels]


def envelope_matrix(curves: pd.DataFrame, n_levels: int = N_LEVELS) -> EnvelopeMatrix:
    for col in ("run", "params", "flops", "loss"):
        if col not in curves:
            raise UserError(f"approach1: curves need a {col!r} column")
    runs = []
    for run, c in curves.groupby("run", sort=False):
        c = c[(c["flops"] > 0) & np.isfinite(c["loss"])].sort_values("flops")
        if len(c) < 2:
            continue
        log_c = np.log(c["flops"].to_numpy(float))
        tokens = (c["tokens"].to_numpy(float) if "tokens" in c
                  else c["flops"].to_numpy(float) / (6 * c["params"].to_numpy(float)))
        runs.append((run, float(c["params"].iloc[0]), log_c, c["loss"].to_numpy(float),
                     np.log(tokens)))
    if len(runs) < 3:
        raise UserError(f"approach1: expected curves from at least 3 runs, got {len(runs)}")
    lo = min(r[2][-1] for r in runs)  # where the first run ends: below, only early steps compete
    hi = max(r[2][-1] for r in runs)
    levels = np.linspace(lo, hi, n_levels)
    loss_RxC = np.full((len(runs), n_levels), np.inf)
    log_tokens_RxC = np.full((len(runs), n_levels), np.nan)
    for i, (_, _, log_c, loss, log_tok) in enumerate(runs):
        inside = (levels >= log_c[0]) & (levels <= log_c[-1])
        loss_RxC[i, inside] = np.interp(levels[inside], log_c, loss)
        log_tokens_RxC[i, inside] = np.interp(levels[inside], log_c, log_tok)
    return EnvelopeMatrix([r[0] for r in runs], np.array([r[1] for r in runs]), levels,
                          loss_RxC, log_tokens_RxC)


def power_laws_from_envelope(em: EnvelopeMatrix, use_R: np.ndarray | None = None):
    """(a, b, k_params, k_tokens, n_levels) or None when fewer than 2 distinct optima."""
    k, i = em.winners(use_R)
    if len(np.unique(i)) < 2:
        return None
    c = np.exp(em.log_levels[k])
    k_params, a = weighted_power_law(c, em.sizes[i])
    k_tokens, b = weighted_power_law(c, np.exp(em.log_tokens_RxC[i, k]))
    return a, b, k_params, k_tokens, len(k)


def fit_approach1(curves: pd.DataFrame, n_levels: int = N_LEVELS) -> PowerLawResult:
    """Approach 1 from training curves (analysis.load.load_curves)."""
    em = envelope_matrix(curves, n_levels)
    fitted = power_laws_from_envelope(em)
    if fitted is None:
        raise UserError("approach1: the envelope has fewer than 2 distinct optimal sizes "
                        "(need more model sizes or longer curves)")
    a, b, k_params, k_tokens, n_used = fitted
    return PowerLawResult(a=a, b=b, k_params=k_params, k_tokens=k_tokens, n_points=n_used,
                          approach="approach1",
                          extra={"from": "curves", "n_runs": len(em.runs)}).checked()


def fit_approach1_points(points: pd.DataFrame) -> PowerLawResult:
    """Approach 1 restricted to final points: per budget, the lowest-loss run."""
    pts = points[np.isfinite(points["budget"].to_numpy(dtype=float))]
    best = pts.loc[pts.groupby("budget")["loss"].idxmin()].sort_values("budget")
    if len(best) < 2:
        raise UserError(f"approach1: expected at least 2 budgets, got {len(best)}")
    c = best["budget"].to_numpy(float)
    k_params, a = weighted_power_law(c, best["params"].to_numpy(float))
    k_tokens, b = weighted_power_law(c, best["tokens"].to_numpy(float))
    return PowerLawResult(a=a, b=b, k_params=k_params, k_tokens=k_tokens, n_points=len(best),
                          approach="approach1", extra={"from": "final_points"}).checked()
