"""Study design by simulation: how precise will the fit be, before spending the compute?

Generate runs from a known law L(N, D) = E + A/N^alpha + B/D^beta (by default Epoch's fit of
Chinchilla's data) on a planned IsoFLOP grid, add multiplicative noise to the loss, refit
many times, and report the spread of the estimates of a, N*(C) and the loss predicted at a
target budget. The spread at a level (e.g. the 10th to 90th percentile for 0.8) is what a
bootstrap interval on real data of that design would be expected to span.

Noise model: loss * exp(noise * z), z ~ N(0, 1), independent per run (seed-to-seed and
evaluation noise; Chinchilla-scale runs show about 0.5-1% relative).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.approach2 import budget_minimum, power_laws_from_minima
from analysis.approach3 import Approach3Result, ParametricLaw, fit_approach3, refit_many
from scaling.errors import UserError

DEFAULT_NOISE = 0.01  # relative loss noise per run when nothing better is known

# Besiroglu et al. (2024), fit of Chinchilla's Figure 4 data.
EPOCH_LAW = Approach3Result(A=482.0, B=2085.4, E=1.817, alpha=0.348, beta=0.366,
                            objective=float("nan"), n_points=240, method="published")


def isoflop_design(budgets: Any, law: Approach3Result = EPOCH_LAW, n_per_budget: int = 9,
                   span_dex: float = 1.2) -> pd.DataFrame:
    """Planned runs: per budget C, `n_per_budget` sizes log-spaced over `span_dex` decades
    centred on the law's N*(C), tokens D = C / (6 N). Columns params, tokens, flops, budget."""
    budgets = np.atleast_1d(np.asarray(budgets, dtype=np.float64))
    if (budgets <= 0).any() or not np.isfinite(budgets).all():
        raise UserError("budgets: expected positive finite FLOP budgets")
    if n_per_budget < 3:
        raise UserError(f"n_per_budget: expected >= 3 sizes per budget, got {n_per_budget}")
    rows = []
    for c in budgets:
        centre = float(law.params_opt(c))
        for n in centre * 10 ** np.linspace(-span_dex / 2, span_dex / 2, n_per_budget):
            rows.append({"params": n, "tokens": c / (6 * n), "flops": c, "budget": c})
    return pd.DataFrame(rows)


def generate_points(design: pd.DataFrame, law: Approach3Result = EPOCH_LAW,
                    noise: float = 0.0, rng: np.random.Generator | int | None = 0) -> pd.DataFrame:
    """The design with a `loss` column drawn from the law with relative noise, and `run`."""
    rng = np.random.default_rng(rng)
    out = design.copy().reset_index(drop=True)
    clean = law.predict(out["params"].to_numpy(float), out["tokens"].to_numpy(float))
    out["loss"] = clean * np.exp(noise * rng.standard_normal(len(out)))
    out["run"] = [f"sim{i}" for i in range(len(out))]
    if "params_non_embedding" not in out:
        out["params_non_embedding"] = np.nan
    return out


def generate_curves(sizes: Any, law: Approach3Result = EPOCH_LAW, *,
                    max_tokens_per_param: float = 200.0, min_tokens_per_param: float = 0.5,
                    n_logged: int = 60, noise: float = 0.0,
                    rng: np.random.Generator | int | None = 0) -> pd.DataFrame:
    """Training curves for Approach 1: each size logged at `n_logged` token counts log-spaced
    between min and max tokens per parameter, loss = law(N, D_seen) (a run whose schedule is
    tuned to every horizon, the idealisation Approach 1 assumes). Columns as load_curves."""
    rng = np.random.default_rng(rng)
    frames = []
    for n in np.atleast_1d(np.asarray(sizes, dtype=np.float64)):
        tokens = n * np.geomspace(min_tokens_per_param, max_tokens_per_param, n_logged)
        loss = law.predict(n, tokens) * np.exp(noise * rng.standard_normal(n_logged))
        frames.append(pd.DataFrame({"run": f"n{n:.4g}", "params": n,
                                    "step": np.arange(1, n_logged + 1), "tokens": tokens,
                                    "flops": 6 * n * tokens, "loss": loss}))
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class SimulationReport:
    """Spread of refitted estimates over `n_sims` simulated studies of one design."""

    level: float
    n_sims: int
    noise: float
    target_flops: float
    truth: dict[str, float]
    samples: dict[str, np.ndarray] = field(repr=False)

    def interval(self, name: str) -> tuple[float, float]:
        x = self.samples[name]
        x = x[np.isfinite(x)]
        q = (1 - self.level) / 2
        return float(np.quantile(x, q)), float(np.quantile(x, 1 - q))

    def width(self, name: str, relative: bool = False) -> float:
        lo, hi = self.interval(name)
        return (hi - lo) / abs(self.truth[name]) if relative else hi - lo

    def to_dict(self) -> dict:
        rows = {}
        for name in self.samples:
            lo, hi = self.interval(name)
            rows[name] = {"truth": self.truth.get(name), "median": float(
                np.nanmedian(self.samples[name])), "interval": [lo, hi], "width": hi - lo}
        return {"level": self.level, "n_sims": self.n_sims, "noise": self.noise,
                "target_flops": self.target_flops, "estimates": rows}


