"""Compare two fitted ladders: effective compute multiplier, crossover, wall-clock multiplier.

Under C = 6 N D the compute-optimal loss of L(N, D) = E + A/N^alpha + B/D^beta is

    L*(C) = E + K (C/6)^-gamma,   gamma = alpha beta / (alpha + beta),
    K = A G^-alpha + B G^beta     (G as in `ParametricLaw`; both terms share the exponent)

so it inverts in closed form: the compute that reaches loss L is 6 ((L - E)/K)^(-1/gamma),
infinite at or below E. For a pair (A, B) the effective compute multiplier at C is

    multiplier(C) = C_A(L*_B(C)) / C

the compute A needs to reach B's compute-optimal loss at C, over C: above 1, B is worth
that many times the compute of A (Marin's way of reporting an ablation). It is evaluated on
the point laws and on every pair of bootstrap laws (sample i of A with sample i of B; the
two sources are resampled independently), whose percentile interval is `multiplier_ci`.

The crossover is the compute where L*_A(C) = L*_B(C), searched on a log grid over a stated
range and refined by Brent's method; its interval is over the samples that cross in range.

The wall-clock multiplier uses each source's measured training rate: tokens/s as a power law
of N (least squares in log-log over its runs; a constant with one size). The compute-optimal
run at C takes D*(C) / rate(N*(C)) seconds; the multiplier is A's time to reach B's loss over
B's time at C.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.approach3 import LAW_KEYS, ParametricLaw
from analysis.bootstrap import percentile_interval
from scaling.errors import UserError

CROSSOVER_GRID = 400  # log-spaced points over the crossover range before Brent refines


def frontier_coefficients(law: ParametricLaw) -> tuple[Any, Any, Any]:
    """(E, K, gamma) of L*(C) = E + K (C/6)^-gamma; broadcasts over samples."""
    gamma = law.alpha * law.beta / (law.alpha + law.beta)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        k = law.A * np.power(law.G, -law.alpha) + law.B * np.power(law.G, law.beta)
    return law.E, k, gamma


def compute_for_loss(law: ParametricLaw, loss: Any) -> np.ndarray:
    """The compute whose compute-optimal loss is `loss` (inf where loss <= E)."""
    e, k, gamma = frontier_coefficients(law)
    loss = np.asarray(loss, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        excess = (loss - e) / k
        out = 6.0 * np.power(np.where(excess > 0, excess, np.nan), -1.0 / gamma)
    return np.where(excess > 0, out, np.inf)


def multiplier(law_a: ParametricLaw, law_b: ParametricLaw, flops: Any) -> np.ndarray:
    """C_A(L*_B(C)) / C: the compute A needs to match B's compute-optimal loss at C, over C."""
    flops = np.asarray(flops, dtype=np.float64)
    return compute_for_loss(law_a, law_b.loss_opt(flops)) / flops


def crossovers(law_a: ParametricLaw, law_b: ParametricLaw, lo: float, hi: float,
               n_grid: int = CROSSOVER_GRID) -> list[float]:
    """Every C in [lo, hi] where L*_A(C) = L*_B(C) (point laws), ascending."""
    from scipy.optimize import brentq

    def gap(log_c: float) -> float:
        c = math.exp(log_c)
        return float(law_a.loss_opt(c) - law_b.loss_opt(c))

    grid = np.linspace(math.log(lo), math.log(hi), n_grid)
    values = np.array([gap(x) for x in grid])
    out = []
    for i in np.nonzero(np.sign(values[:-1]) * np.sign(values[1:]) < 0)[0]:
        out.append(math.exp(brentq(gap, grid[i], grid[i + 1], xtol=1e-12)))
    out += [math.exp(x) for x, v in zip(grid, values, strict=True) if v == 0]
    return sorted(out)


def _sample_crossovers(samples_a: ParametricLaw, samples_b: ParametricLaw, lo: float,
                       hi: float) -> np.ndarray:
    """The first crossover in range of each sample pair (NaN where they do not cross),
    located on the grid by sign change and refined by bisection in log C, all vectorised."""
    grid = np.linspace(math.log(lo), math.log(hi), CROSSOVER_GRID)
    a, b = samples_a.column(), samples_b.column()
    gap = a.loss_opt(np.exp(grid)) - b.loss_opt(np.exp(grid))  # samples x grid
    change = np.sign(gap[:, :-1]) * np.sign(gap[:, 1:]) < 0
    has = change.any(axis=1)
    first = np.argmax(change, axis=1)
    left, right = grid[first], grid[first + 1]
    rows = np.arange(len(first))
    sign_left = np.sign(gap[rows, first])
    a_rows = ParametricLaw(*(np.asarray(getattr(samples_a, k)) for k in LAW_KEYS))
    b_rows = ParametricLaw(*(np.asarray(getattr(samples_b, k)) for k in LAW_KEYS))
    for _ in range(60):  # each halves the bracket: 60 steps reach float rounding
        mid = 0.5 * (left + right)
        g = a_rows.loss_opt(np.exp(mid)) - b_rows.loss_opt(np.exp(mid))
        same = np.sign(g) == sign_left
        left, right = np.where(same, mid, left), np.where(same, right, mid)
    return np.where(has, np.exp(0.5 * (left + right)), np.nan)


