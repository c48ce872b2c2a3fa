"""Approach 2: IsoFLOP profiles. Per budget, a parabola of loss in log N (and in log D);
its vertex is that budget's optimum; power laws N*(C) = k_params C^a, D*(C) = k_tokens C^b
through the optima by weighted least squares in log space.

A vertex is used only when the parabola opens upwards (curvature > 0); otherwise the raw
lowest-loss point stands in and a FitWarning says so. A vertex outside the sizes tried at
that budget is "not bracketed": it is an extrapolation, kept but flagged and warned about.
Each vertex's standard error in log N comes from the parabola's coefficient covariance
(delta method); the power-law fit weights each budget by 1 / (se^2 + floor^2), so a budget
whose minimum is poorly pinned down counts less (the floor keeps a 3-point parabola with
zero residual from taking all the weight).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from scaling.errors import UserError

SE_FLOOR_LOG = 0.05  # natural-log units: ~5% in N*


class FitWarning(UserWarning):
    """A fit is usable but questionable (unbracketed or concave IsoFLOP minimum)."""


@dataclass(frozen=True)
class IsoFlopMinimum:
    budget: float
    params_opt: float
    tokens_opt: float
    loss_opt: float
    bracketed: bool
    curvature_positive: bool
    log_params_se: float  # standard error of ln N* at this budget (NaN when undefined)
    n_points: int
    coeffs: tuple[float, float, float] | None = None  # (c2, c1, c0) of loss in log10 N

    def loss(self, n_params: Any) -> np.ndarray | None:
        """The budget's fitted parabola at N; None when it is not convex (nothing to draw)."""
        if self.coeffs is None or not self.curvature_positive:
            return None
        return np.polyval(self.coeffs, np.log10(np.asarray(n_params, dtype=np.float64)))

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["coeffs"] = None if self.coeffs is None else list(self.coeffs)
        return d


@dataclass(frozen=True)
class PowerLaw:
    """N*(C) = k_params C^a and D*(C) = k_tokens C^b; floats, or arrays with one entry per
    bootstrap sample (a wild sample's inf k gives inf, which percentiles drop)."""

    a: Any
    b: Any
    k_params: Any
    k_tokens: Any

    def params_opt(self, flops: Any) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            return self.k_params * np.power(np.asarray(flops, dtype=np.float64), self.a)

    def tokens_opt(self, flops: Any) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            return self.k_tokens * np.power(np.asarray(flops, dtype=np.float64), self.b)

    def law(self) -> PowerLaw:
        return PowerLaw(self.a, self.b, self.k_params, self.k_tokens)

    def column(self) -> PowerLaw:
        return PowerLaw(*(np.asarray(getattr(self, k), dtype=np.float64)[..., None]
                          for k in POWER_KEYS))


POWER_KEYS = ("a", "b", "k_params", "k_tokens")


@dataclass(frozen=True)
class PowerLawResult(PowerLaw):
    """A fitted power-law frontier (Approaches 1 and 2); Approach 2 keeps its minima."""

    n_points: int = 0
    approach: str = ""
    minima: tuple[IsoFlopMinimum, ...] = ()
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def params(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in POWER_KEYS}

    @property
    def n_unbracketed(self) -> int:
        return sum(not m.bracketed for m in self.minima)

    def to_dict(self) -> dict:
        d = {**self.params, "n_points": self.n_points}
        if self.minima:
            d.update(minima=[m.to_dict() for m in self.minima], n_unbracketed=self.n_unbracketed)
        d.update(self.extra)
        return d

    def checked(self) -> PowerLawResult:
        """Itself, or a UserError when the frontier does not grow with compute."""
        for name, value in self.params.items():
            ok = 0 < value < 1 if name in ("a", "b") else math.isfinite(value) and value > 0
            if not ok:
                raise UserError(f"{self.approach}: fitted {name} = {value:.3g} is out of its "
                                "domain: the optima do not grow with compute")
        return self


def weighted_power_law(flops: np.ndarray, values: np.ndarray,
                       weights: np.ndarray | None = None) -> tuple[float, float]:
    """(k, exponent) of values = k flops^exponent by weighted least squares in log space."""
    x, y = np.log(flops), np.log(values)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)
    X = np.stack([np.ones_like(x), x], axis=1)
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)
    # A wild resample (vertices far outside the grid) can push k past float range: inf then
    # marks that sample's k as unusable instead of aborting the whole bootstrap.
    with np.errstate(over="ignore"):
        return float(np.exp(coef[0])), float(coef[1])