@dataclass(frozen=True)
class StudyInputs:
    """What a design simulation draws from, and where each came from (said in its output)."""

    law: Approach3Result
    law_source: str
    noise: float
    noise_source: str


def study_inputs(fit: Any | None = None, fit_path: str = "", noise: float | None = None
                 ) -> StudyInputs:
    """The law and noise a simulation of a planned grid uses: the fit's Approach 3 law and
    its measured noise (`analysis.noise`: replicate spread, else residual scatter) when a
    fit (a FitDocument) is given, else Epoch's Chinchilla law and DEFAULT_NOISE; an explicit
    `noise` always wins."""
    law, law_source = EPOCH_LAW, "Epoch's fit of Chinchilla (no fit.json for this sweep yet)"
    fitted = fit.parametric("approach3")[1] if fit is not None else None
    if fitted is not None:
        law, law_source = fitted, fit_path or "the given fit"
    if noise is not None:
        return StudyInputs(law, law_source, float(noise), "--noise")
    measured = getattr(fit, "noise", None)
    if measured is not None and measured.sigma > 0:
        kind = ("run-to-run noise of its replicates" if measured.source == "replicates"
                else "residual scatter about its law, no replicates")
        return StudyInputs(law, law_source, float(measured.sigma),
                           f"measured by {fit_path or 'the fit'} ({kind})")
    return StudyInputs(law, law_source, DEFAULT_NOISE,
                       "default (no fit with measured noise; --noise to set it)")


def simulate_study(design: pd.DataFrame, law: Approach3Result = EPOCH_LAW, *,
                   noise: float = 0.01, n_sims: int = 200, target_flops: float = 1e24,
                   level: float = 0.8, seed: int = 0,
                   approaches: tuple[str, ...] = ("2", "3")) -> SimulationReport:
    """Refit `n_sims` noisy copies of the design; samples of approach3 (alpha, beta, E, a,
    params_opt, loss_opt at target_flops) and approach2 (a, params_opt at target_flops).

    Approach 3 fits all copies in one batched L-BFGS, started around the full 4,500-start
    fit of the first copy (not around the truth, so the spread is the estimator's own).
    """
    if n_sims < 2:
        raise UserError(f"n_sims: expected >= 2, got {n_sims}")
    rng = np.random.default_rng(seed)
    n = design["params"].to_numpy(float)
    d = design["tokens"].to_numpy(float)
    clean = law.predict(n, d)
    loss_SxP = clean * np.exp(noise * rng.standard_normal((n_sims, len(n))))
    truth = {"a": law.a, "alpha": law.alpha, "beta": law.beta, "E": law.E,
             "params_opt": float(law.params_opt(target_flops)),
             "loss_opt": float(law.loss_opt(target_flops))}
    samples: dict[str, np.ndarray] = {}
    if "3" in approaches:
        first = fit_approach3(n, d, loss_SxP[0])
        theta, _ = refit_many(n, d, np.log(loss_SxP), None, first.theta())
        scale_3xG = np.exp(theta[:, :3].T)
        fitted = ParametricLaw(scale_3xG[0], scale_3xG[1], scale_3xG[2], theta[:, 3], theta[:, 4])
        samples.update({"approach3.alpha": fitted.alpha, "approach3.beta": fitted.beta,
                        "approach3.E": fitted.E, "approach3.a": fitted.a,
                        "approach3.params_opt": fitted.params_opt(target_flops),
                        "approach3.loss_opt": fitted.loss_opt(target_flops)})
    if "2" in approaches:
        budgets = design["budget"].to_numpy(float)
        groups = [np.nonzero(budgets == c)[0] for c in np.unique(budgets)]
        a_s, n_s = np.full(n_sims, np.nan), np.full(n_sims, np.nan)
        for s in range(n_sims):
            minima = [budget_minimum(budgets[g[0]], n[g], d[g], loss_SxP[s, g])[0]
                      for g in groups]
            if len(minima) >= 2:
                pl = power_laws_from_minima(minima)
                a_s[s], n_s[s] = pl.a, float(pl.params_opt(target_flops))
        samples["approach2.a"] = a_s
        samples["approach2.params_opt"] = n_s
    for key in list(samples):
        truth.setdefault(key, truth[key.split(".", 1)[1]])
    return SimulationReport(level=level, n_sims=n_sims, noise=noise, target_flops=target_flops,
                            truth={k: v for k, v in truth.items() if k in samples},
                            samples=samples)
