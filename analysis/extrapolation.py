"""The error of extrapolating a law beyond its fitted range, measured on the fit's own data.

Run-to-run noise and the bootstrap spread of the law describe a prediction inside the fitted
range. Beyond it the law's functional form is an assumption, and on real ladders it misses by
more than both (Marin's three ladders: about half the next budget's runs inside an 80%
interval built from those two alone). This module measures that extra error the way it is
later suffered: by an inner rolling-origin validation on the fitted points themselves.

Model (log loss, homoscedastic in the noise as `analysis.noise`):

    log L_obs - log law(N, D) = sigma t + (law spread) + tau delta(N, D) t'

delta is the log-distance of (N, D) outside the fitted range (`FittedRange.distance`: the
largest distance, in natural log, outside the [min, max] of ln N, ln D and ln C over the
fitted points; 0 inside). sigma is the measured noise, v_law the variance of log law over
bootstrap fits, and tau the misspecification scale: extra log-loss error per unit of
log-distance, zero for an exact law.

tau is estimated from inner origins: the fitted points are split as `analysis.rollout` splits
them (budgets 1..j against the later budgets, else smaller sizes against larger), each inner
training set is fitted from a sub-grid of Chinchilla's starts (`inner_starts`; like the real
fit, so no information from the later points leaks in through the starts) and bootstrapped, and every later point gives a
log residual r_i with its own sigma^2 + v_law,i and delta_i. Per origin, tau_j^2 maximises
the Gaussian likelihood r_i ~ N(0, sigma^2 + v_law,i + tau_j^2 delta_i^2) over tau_j^2 >= 0,
so it is the spread the noise and the law's uncertainty do NOT explain; see
`estimate_extrapolation` for how the origins are pooled.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from analysis.approach3 import N_PARAMS, chinchilla_grid, fit_approach3, refit_many
from analysis.bootstrap import resample_indices
from analysis.noise import ExtrapolationError, FittedRange

MIN_TRAIN_POINTS = 2 * N_PARAMS  # as analysis.rollout: fewer and the fit is noise
MIN_TRAIN_SIZES = 3
INNER_BOOTSTRAP = 40  # resamples per inner origin for v_law (a variance, not a quantile)
MAX_ORIGINS = 4  # the latest inner origins (most data, nearest the real extrapolation)
INNER_POLISH = 2  # basins polished per inner fit (the real fit polishes 4)


def inner_starts() -> np.ndarray:
    """Chinchilla's grid with a, b in {0, 10, 20} (1,125 of its 4,500 starts, every e, alpha,
    beta kept): the inner fits are several per `scaling fit`, and on the ladders tried their
    optima equal the full grid's; still no start comes from the later points."""
    grid = chinchilla_grid()
    keep = np.isin(grid[:, 0], (0.0, 10.0, 20.0)) & np.isin(grid[:, 1], (0.0, 10.0, 20.0))
    return grid[keep]


def usable_budgets(points: pd.DataFrame) -> np.ndarray:
    """Budgets with at least 3 distinct sizes (an IsoFLOP minimum can be taken), ascending."""
    if "budget" not in points:
        return np.array([])
    b = points["budget"].to_numpy(float)
    levels = np.unique(b[np.isfinite(b)])
    return np.array([c for c in levels if points.loc[b == c, "params"].nunique() >= 3])