@dataclass(frozen=True)
class ThroughputLaw:
    """Measured training rate: tokens/s = exp(intercept) N^slope, from `n_runs` runs."""

    intercept: float
    slope: float
    n_runs: int

    def tokens_per_s(self, n_params: Any) -> np.ndarray:
        return np.exp(self.intercept + self.slope * np.log(np.asarray(n_params, np.float64)))

    def to_dict(self) -> dict:
        return {"intercept": self.intercept, "slope": self.slope, "n_runs": self.n_runs}


def fit_throughput(n_params: Any, tokens_per_s: Any) -> ThroughputLaw | None:
    """log tokens/s linear in log N over the runs with a measured rate; None without one."""
    n = np.asarray(n_params, dtype=np.float64)
    r = np.asarray(tokens_per_s, dtype=np.float64)
    ok = np.isfinite(n) & np.isfinite(r) & (n > 0) & (r > 0)
    if not ok.any():
        return None
    x, y = np.log(n[ok]), np.log(r[ok])
    if np.ptp(x) == 0:
        return ThroughputLaw(float(np.mean(y)), 0.0, int(ok.sum()))
    slope, intercept = np.polyfit(x, y, 1)
    return ThroughputLaw(float(intercept), float(slope), int(ok.sum()))


def train_seconds(law: ParametricLaw, rate: ThroughputLaw, flops: Any) -> np.ndarray:
    """Seconds to train the compute-optimal model at `flops` at the measured rate."""
    return law.tokens_opt(flops) / rate.tokens_per_s(law.params_opt(flops))


@dataclass(frozen=True)
class Contender:
    """One side of a comparison: its point law, bootstrap laws (arrays) and measured rate."""

    name: str
    law: ParametricLaw
    samples: ParametricLaw | None = None
    budgets: tuple[float, ...] = ()
    throughput: ThroughputLaw | None = None
    source: str = ""
    n_points: int = 0

    def to_dict(self) -> dict:
        return {"source": self.source, "n_points": self.n_points,
                "law": {k: float(getattr(self.law, k)) for k in LAW_KEYS},
                "budgets": list(self.budgets),
                "throughput": None if self.throughput is None else self.throughput.to_dict()}


@dataclass(frozen=True)
class BudgetComparison:
    flops: float
    multiplier: float
    multiplier_ci: list[float] | None
    loss_opt_a: float
    loss_opt_b: float
    wallclock_multiplier: float | None = None
    wallclock_multiplier_ci: list[float] | None = None

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in (
            "flops", "multiplier", "multiplier_ci", "loss_opt_a", "loss_opt_b",
            "wallclock_multiplier", "wallclock_multiplier_ci")}


@dataclass(frozen=True)
class PairComparison:
    a: str
    b: str
    budgets: tuple[BudgetComparison, ...]
    target: BudgetComparison | None
    crossover_range: tuple[float, float]
    crossover_flops: tuple[float, ...]  # point laws; empty: no crossing in range
    crossover_ci: list[float] | None
    crossover_fraction: float | None  # share of sample pairs crossing in range
    n_samples: int
    level: float
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "level": self.level, "n_samples": self.n_samples,
                "budgets": [b.to_dict() for b in self.budgets],
                "target": None if self.target is None else self.target.to_dict(),
                "crossover": {"range": list(self.crossover_range),
                              "flops": list(self.crossover_flops),
                              "flops_ci": self.crossover_ci,
                              "samples_crossing": self.crossover_fraction}}


def interval(samples: np.ndarray, level: float) -> list[float]:
    """`bootstrap.percentile_interval`, except that infinite samples (A never reaches B's
    loss) count as the largest values rather than being dropped, which would bias the
    interval low; an end that falls on them is inf."""
    x = np.asarray(samples, dtype=np.float64)
    x = x[~np.isnan(x)]
    if not np.isinf(x).any():
        return percentile_interval(x, level)
    q = (1 - level) / 2
    return [float(np.quantile(x, q, method="nearest")),
            float(np.quantile(x, 1 - q, method="nearest"))]


