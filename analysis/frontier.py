"""The compute frontier: L*(C) = E + A C^-gamma through the IsoFLOP minima.

Where Approach 3 models every run, this models only the best loss each budget reached (the
minima Approach 2 takes), so it forecasts the loss of a compute-optimal run without a model
of N and D. Fitted by least squares on log loss. E is the hard part: with a few budgets
E and gamma trade off along a flat valley, so `fix_E` pins it (e.g. to a value from a larger
study) and `e_sensitivity` tabulates how the forecast at a target budget moves over a range
of E. Internally C enters as log C centred on the data, so A stays in float range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from scaling.errors import UserError

MIN_BUDGETS = 3  # three parameters; two budgets fix a line, not a curve


@dataclass(frozen=True)
class FrontierLaw:
    E: float
    A: float
    gamma: float
    fixed_E: bool
    n_points: int
    rss: float  # residual sum of squares of log loss at the optimum

    def predict(self, flops: Any) -> np.ndarray:
        c = np.asarray(flops, dtype=np.float64)
        return self.E + self.A * c**-self.gamma

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> FrontierLaw:
        return cls(**{k: d[k] for k in ("E", "A", "gamma", "fixed_E", "n_points", "rss")})


def _check(flops: Any, loss: Any) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(flops, dtype=np.float64).ravel()
    y = np.asarray(loss, dtype=np.float64).ravel()
    if len(c) != len(y):
        raise UserError("frontier: expected as many losses as budgets")
    if not (np.isfinite(c).all() and (c > 0).all() and np.isfinite(y).all() and (y > 0).all()):
        raise UserError("frontier: expected positive finite budgets and losses")
    if len(np.unique(c)) < MIN_BUDGETS:
        raise UserError(f"frontier: expected at least {MIN_BUDGETS} budgets, got "
                        f"{len(np.unique(c))}")
    return c, y


def check_fixed_E(fix_E: float, loss: Any) -> float:
    """E must lie in [0, smallest observed loss): a law cannot go below its floor."""
    lowest = float(np.min(loss))
    if not (math.isfinite(fix_E) and 0 <= fix_E < lowest):
        raise UserError(f"--fix-E: expected a value in [0, {lowest:.6g}) (below the smallest "
                        f"observed loss), got {fix_E}")
    return float(fix_E)


def _fit_given_E(E: float, x: np.ndarray, log_y: np.ndarray) -> tuple[float, float, float]:
    """(k, gamma, rss) of log(E + exp(k - gamma x)) ~ log y, x = log C - centre."""
    from scipy.optimize import least_squares

    y = np.exp(log_y)
    # Start: the straight line of log(L - E) on x, exact when the data follow the law.
    slope, k0 = np.polyfit(x, np.log(np.maximum(y - E, 1e-12 * y)), 1)

    def resid(p):
        return np.log(E + np.exp(p[0] - p[1] * x)) - log_y

    res = least_squares(resid, [k0, -slope], method="lm", xtol=1e-14, ftol=1e-14)
    return float(res.x[0]), float(res.x[1]), float(2 * res.cost)


def fit_frontier(flops: Any, loss: Any, *, fix_E: float | None = None,
                 n_grid: int = 200) -> FrontierLaw:
    """L*(C) = E + A C^-gamma by least squares on log loss; E free in [0, min loss) (profiled
    over a grid, then refined) unless `fix_E` is given."""
    from scipy.optimize import minimize_scalar

    c, y = _check(flops, loss)
    centre = float(np.mean(np.log(c)))
    x, log_y = np.log(c) - centre, np.log(y)
    if fix_E is not None:
        E = check_fixed_E(fix_E, y)
    else:
        top = float(y.min())
        grid = top * np.linspace(0.0, 1.0, n_grid + 1)[:-1]
        rss = np.array([_fit_given_E(e, x, log_y)[2] for e in grid])
        i = int(np.argmin(rss))
        lo, hi = grid[max(i - 1, 0)], grid[i + 1] if i + 1 < len(grid) else top * (1 - 1e-9)
        res = minimize_scalar(lambda e: _fit_given_E(e, x, log_y)[2], bounds=(lo, hi),
                              method="bounded", options=dict(xatol=1e-10 * top))
        E = float(res.x) if res.fun <= rss[i] else float(grid[i])
    k, gamma, rss_best = _fit_given_E(E, x, log_y)
    return FrontierLaw(E=E, A=math.exp(k + gamma * centre), gamma=gamma,
                       fixed_E=fix_E is not None, n_points=len(c), rss=rss_best)


def e_sensitivity(flops: Any, loss: Any, target_flops: float,
                  E_values: Any | None = None) -> list[dict]:
    """How the forecast at `target_flops` moves with E: one row per E (default: 9 values from
    0 to 95% of the smallest loss) with the fitted gamma, A, rss and the forecast."""
    c, y = _check(flops, loss)
    if E_values is None:
        E_values = float(y.min()) * np.linspace(0.0, 0.95, 9)
    rows = []
    for e in np.atleast_1d(np.asarray(E_values, dtype=np.float64)):
        law = fit_frontier(c, y, fix_E=float(e))
        rows.append({"E": float(e), "gamma": law.gamma, "A": law.A, "rss": law.rss,
                     "target_flops": float(target_flops),
                     "loss_at_target": float(law.predict(target_flops))})
    return rows


def frontier_from_minima(minima: list[Any], *, fix_E: float | None = None) -> FrontierLaw:
    """The frontier through Approach 2's IsoFLOP minima (IsoFlopMinimum records or dicts)."""
    get = (lambda m, k: m[k]) if minima and isinstance(minima[0], dict) else getattr
    return fit_frontier([get(m, "budget") for m in minima], [get(m, "loss_opt") for m in minima],
                        fix_E=fix_E)


__all__ = ["FrontierLaw", "check_fixed_E", "e_sensitivity", "fit_frontier",
           "frontier_from_minima"]
