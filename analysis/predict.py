"""The loss a fitted law predicts for one run, with a confidence and a prediction interval.

Confidence interval (CI): the spread of the law itself, the percentile interval of
law_s(N, D) over the bootstrap fits s. It says where the MEAN loss of runs at (N, D) lies.
Prediction interval (PI): where ONE new run's loss lies: the law's spread plus run-to-run
noise, log L = log law_s(N, D) + sigma t, with t Student-t on the degrees of freedom sigma was
measured on (a few replicates measure sigma loosely, and the interval widens for it). Drawn
by Monte Carlo over bootstrap fits x noise draws, so the PI always contains the CI's spread.
Without bootstrap samples the law is taken as exact: CI is None and the PI is noise only.
Beyond the fitted range the PI adds the law's misspecification (`analysis.extrapolation`):
log L = log law_s(N, D) + sigma t + tau delta(N, D) t', t' Student-t on the number of inner
origins tau was measured on, delta the log-distance outside the fitted range (0 inside, where
the PI is as above).

The noise is homoscedastic in log loss, as in `analysis.noise`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.approach3 import Approach3Result
from analysis.bootstrap import _approach3_samples, resample_indices
from analysis.noise import ExtrapolationError
from scaling.errors import UserError

N_DRAWS = 40_000  # Monte Carlo draws for a PI (quantile error ~0.3% of the interval)


def resolve_point(n_params: float | None = None, n_tokens: float | None = None,
                  flops: float | None = None) -> tuple[float, float]:
    """(N, D) from two of N, D, C (C = 6 N D). One line naming the field when it is missing,
    non-positive or over-determined."""
    given = {k: v for k, v in (("params", n_params), ("tokens", n_tokens), ("flops", flops))
             if v is not None}
    for name, v in given.items():
        if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
            raise UserError(f"--{name}: expected a positive number, got {v!r}")
    if "flops" in given:
        if len(given) != 2:
            raise UserError("--flops: expected exactly one of --params, --tokens with it")
        assert flops is not None
        if n_params is not None:
            return float(n_params), float(flops) / (6.0 * float(n_params))
        assert n_tokens is not None  # exactly one of them came with --flops
        return float(flops) / (6.0 * float(n_tokens)), float(n_tokens)
    if n_params is None or n_tokens is None:
        missing = "params" if n_params is None else "tokens"
        raise UserError(f"--{missing}: expected a positive number (or --flops with one of "
                        "--params, --tokens)")
    return float(n_params), float(n_tokens)


@dataclass(frozen=True)
class LawSamples:
    """Bootstrap fits of L = E + A/N^alpha + B/D^beta, one value per fit."""

    A: np.ndarray
    B: np.ndarray
    E: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray

    @classmethod
    def from_samples(cls, samples: dict[str, Any]) -> LawSamples:
        """From a bootstrap block's samples (BootstrapResult.samples["approach3"] or fit.json's
        approach3.bootstrap.samples); fits with a non-finite parameter are dropped."""
        try:
            cols = [np.asarray(samples[k], dtype=np.float64) for k in ("A", "B", "E", "alpha",
                                                                       "beta")]
        except KeyError as e:
            raise UserError(f"bootstrap samples: missing {e.args[0]!r}") from None
        keep = np.all([np.isfinite(c) for c in cols], axis=0)
        return cls(*(c[keep] for c in cols))

    def predict(self, n_params: float, n_tokens: float) -> np.ndarray:
        return self.E + self.A / n_params**self.alpha + self.B / n_tokens**self.beta

    def __len__(self) -> int:
        return len(self.E)


@dataclass(frozen=True)
class Prediction:
    approach: str
    n_params: float
    n_tokens: float
    flops: float
    loss: float
    loss_ci: list[float] | None
    loss_pi: list[float]
    level: float
    sigma: float
    noise_source: str
    n_bootstrap: int
    extrapolation_sigma: float = 0.0  # tau x log-distance outside the fitted range

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _quantiles(x: np.ndarray, level: float) -> list[float]:
    q = (1 - level) / 2
    return [float(np.quantile(x, q)), float(np.quantile(x, 1 - q))]


def noise_draws(sigma: float, dof: int, size: Any, rng: np.random.Generator) -> np.ndarray:
    """sigma * t_dof draws (normal when dof is unknown or large)."""
    if dof and dof < 1000:
        return sigma * rng.standard_t(dof, size)
    return sigma * rng.standard_normal(size)


def predict_loss(law: Any, n_params: float, n_tokens: float, *, sigma: float,
                 samples: LawSamples | None = None, level: float = 0.8, dof: int = 0,
                 approach: str = "approach3", noise_source: str = "",
                 seed: int = 0, extrapolation: ExtrapolationError | None = None
                 ) -> Prediction:
    """Point prediction law(N, D), its CI over `samples` and its PI with noise `sigma`
    (standard deviation of log loss measured on `dof` degrees of freedom) and, beyond the
    fitted range, the misspecification term of `extrapolation`."""
    if not 0 < level < 1:
        raise UserError(f"--level: expected a level in (0, 1), got {level}")
    if not (math.isfinite(sigma) and sigma >= 0):
        raise UserError(f"noise: expected a sigma >= 0, got {sigma}")
    n, d = float(n_params), float(n_tokens)
    loss = float(law.predict(n, d))
    rng = np.random.default_rng(seed)
    extra = float(extrapolation.sigma_at(n, d)) if extrapolation is not None else 0.0

    def log_error(size: Any) -> np.ndarray:
        e = noise_draws(sigma, dof, size, rng)
        if extra > 0:
            assert extrapolation is not None
            e = e + noise_draws(extra, extrapolation.n_origins, size, rng)
        return e

    if samples is not None and len(samples) >= 2:
        law_S = samples.predict(n, d)
        law_S = law_S[np.isfinite(law_S) & (law_S > 0)]
        ci = _quantiles(law_S, level)
        per = max(1, N_DRAWS // len(law_S))
        draws = law_S[:, None] * np.exp(log_error((len(law_S), per)))
        pi = _quantiles(draws.ravel(), level)
        n_boot = len(law_S)
    else:
        ci, n_boot = None, 0
        pi = _quantiles(loss * np.exp(log_error(N_DRAWS)), level)
    return Prediction(approach, n, d, 6.0 * n * d, loss, ci, pi, level, float(sigma),
                      noise_source, n_boot, extra)


def pi_coverage(predictions: list[Prediction], observed: Any) -> float:
    """Fraction of observed losses inside their prediction intervals."""
    obs = np.asarray(observed, dtype=np.float64)
    inside = [p.loss_pi[0] <= o <= p.loss_pi[1] for p, o in zip(predictions, obs, strict=True)]
    return float(np.mean(inside))


def bootstrap_law_samples(points: Any, law: Any, n: int = 200, seed: int = 0) -> LawSamples:
    """Approach 3 refitted on `n` stratified resamples of `points` (as `analysis.bootstrap`
    does for fit.json), started around `law`."""
    return LawSamples.from_samples(_approach3_samples(points, resample_indices(points, n, seed),
                                                      law))


def predict_from_fit(fit: Any, n_params: float, n_tokens: float, *, level: float = 0.8,
                     seed: int = 0) -> dict:
    """`scaling predict`'s answer from a FitDocument: per parametric approach the loss, its
    CI (the fit's bootstrap samples, if any) and PI (with the fit's measured noise); the
    top-level keys repeat the first approach present (approach3 before vpnls)."""
    noise = fit.noise
    if noise is None:
        raise UserError("fit: no noise estimate in this fit.json (written before noise was "
                        "measured); rerun `scaling fit` on its source")
    out: dict = {}
    for key, law in fit.fitted().items():
        if not isinstance(law, Approach3Result):
            continue
        boot = fit.bootstrap.get(key)
        samples = LawSamples.from_samples(boot.samples) if boot is not None else None
        p = predict_loss(law, n_params, n_tokens, sigma=noise.sigma, samples=samples,
                         level=level, dof=noise.dof, approach=key, noise_source=noise.source,
                         seed=seed, extrapolation=noise.extrapolation)
        out[key] = p.to_dict()
    if not out:
        raise UserError("fit: no parametric approach (approach3 or vpnls) in this fit.json")
    first = out[next(iter(out))]
    return {"loss": first["loss"], "loss_ci": first["loss_ci"], "loss_pi": first["loss_pi"],
            "approach": first["approach"], "level": level, "n_params": first["n_params"],
            "n_tokens": first["n_tokens"], "flops": first["flops"], "sigma": noise.sigma,
            "noise_source": noise.source, "approaches": out}

__all__ = ["LawSamples", "Prediction", "bootstrap_law_samples", "noise_draws", "pi_coverage",
           "predict_from_fit", "predict_loss", "resolve_point"]