def paired_samples(a: Contender, b: Contender) -> tuple[ParametricLaw, ParametricLaw] | None:
    """Sample i of A with sample i of B, rows where either law is not finite dropped."""
    if a.samples is None or b.samples is None:
        return None
    arrays_a = [np.asarray(getattr(a.samples, k), np.float64) for k in LAW_KEYS]
    arrays_b = [np.asarray(getattr(b.samples, k), np.float64) for k in LAW_KEYS]
    n = min(len(arrays_a[0]), len(arrays_b[0]))
    arrays_a, arrays_b = [x[:n] for x in arrays_a], [x[:n] for x in arrays_b]
    ok = np.all([np.isfinite(x) for x in arrays_a + arrays_b], axis=0)
    if ok.sum() < 2:
        return None
    return (ParametricLaw(*(x[ok] for x in arrays_a)), ParametricLaw(*(x[ok] for x in arrays_b)))


def _at_budget(a: Contender, b: Contender, pairs: tuple[ParametricLaw, ParametricLaw] | None,
               flops: float, level: float) -> BudgetComparison:
    m = float(multiplier(a.law, b.law, flops))
    ci = None
    if pairs is not None:
        ci = interval(multiplier(*pairs, flops), level)
    wall = wall_ci = None
    rate_a, rate_b = a.throughput, b.throughput
    if rate_a is not None and rate_b is not None:
        def wall_of(law_a: ParametricLaw, law_b: ParametricLaw) -> np.ndarray:
            c_a = compute_for_loss(law_a, law_b.loss_opt(flops))
            with np.errstate(invalid="ignore"):
                return (train_seconds(law_a, rate_a, c_a)
                        / train_seconds(law_b, rate_b, flops))
        wall = float(wall_of(a.law, b.law))
        if pairs is not None:
            wall_ci = interval(wall_of(*pairs), level)
    return BudgetComparison(flops=float(flops), multiplier=m, multiplier_ci=ci,
                            loss_opt_a=float(a.law.loss_opt(flops)),
                            loss_opt_b=float(b.law.loss_opt(flops)),
                            wallclock_multiplier=wall, wallclock_multiplier_ci=wall_ci)


def default_crossover_range(budgets: list[float]) -> tuple[float, float]:
    """From 1/100 of the smallest swept budget to 1e4 x the largest."""
    return (min(budgets) / 100.0, max(budgets) * 1e4)


def compare_pair(a: Contender, b: Contender, *, budgets: list[float] | None = None,
                 target_flops: float | None = None, level: float = 0.8,
                 crossover_range: tuple[float, float] | None = None) -> PairComparison:
    """Multiplier (with intervals) at every budget and the target, and the crossover."""
    budgets = sorted(set(budgets if budgets is not None else (*a.budgets, *b.budgets)))
    if budgets:
        anchor = budgets
    elif target_flops is not None:
        anchor = [float(target_flops)]
    else:
        raise UserError("budgets: expected at least one swept budget or --target-flops")
    lo, hi = crossover_range or default_crossover_range(anchor)
    if not (0 < lo < hi and math.isfinite(hi)):
        raise UserError(f"--crossover-range: expected 0 < LO < HI, got {lo:g} {hi:g}")
    pairs = paired_samples(a, b)
    rows = tuple(_at_budget(a, b, pairs, c, level) for c in budgets)
    target = None if target_flops is None else _at_budget(a, b, pairs, target_flops, level)
    cross_ci = fraction = None
    if pairs is not None:
        sample_cross = _sample_crossovers(*pairs, lo, hi)
        fraction = float(np.mean(np.isfinite(sample_cross)))
        if np.isfinite(sample_cross).sum() >= 2:
            cross_ci = percentile_interval(sample_cross, level)
    return PairComparison(
        a=a.name, b=b.name, budgets=rows, target=target, crossover_range=(float(lo), float(hi)),
        crossover_flops=tuple(crossovers(a.law, b.law, lo, hi)), crossover_ci=cross_ci,
        crossover_fraction=fraction, n_samples=0 if pairs is None else len(pairs[0].E),
        level=level)


def compare_all(contenders: list[Contender], **options: Any) -> list[PairComparison]:
    """Every pair (A, B) in the given order, A before B."""
    if len(contenders) < 2:
        raise UserError(f"sources: expected at least 2 ladders (sources or labels) to compare, "
                        f"got {len(contenders)}")
    names = [c.name for c in contenders]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise UserError(f"sources: two ladders are both named {dup!r}; give distinct labels")
    return [compare_pair(a, b, **options) for i, a in enumerate(contenders)
            for b in contenders[i + 1:]]


__all__ = ["BudgetComparison", "Contender", "PairComparison", "ThroughputLaw", "compare_all",
           "compare_pair", "compute_for_loss", "interval", "paired_samples", "crossovers", "default_crossover_range",
           "fit_throughput", "frontier_coefficients", "multiplier", "train_seconds"]