def inner_splits(points: pd.DataFrame) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train mask, target mask) per inner origin, oldest first, at most MAX_ORIGINS (the
    latest): over budgets when 3+ are usable, else over model sizes."""
    levels = usable_budgets(points)
    out = []
    if len(levels) >= 3:
        b = points["budget"].to_numpy(float)
        for k in range(2, len(levels)):
            train = np.isin(b, levels[:k])
            out.append((train, np.isin(b, levels[k:])))
    else:
        n = points["params"].to_numpy(float)
        for threshold in np.unique(n)[MIN_TRAIN_SIZES:]:
            out.append((n < threshold, n >= threshold))
    out = [(tr, tg) for tr, tg in out if tr.sum() >= MIN_TRAIN_POINTS and tg.any()]
    return out[-MAX_ORIGINS:]


def tau_mle(residual: np.ndarray, known_var: np.ndarray, delta: np.ndarray) -> float:
    """tau >= 0 maximising sum log N(r_i; 0, known_var_i + tau^2 delta_i^2)."""
    from scipy.optimize import minimize_scalar

    r, v, d = (np.asarray(x, np.float64) for x in (residual, known_var, delta))
    keep = (d > 0) & np.isfinite(r) & np.isfinite(v)
    r, v, d = r[keep], np.maximum(v[keep], 1e-300), d[keep]
    if not len(r):
        return 0.0

    def nll(log_t: float) -> float:
        s = v + math.exp(log_t) * d**2
        return float(np.sum(np.log(s) + r**2 / s))

    # Work in log tau^2: the likelihood is flat for tau^2 -> 0, so the boundary is a value
    # of exp(log_t) far below every v_i / delta_i^2.
    lo = math.log(float(np.min(v / d**2)) * 1e-6)
    hi = math.log(float(np.max(r**2 / d**2)) * 10 + 1e-300)
    if hi <= lo:
        return 0.0
    res = minimize_scalar(nll, bounds=(lo, hi), method="bounded",
                          options=dict(xatol=1e-6))
    t = math.exp(res.x)
    if nll(lo) <= res.fun:  # the optimum is at the boundary: no excess error
        return 0.0
    return math.sqrt(t)


def inner_residuals(points: pd.DataFrame, sigma: float, *, n_bootstrap: int = INNER_BOOTSTRAP,
                    seed: int = 0, starts: np.ndarray | None = None, pad_to: int = 0
                    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per inner origin, (log residual, sigma^2 + v_law, delta) of each of its later points."""
    fit_kw: dict[str, Any] = {"starts": inner_starts() if starts is None else starts,
                              "n_polish": INNER_POLISH}
    pad = max(len(points), pad_to)  # every inner fit runs the full data's compiled program
    out = []
    for train_mask, target_mask in inner_splits(points):
        train, target = points[train_mask], points[target_mask]
        law = fit_approach3(train["params"], train["tokens"], train["loss"], pad_to=pad,
                            **fit_kw)
        n_t, d_t = (target[c].to_numpy(float) for c in ("params", "tokens"))
        v_law = np.zeros(len(target))
        if n_bootstrap >= 2:
            idx = resample_indices(train.reset_index(drop=True), n_bootstrap, seed)
            weights = np.stack([np.bincount(r, minlength=len(train)) for r in idx]).astype(float)
            theta, _ = refit_many(train["params"], train["tokens"],
                                  np.log(train["loss"].to_numpy(float))[None], weights,
                                  law.theta(), pad_to=pad)
            a, b, e, alpha, beta = (theta[:, j, None] for j in range(5))
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                log_SxT = np.log(np.exp(e) + np.exp(a) / n_t**alpha + np.exp(b) / d_t**beta)
            ok = np.all(np.isfinite(log_SxT), axis=1)
            if ok.sum() >= 2:
                v_law = np.var(log_SxT[ok], axis=0, ddof=1)
        fitted = FittedRange.of(train["params"], train["tokens"])
        out.append((np.log(law.predict(n_t, d_t)) - np.log(target["loss"].to_numpy(float)),
                    sigma**2 + v_law, fitted.distance(n_t, d_t)))
    return out


def estimate_extrapolation(points: pd.DataFrame, sigma: float, *,
                           n_bootstrap: int = INNER_BOOTSTRAP, seed: int = 0,
                           starts: np.ndarray | None = None, pad_to: int = 0
                           ) -> ExtrapolationError:
    """The misspecification scale tau of a fit to `points` (noise `sigma`, log loss) and the
    fitted range it is measured from.

    An origin's later points share that origin's fit, and their residuals move together (on
    Marin's ladders they are mostly one offset growing with distance), so the independent
    units are the origins: tau_j is the maximum-likelihood excess of origin j alone, and the
    PI draws the term as Student-t on n_origins degrees of freedom (a scale measured on one or
    two origins is known loosely, and the interval widens for it). tau is the LARGEST tau_j,
    not their mean: on Marin's ladders tau_j grows from origin to origin (the law's miss per
    unit of distance grows with scale), so the mean of the earlier ones understates the next
    (measured: 60-67% of the next budget's runs inside the 80% PI with the mean, 63-76% with
    the largest; BENCHMARKS.md).
    Too few points for an inner origin: tau = 0, and the note says it was not measured."""
    fitted = FittedRange.of(points["params"], points["tokens"])
    origins = [o for o in inner_residuals(points, sigma, n_bootstrap=n_bootstrap, seed=seed,
                                          starts=starts, pad_to=pad_to) if np.any(o[2] > 0)]
    if not origins:
        return ExtrapolationError(0.0, fitted, 0, 0, "not measured: too few points for an "
                                  "inner rolling origin (the PI beyond the fitted range is "
                                  "noise and law spread only)")
    tau_j = [tau_mle(r, v, d) for r, v, d in origins]
    tau = max(tau_j)
    r_all = np.concatenate([r[d > 0] for r, _, d in origins])
    rms = float(np.sqrt(np.mean(r_all**2)))
    return ExtrapolationError(tau, fitted, len(origins), len(r_all),
                              f"inner rolling origin: {len(origins)} origins, {len(r_all)} "
                              f"later points, rms log error {rms:.3g}")


__all__ = ["INNER_BOOTSTRAP", "estimate_extrapolation", "inner_residuals", "inner_splits",
           "tau_mle", "usable_budgets"]