def _parabola(x: np.ndarray, y: np.ndarray, w: np.ndarray):
    """Weighted quadratic fit y = c0 + c1 u + c2 u^2, u = x - mean(x); returns
    (vertex_x, vertex_y, curvature c2, se of vertex_x or NaN, (c2, c1, c0) in log10 units
    when x is a natural log)."""
    xm = x.mean()
    u = x - xm
    X = np.stack([np.ones_like(u), u, u * u], axis=1)
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)
    c0, c1, c2 = coef
    # x = ln 10 * t: the same parabola in t = log10, expanded about 0 for plotting.
    k = math.log(10.0)
    log10_coeffs = (float(c2 * k * k), float((c1 - 2 * c2 * xm) * k),
                    float(c0 - c1 * xm + c2 * xm * xm))
    if c2 <= 0:
        return math.nan, math.nan, float(c2), math.nan, log10_coeffs
    v = -c1 / (2 * c2)
    se = math.nan
    dof = len(x) - 3
    if dof > 0:
        resid = y - X @ coef
        sigma2 = float((w * resid**2).sum() / dof)
        try:
            cov = sigma2 * np.linalg.inv((X * w[:, None]).T @ X)
            grad = np.array([0.0, -1 / (2 * c2), c1 / (2 * c2 * c2)])
            se = float(math.sqrt(max(grad @ cov @ grad, 0.0)))
        except np.linalg.LinAlgError:
            pass
    return float(v + xm), float(c0 + c1 * v + c2 * v * v), float(c2), se, log10_coeffs


def budget_minimum(budget: float, params: np.ndarray, tokens: np.ndarray, loss: np.ndarray,
                   weight: np.ndarray | None = None) -> tuple[IsoFlopMinimum, list[str]]:
    """The IsoFLOP minimum of one budget's runs (>= 3 distinct sizes) and any warnings."""
    w = np.ones(len(loss)) if weight is None else np.asarray(weight, dtype=np.float64)
    log_n, log_d = np.log(params), np.log(tokens)
    vn, lo, curv, se, coeffs = _parabola(log_n, loss, w)
    vd, _, curv_d, _, _ = _parabola(log_d, loss, w)
    i_min = int(np.argmin(loss))
    positive = curv > 0 and curv_d > 0
    notes = []
    if not positive:
        notes.append(f"approach2: budget {budget:.3g}: parabola is not convex; using the "
                     "lowest-loss run instead of the vertex")
        vn, vd, lo, se = log_n[i_min], log_d[i_min], loss[i_min], math.nan
    bracketed = bool(log_n.min() < vn < log_n.max()
                     and log_n[i_min] not in (log_n.min(), log_n.max()))
    if not bracketed:
        notes.append(f"approach2: budget {budget:.3g}: minimum not bracketed by the sizes "
                     "tried (extend the grid)")
    return IsoFlopMinimum(budget=float(budget), params_opt=float(math.exp(vn)),
                          tokens_opt=float(math.exp(vd)), loss_opt=float(lo),
                          bracketed=bracketed, curvature_positive=bool(positive),
                          log_params_se=se, n_points=len(loss), coeffs=coeffs), notes


def isoflop_minima(points: pd.DataFrame, *, warn: bool = True) -> list[IsoFlopMinimum]:
    """One minimum per budget with at least 3 distinct sizes (budgets with fewer are skipped
    with a FitWarning). Uses an optional `weight` column for the parabolas."""
    pts = points[np.isfinite(points["budget"].to_numpy(dtype=float))]
    out = []
    for budget, grp in pts.groupby("budget", sort=True):
        notes = []
        if grp["params"].nunique() < 3:
            notes.append(f"approach2: budget {budget:.3g} has fewer than 3 model sizes; "
                         "skipped")
        else:
            m, notes = budget_minimum(
                float(budget), grp["params"].to_numpy(float), grp["tokens"].to_numpy(float),
                grp["loss"].to_numpy(float),
                grp["weight"].to_numpy(float) if "weight" in grp else None)
            out.append(m)
        if warn:
            for note in notes:
                warnings.warn(note, FitWarning, stacklevel=3)
    return out


def fit_approach2(points: pd.DataFrame, *, warn: bool = True) -> PowerLawResult:
    """Approach 2 on a points DataFrame (params, tokens, loss, budget)."""
    for col in ("params", "tokens", "loss", "budget"):
        if col not in points:
            raise UserError(f"approach2: points need a {col!r} column")
    minima = isoflop_minima(points, warn=warn)
    if len(minima) < 2:
        raise UserError(f"approach2: expected at least 2 budgets with >= 3 model sizes each, "
                        f"got {len(minima)}")
    return power_laws_from_minima(minima).checked()


def power_laws_from_minima(minima: list[IsoFlopMinimum]) -> PowerLawResult:
    budgets = np.array([m.budget for m in minima])
    se = np.array([m.log_params_se for m in minima])
    se = np.where(np.isfinite(se), se, np.nanmax(se) if np.isfinite(se).any() else 0.0)
    weights = 1.0 / (se**2 + SE_FLOOR_LOG**2)
    k_params, a = weighted_power_law(budgets, np.array([m.params_opt for m in minima]), weights)
    k_tokens, b = weighted_power_law(budgets, np.array([m.tokens_opt for m in minima]), weights)
    return PowerLawResult(a=a, b=b, k_params=k_params, k_tokens=k_tokens,
                          n_points=len(minima), approach="approach2", minima=tuple(minima))
