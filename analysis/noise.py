"""Run-to-run noise: replicates, the residual scatter about a law, outliers.

Noise is relative (multiplicative), as `analysis.simulate` draws it: log L = log law(N, D) + s z,
z ~ N(0, 1), so every spread here is a standard deviation of log loss (0.01 = about 1%).

Replicates are runs at the same (N, D): seeds of one grid point in a runs directory, or repeated
(params, tokens) rows of a CSV. Their pooled within-group standard deviation measures the noise
without any law: s^2 = sum_g sum_i (log L_gi - mean_g)^2 / sum_g (n_g - 1), with the chi-square
interval of a variance on that many degrees of freedom. Groups of at least `PER_SIZE_MIN`
replicates also get their own estimate. Without replicates the only measure is the residual
scatter about the fitted law, sqrt(sum r^2 / (P - k)) with k fitted parameters; it contains
lack of fit as well as noise, and `NoiseEstimate.source` says which one is in use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from scaling.errors import UserError

PER_SIZE_MIN = 3  # replicates a group needs for a noise estimate of its own
DEFAULT_OUTLIER_SIGMA = 3.0
_SAME_POINT_DEX = 1e-6  # (N, D) equal to this many decades are the same grid point


def replicate_groups(points: pd.DataFrame) -> np.ndarray:
    """A group id per row: rows with the same (params, tokens), to 1e-6 decades, share one."""
    keys = np.round(np.stack([np.log10(points["params"].to_numpy(float)),
                              np.log10(points["tokens"].to_numpy(float))], axis=1)
                    / _SAME_POINT_DEX).astype(np.int64)
    _, group = np.unique(keys, axis=0, return_inverse=True)
    return group.ravel()


def sigma_interval(sigma: float, dof: int, level: float) -> list[float]:
    """Interval for a standard deviation estimated on `dof` degrees of freedom (chi-square
    interval of the variance, exact under normal errors)."""
    from scipy.stats import chi2

    if dof < 1 or not math.isfinite(sigma):
        return [math.nan, math.nan]
    q = (1 - level) / 2
    return [sigma * math.sqrt(dof / chi2.ppf(1 - q, dof)),
            sigma * math.sqrt(dof / chi2.ppf(q, dof))]


@dataclass(frozen=True)
class SizeNoise:
    """Noise measured at one (N, D) grid point from its replicates."""

    params: float
    tokens: float
    n_replicates: int
    sigma: float
    sigma_ci: list[float]

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class FittedRange:
    """The [min, max] of ln N, ln D and ln C (= ln 6ND) over the fitted points."""

    log_params: list[float]
    log_tokens: list[float]
    log_flops: list[float]

    @classmethod
    def of(cls, n_params: Any, n_tokens: Any) -> FittedRange:
        ln_n = np.log(np.asarray(n_params, np.float64))
        ln_d = np.log(np.asarray(n_tokens, np.float64))
        ln_c = math.log(6.0) + ln_n + ln_d
        return cls(*([float(x.min()), float(x.max())] for x in (ln_n, ln_d, ln_c)))

    def distance(self, n_params: Any, n_tokens: Any) -> np.ndarray:
        """Natural-log distance outside the fitted range: the largest, over ln N, ln D and
        ln C, of how far (N, D) lies beyond [min, max]; 0 inside all three."""
        ln_n = np.log(np.asarray(n_params, np.float64))
        ln_d = np.log(np.asarray(n_tokens, np.float64))
        out = np.zeros(np.broadcast(ln_n, ln_d).shape)
        for x, (lo, hi) in ((ln_n, self.log_params), (ln_d, self.log_tokens),
                            (math.log(6.0) + ln_n + ln_d, self.log_flops)):
            out = np.maximum(out, np.maximum(lo - x, x - hi))
        return out

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ExtrapolationError:
    """Misspecification of the law beyond its fitted range (`analysis.extrapolation`): a
    prediction at log-distance delta outside `fitted` gets an extra N(0, (tau delta)^2) of log
    loss in its prediction interval. tau = 0: exact law, or not measured (see `note`)."""

    tau: float
    fitted: FittedRange
    n_origins: int  # inner rolling origins it was measured on
    n_points: int  # later points of those origins (outside their fitted range)
    note: str = ""

    def sigma_at(self, n_params: Any, n_tokens: Any) -> np.ndarray:
        return self.tau * self.fitted.distance(n_params, n_tokens)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["fitted"] = self.fitted.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ExtrapolationError:
        try:
            fitted = FittedRange(**{k: [float(v) for v in d["fitted"][k]]
                                    for k in ("log_params", "log_tokens", "log_flops")})
            tau = float(d["tau"])
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"noise.extrapolation: expected tau and fitted ranges, got {d!r}"
                            ) from e
        if not (math.isfinite(tau) and tau >= 0):
            raise UserError(f"noise.extrapolation.tau: expected a number >= 0, got {tau}")
        return cls(tau, fitted, int(d.get("n_origins", 0)), int(d.get("n_points", 0)),
                   str(d.get("note", "")))


@dataclass(frozen=True)
class NoiseEstimate:
    """The noise a prediction interval uses, and how it was measured.

    source: "replicates" (pooled within-group spread) or "residuals" (scatter about the law,
    used when no (N, D) point was run twice). `sigma` is the one in use; `residual_sigma` is
    always reported so a lack of fit (residual >> replicate noise) is visible.
    """

    source: str
    sigma: float
    sigma_ci: list[float]
    dof: int
    level: float
    n_groups: int  # grid points with >= 2 replicates
    n_replicated_runs: int
    residual_sigma: float
    residual_sigma_ci: list[float]
    residual_dof: int
    per_size: list[SizeNoise] = field(default_factory=list)
    note: str = ""
    # Beyond the fitted range; None in fits written before it was measured (noise only).
    extrapolation: ExtrapolationError | None = None

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("per_size", "extrapolation")}
        d["per_size"] = [s.to_dict() for s in self.per_size]
        if self.extrapolation is not None:
            d["extrapolation"] = self.extrapolation.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> NoiseEstimate:
        kw = {k: d[k] for k in ("source", "sigma", "sigma_ci", "dof", "level", "n_groups",
                                "n_replicated_runs", "residual_sigma", "residual_sigma_ci",
                                "residual_dof") if k in d}
        if "sigma" not in kw or "source" not in kw:
            raise UserError("noise: expected 'source' and 'sigma' in the fit's noise block")
        kw.setdefault("sigma_ci", [math.nan, math.nan])
        for k, v in (("dof", 0), ("level", 0.8), ("n_groups", 0), ("n_replicated_runs", 0),
                     ("residual_sigma", math.nan), ("residual_sigma_ci", [math.nan, math.nan]),
                     ("residual_dof", 0)):
            kw.setdefault(k, v)
        per = [SizeNoise(**s) for s in d.get("per_size", [])]
        extra = d.get("extrapolation")
        return cls(**kw, per_size=per, note=d.get("note", ""),
                   extrapolation=None if extra is None else ExtrapolationError.from_dict(extra))


def replicate_noise(points: pd.DataFrame, level: float = 0.8
                    ) -> tuple[float, int, int, int, list[SizeNoise]]:
    """(pooled sigma, dof, groups with >= 2 runs, runs in them, per-size estimates)."""
    group = replicate_groups(points)
    log_l = np.log(points["loss"].to_numpy(float))
    n, d = points["params"].to_numpy(float), points["tokens"].to_numpy(float)
    ss, dof, n_groups, n_runs, per = 0.0, 0, 0, 0, []
    for g in np.unique(group):
        idx = np.nonzero(group == g)[0]
        if len(idx) < 2:
            continue
        dev = log_l[idx] - log_l[idx].mean()
        ss += float(dev @ dev)
        dof += len(idx) - 1
        n_groups += 1
        n_runs += len(idx)
        if len(idx) >= PER_SIZE_MIN:
            s = math.sqrt(float(dev @ dev) / (len(idx) - 1))
            per.append(SizeNoise(float(n[idx[0]]), float(d[idx[0]]), len(idx), s,
                                 sigma_interval(s, len(idx) - 1, level)))
    sigma = math.sqrt(ss / dof) if dof else math.nan
    return sigma, dof, n_groups, n_runs, per


def log_residuals(law: Any, points: pd.DataFrame) -> np.ndarray:
    """log law(N, D) - log L per row (positive: the law over-predicts the run)."""
    pred = law.predict(points["params"].to_numpy(float), points["tokens"].to_numpy(float))
    return np.log(pred) - np.log(points["loss"].to_numpy(float))


def estimate_noise(points: pd.DataFrame, law: Any | None = None, *, level: float = 0.8,
                   n_fitted: int = 5) -> NoiseEstimate:
    """Noise from replicates when any (N, D) was run twice, else the residual scatter about
    `law` (an object with predict(N, D), e.g. an Approach3Result with `n_fitted` parameters)."""
    sigma, dof, n_groups, n_runs, per = replicate_noise(points, level)
    res_sigma, res_dof = math.nan, 0
    if law is not None:
        r = log_residuals(law, points)
        res_dof = len(r) - n_fitted
        if res_dof >= 1:
            res_sigma = math.sqrt(float(r @ r) / res_dof)
    res_ci = sigma_interval(res_sigma, res_dof, level)
    if dof:
        return NoiseEstimate("replicates", sigma, sigma_interval(sigma, dof, level), dof, level,
                             n_groups, n_runs, res_sigma, res_ci, res_dof, per,
                             f"pooled over {n_groups} replicated grid points ({n_runs} runs)")
    if not math.isfinite(res_sigma):
        raise UserError("noise: no replicates and no law with enough points to measure the "
                        "residual scatter")
    return NoiseEstimate("residuals", res_sigma, res_ci, res_dof, level, 0, 0, res_sigma, res_ci,
                         res_dof, [], "no (N, D) point was run twice: the noise is the residual "
                         "scatter about the law (it includes any lack of fit)")


@dataclass(frozen=True)
class Outlier:
    run: str
    params: float
    tokens: float
    loss: float
    predicted: float
    z: float  # log residual in units of the noise sigma (positive: loss above the law)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def flag_outliers(points: pd.DataFrame, law: Any, sigma: float,
                  k: float = DEFAULT_OUTLIER_SIGMA) -> list[Outlier]:
    """Runs whose loss lies more than k sigma (of log loss) from the law, worst first."""
    if not (sigma > 0 and math.isfinite(sigma)):
        raise UserError(f"noise: expected a positive sigma to flag outliers, got {sigma}")
    if not k > 0:
        raise UserError(f"outlier threshold: expected k > 0 sigma, got {k}")
    z = -log_residuals(law, points) / sigma
    pred = law.predict(points["params"].to_numpy(float), points["tokens"].to_numpy(float))
    out = [Outlier(str(points["run"].iloc[i]), float(points["params"].iloc[i]),
                   float(points["tokens"].iloc[i]), float(points["loss"].iloc[i]),
                   float(pred[i]), float(z[i])) for i in np.nonzero(np.abs(z) > k)[0]]
    return sorted(out, key=lambda o: -abs(o.z))


def exclude_runs(points: pd.DataFrame, names: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """The points without the named runs; a name that matches no run is a UserError."""
    names = list(names)
    runs = set(points["run"].astype(str))
    missing = [n for n in names if n not in runs]
    if missing:
        raise UserError(f"--exclude: no run named {missing[0]!r} among the {len(runs)} points")
    return points[~points["run"].astype(str).isin(names)].reset_index(drop=True)


__all__ = ["ExtrapolationError", "FittedRange", "NoiseEstimate", "Outlier", "SizeNoise", "estimate_noise", "exclude_runs",
           "flag_outliers", "log_residuals", "replicate_groups", "replicate_noise",
           "sigma_interval"]
