"""From a saved fit to a plan: how many parameters, how many tokens, which shape, what loss.

Three modes, all pure functions of a FitDocument (analysis.fitdoc):

* compute-optimal (Hoffmann et al. 2022): N*(C), D*(C) from the chosen approach's frontier
  under C = 6 N D, and the loss the parametric law L(N, D) = E + A/N^alpha + B/D^beta
  predicts there.
* inference-aware (Sardana et al. 2023, "Beyond Chinchilla-Optimal"): for T_inf expected
  inference tokens, the (N, D) reaching the loss the compute-optimal model reaches at this
  budget with the fewest training (6 N D) plus inference (2 N T_inf) FLOPs.
* data-constrained (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models"):
  with only U unique tokens, repeated tokens and excess parameters are worth less; the plan
  minimises the law evaluated at their effective data D' and effective parameters N'.

Every quantity gets a percentile interval when the fit carries bootstrap samples: each
sample of the law's parameters is pushed through the very same formulas (all vectorised
over samples), never a delta-method approximation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from analysis.approach3 import ParametricLaw
from analysis.artifacts import RunsModel
from analysis.bootstrap import percentile_interval
from analysis.fitdoc import PARAMETRIC, FitDocument, Law
from analysis.predict import LawSamples, predict_loss
from scaling.errors import UserError
from scaling.shapes import solve_shape

# Muennighoff et al. 2023, eq. 5 and the fit to their 400+ runs (Section 3.1): the
# "half-lives" of repeated data and of excess parameters. The paper reports
# R_D* = 15.39 and R_N* = 5.31 (rounded to 15.4 and 5.3 in the text); we use the rounded
# values the paper quotes so a reader can check our numbers by hand.
MUENNIGHOFF_R_D_STAR = 15.4
MUENNIGHOFF_R_N_STAR = 5.3

DEFAULT_VOCAB_SIZE = 32_000  # Hoffmann et al.'s SentencePiece vocabulary
DEFAULT_SEQ_LEN = 2_048

_INPUTS = ("inference_tokens", "unique_tokens")  # echoed inputs, no interval
_GRID_DECADES = 4.0  # data-constrained search: N within 10^+-4 of the unconstrained N*
_GRID_POINTS = 1601


@dataclass(frozen=True)
class Recommendation:
    """A plan for one budget. `n_params`, `n_tokens`, `loss` are the plan of `mode`;
    `compute_optimal` always holds the Chinchilla answer for comparison. `ci` maps a field
    name (dotted for nested ones, e.g. "inference.total_flops") to its [lo, hi] interval."""

    budget: float
    approach: str
    mode: str  # "compute_optimal" | "inference_aware" | "data_constrained"
    params_kind: str
    convention: str | None
    n_params: float
    n_tokens: float
    tokens_per_param: float
    loss: float | None
    shape: dict | None = None  # ModelConfig.to_dict() of the solved shape
    shape_params: int | None = None  # its total parameter count
    shape_params_non_embedding: int | None = None
    shape_rel_error: float | None = None  # (its count of `params_kind`) / N - 1
    shape_tokens: float | None = None  # tokens giving the plan's 6 N D with that shape
    shape_recipe: str | None = None  # the named recipe the shape was solved under
    level: float | None = None
    n_bootstrap: int = 0
    ci: dict = field(default_factory=dict)
    # The prediction interval of one run trained to the plan (analysis.predict: law spread,
    # measured noise, extrapolation error) at `level`, so a saved forecast carries its own.
    loss_pi: list[float] | None = None
    compute_optimal: dict = field(default_factory=dict)
    inference: dict | None = None
    data_constrained: dict | None = None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ci"] = {k: [float(v[0]), float(v[1])] for k, v in self.ci.items()}
        d["notes"] = list(self.notes)
        return d


# --------------------------------------------------------------------------- laws


def effective_tokens(n_tokens, unique_tokens, r_star=MUENNIGHOFF_R_D_STAR):
    """D' = U + U R* (1 - exp(-R/R*)), R = D/U - 1 repetitions (0 when D <= U, D' = D)."""
    repeats = np.maximum(n_tokens / unique_tokens - 1.0, 0.0)
    repeated = unique_tokens + unique_tokens * r_star * (1.0 - np.exp(-repeats / r_star))
    return np.where(n_tokens <= unique_tokens, n_tokens, repeated)


def effective_params(n_params, base_params, r_star=MUENNIGHOFF_R_N_STAR):
    """N' = U_N + U_N R* (1 - exp(-R/R*)), U_N = min(base, N), R = N/U_N - 1."""
    u_n = np.minimum(base_params, n_params)
    repeats = np.maximum(n_params / u_n - 1.0, 0.0)
    return u_n + u_n * r_star * (1.0 - np.exp(-repeats / r_star))


# --------------------------------------------------------------------------- modes


def inference_aware(law: ParametricLaw, budget: float, inference_tokens: float) -> dict:
    """Sardana et al. 2023: minimise 6 N D + 2 N T_inf subject to L(N, D) = L(N*, D*).

    Along the iso-loss curve D(N) = (B / (l - E - A N^-alpha))^(1/beta), the derivative of
    the total is 6 D (1 - q) + 2 T with q = (alpha/beta) A N^-alpha / (l - E - A N^-alpha).
    It tends to -inf where the curve has its asymptote (l - E = A N^-alpha) and equals 2 T
    at N* (where q = 1, the compute-optimal condition), so the optimum is the root in
    between, found by bisection on log N for every sample at once.
    """
    n_opt, d_opt = law.params_opt(budget), law.tokens_opt(budget)
    target = law.predict(n_opt, d_opt)
    alpha, beta, big_a, big_b, e = law.alpha, law.beta, law.A, law.B, law.E
    log_lo = np.log(big_a / (target - e)) / alpha  # the asymptote
    log_hi = np.log(n_opt)
    log_lo = log_lo + 1e-9 * np.maximum(np.abs(log_lo), 1.0)

    def slope(log_n):
        excess = target - e - big_a * np.exp(-alpha * log_n)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            q = (alpha / beta) * big_a * np.exp(-alpha * log_n) / excess
            tokens = np.exp((np.log(big_b) - np.log(excess)) / beta)
            value = 6.0 * tokens * (1.0 - q) + 2.0 * inference_tokens
        return np.where(excess > 0, value, -np.inf)

    lo, hi = log_lo.copy(), log_hi.copy()
    for _ in range(200):  # log N range < 100 nats; 200 halvings reach float64 resolution
        mid = 0.5 * (lo + hi)
        negative = slope(mid) < 0
        lo = np.where(negative, mid, lo)
        hi = np.where(negative, hi, mid)
    n_params = np.exp(0.5 * (lo + hi))
    n_params = np.minimum(n_params, n_opt)  # at T_inf = 0 the root is N* itself
    excess = target - e - big_a * np.power(n_params, -alpha)
    n_tokens = np.power(big_b / excess, 1.0 / beta)
    train = 6.0 * n_params * n_tokens
    infer = 2.0 * n_params * inference_tokens
    base_train = 6.0 * n_opt * d_opt
    base_infer = 2.0 * n_opt * inference_tokens
    base_total = base_train + base_infer
    saving = base_total - (train + infer)
    return {
        "inference_tokens": np.full_like(n_params, float(inference_tokens)),
        "target_loss": target,
        "n_params": n_params,
        "n_tokens": n_tokens,
        "tokens_per_param": n_tokens / n_params,
        "train_flops": train,
        "inference_flops": infer,
        "total_flops": train + infer,
        "compute_optimal_total_flops": base_total,
        "saving_flops": saving,
        "saving_fraction": saving / base_total,
    }


def data_constrained(
    law: ParametricLaw,
    budget: float,
    unique_tokens: float,
    r_d_star: float = MUENNIGHOFF_R_D_STAR,
    r_n_star: float = MUENNIGHOFF_R_N_STAR,
) -> dict:
    """Muennighoff et al. 2023: on 6 N D = C, minimise E + A/N'^alpha + B/D'^beta.

    The search is a dense grid in log N around the unconstrained N* (it needs no convexity:
    the effective quantities are piecewise), refined once around the best grid cell.
    """
    n_opt, d_opt = law.params_opt(budget), law.tokens_opt(budget)
    base_params = law.params_for_tokens(unique_tokens)[:, None]
    col = law.column()

    def loss_at(log_n):
        n_params = np.exp(log_n)
        n_tokens = budget / (6.0 * n_params)
        return col.predict(
            effective_params(n_params, base_params, r_n_star),
            effective_tokens(n_tokens, unique_tokens, r_d_star),
        )

    span = _GRID_DECADES * math.log(10.0)
    offsets = np.linspace(-span, span, _GRID_POINTS)
    log_n = np.log(n_opt)[:, None] + offsets[None, :]
    best = np.argmin(loss_at(log_n), axis=1)
    step = offsets[1] - offsets[0]
    centre = log_n[np.arange(len(best)), best]
    fine = centre[:, None] + np.linspace(-step, step, 201)[None, :]
    fine_best = np.argmin(loss_at(fine), axis=1)
    log_best = fine[np.arange(len(fine_best)), fine_best]
    n_params = np.exp(log_best)
    n_tokens = budget / (6.0 * n_params)
    eff_params = effective_params(n_params, base_params[:, 0], r_n_star)
    eff_tokens = effective_tokens(n_tokens, unique_tokens, r_d_star)
    naive_loss = law.predict(
        effective_params(n_opt, base_params[:, 0], r_n_star),
        effective_tokens(d_opt, unique_tokens, r_d_star),
    )
    return {
        "unique_tokens": np.full_like(n_params, float(unique_tokens)),
        "n_params": n_params,
        "n_tokens": n_tokens,
        "tokens_per_param": n_tokens / n_params,
        "epochs": n_tokens / unique_tokens,
        "effective_params": eff_params,
        "effective_tokens": eff_tokens,
        "loss": law.predict(eff_params, eff_tokens),
        "compute_optimal_epochs": d_opt / unique_tokens,
        "compute_optimal_loss_repeated": naive_loss,
        "at_grid_edge": (best == 0) | (best == _GRID_POINTS - 1),
    }


# --------------------------------------------------------------------------- shape


def family_options(family: RunsModel, vocab_size: int | None = None,
                   seq_len: int | None = None) -> dict:
    """`recommend`'s vocab_size, seq_len and shape_options for one more run of the fitted
    runs' family: a value given here (a CLI flag) wins, then the recorded one, then the
    defaults."""
    return {"vocab_size": vocab_size or family.vocab_size or DEFAULT_VOCAB_SIZE,
            "seq_len": seq_len or family.seq_len or DEFAULT_SEQ_LEN,
            "shape_options": family.shape_options()}



def _solve_shape(n_params: float, vocab_size, seq_len, params_kind: str, train_flops: float,
                 shape_options: Mapping[str, Any]):
    """Shape nearest to n_params under the foundation's solve_shape; (None, note) if impossible."""
    if vocab_size is None or seq_len is None:
        return None, "no shape: vocabulary size or sequence length unknown"
    try:
        solved = solve_shape(int(round(n_params)), int(vocab_size), int(seq_len),
                             params_kind=params_kind, **shape_options)
    except (ValueError, UserError) as e:
        return None, f"no shape for {n_params:.3g} parameters: {str(e).splitlines()[0]}"
    counted = solved.n_params_non_embedding if params_kind == "non_embedding" else solved.n_params
    return {
        "shape": solved.config.to_dict(),
        "shape_params": int(solved.n_params),
        "shape_params_non_embedding": int(solved.n_params_non_embedding),
        "shape_rel_error": float(solved.rel_error),
        "shape_tokens": float(train_flops / (6.0 * counted)),
        "shape_recipe": solved.recipe,
    }, None


# --------------------------------------------------------------------------- entry point

# Where each field of the plan comes from, per mode (keys of `_evaluate`'s output).
_PLAN = {
    "compute_optimal": {k: f"compute_optimal.{k}" for k in
                        ("n_params", "n_tokens", "tokens_per_param", "loss")},
    "inference_aware": {"n_params": "inference.n_params", "n_tokens": "inference.n_tokens",
                        "tokens_per_param": "inference.tokens_per_param",
                        "loss": "inference.target_loss"},
    "data_constrained": {k: f"data_constrained.{k}" for k in
                         ("n_params", "n_tokens", "tokens_per_param", "loss")},
}


def _finite(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _mode(budget, inference_tokens, unique_tokens, level) -> str:
    """The plan's mode; UserError naming the first bad argument."""
    if not _finite(budget) or budget <= 0:
        raise UserError(f"budget: expected a positive finite number of FLOPs, got {budget!r}")
    if inference_tokens is not None and (not _finite(inference_tokens) or inference_tokens < 0):
        raise UserError(
            f"inference_tokens: expected a finite number >= 0, got {inference_tokens!r}")
    if unique_tokens is not None and (not _finite(unique_tokens) or unique_tokens <= 0):
        raise UserError(f"unique_tokens: expected a positive finite number, got {unique_tokens!r}")
    if inference_tokens is not None and unique_tokens is not None:
        raise UserError("inference_tokens and unique_tokens: give one mode at a time")
    if level is not None and (not _finite(level) or not 0 < level < 1):
        raise UserError(f"level: expected a number in (0, 1), got {level!r}")
    if inference_tokens is not None:
        return "inference_aware"
    return "compute_optimal" if unique_tokens is None else "data_constrained"


def _evaluate(frontier, loss_law, budget: float, mode: str, inputs: dict) -> dict:
    """Every quantity of the plan, flat with dotted names, one entry per law sample."""
    n_params, n_tokens = frontier.params_opt(budget), frontier.tokens_opt(budget)
    out = {"compute_optimal.n_params": n_params, "compute_optimal.n_tokens": n_tokens,
           "compute_optimal.tokens_per_param": n_tokens / n_params}
    if loss_law is not None:
        out["compute_optimal.loss"] = loss_law.predict(n_params, n_tokens)
    if mode == "inference_aware":
        extra = inference_aware(frontier, budget, float(inputs["inference_tokens"]))
        out.update({f"inference.{k}": v for k, v in extra.items()})
    elif mode == "data_constrained":
        extra = data_constrained(frontier, budget, float(inputs["unique_tokens"]))
        out.update({f"data_constrained.{k}": v for k, v in extra.items()})
    return out


def _section(values: dict, prefix: str) -> dict:
    """The scalars of one section ("inference.") of `_evaluate`'s output."""
    return {k[len(prefix):]: (bool(v.reshape(-1)[0]) if v.dtype == bool else float(v.reshape(-1)[0]))
            for k, v in ((k, np.asarray(v)) for k, v in values.items()) if k.startswith(prefix)}


def _intervals(point: dict, boot: dict | None, level: float, mode: str) -> dict:
    """Percentile intervals of every sampled quantity, and of the plan's own fields."""
    ci: dict[str, tuple[float, float]] = {}
    for key, samples in (boot or {}).items():
        if (key.split(".", 1)[1] not in _INPUTS and np.asarray(point[key]).dtype != bool
                and np.isfinite(samples).sum() >= 2):
            lo, hi = percentile_interval(samples, level)
            ci[key] = (lo, hi)
    ci.update({field_: ci[src] for field_, src in _PLAN[mode].items() if src in ci})
    return ci


def _mode_notes(mode: str, budget: float, inference: dict | None,
                constrained: dict | None) -> list[str]:
    notes = []
    if mode == "inference_aware":
        assert inference is not None  # computed in this mode
        notes.append(
            f"inference-aware (Sardana et al. 2023): same loss as the compute-optimal model, "
            f"trained on more tokens; training FLOPs {inference['train_flops']:.3g} "
            f"exceed the budget {budget:.3g} by design")
    if mode == "data_constrained":
        assert constrained is not None  # computed in this mode
        if constrained.pop("at_grid_edge", False):
            notes.append("data-constrained optimum at the edge of the searched range "
                         "(N* x 10^+-4): the law is flat there; treat N as a bound")
        if constrained["epochs"] > 4.0:
            notes.append(
                f"the plan repeats the data {constrained['epochs']:.1f} times; Muennighoff et "
                "al. found up to ~4 epochs almost as good as fresh data, and rapidly "
                "diminishing returns beyond ~16")
    return notes


def _laws(fit: FitDocument, approach: str, mode: str
          ) -> tuple[Law, Law | None, tuple[Law, Law | None] | None]:
    """(frontier, loss law, their bootstrap samples or None). The law that predicts loss is
    the approach's own when parametric, else Approach 3's (when fitted)."""
    frontier = fit.result(approach)
    if approach in PARAMETRIC:
        alone = fit.sample_laws(approach)
        return frontier.law(), frontier.law(), (alone[0], alone[0]) if alone else None
    if mode != "compute_optimal":
        raise UserError(
            f"approach: the {mode.replace('_', '-')} mode needs a parametric law "
            f"(approach3 or vpnls), got {approach!r}")
    name, loss_law = fit.parametric("approach3")
    paired = fit.sample_laws(approach, name) if name else None
    samples: tuple[Law, Law | None] | None = (paired[0], paired[1]) if paired else None
    if samples is None and (alone := fit.sample_laws(approach)) is not None:
        samples = (alone[0], None)  # no paired loss samples: intervals of N and D only
    return frontier.law(), None if loss_law is None else loss_law.law(), samples


def _plan_pi(fit: FitDocument, approach: str, n_params: float, n_tokens: float,
             loss: float | None, level: float) -> list[float] | None:
    """The PI of the plan's loss when that loss is the parametric law at (N, D) (not the
    data-constrained loss of repeated data) and the fit measured its noise."""
    name, law = fit.parametric(approach if approach in PARAMETRIC else "approach3")
    if law is None or fit.noise is None or loss is None:
        return None
    if not math.isclose(float(law.predict(n_params, n_tokens)), loss, rel_tol=1e-9):
        return None
    boot = fit.bootstrap.get(name) if name else None
    samples = LawSamples.from_samples(dict(boot.samples)) if boot is not None else None
    noise = fit.noise
    return predict_loss(law, n_params, n_tokens, sigma=noise.sigma, samples=samples,
                        level=level, dof=noise.dof, approach=str(name),
                        extrapolation=noise.extrapolation).loss_pi


def _as_arrays(law):
    return None if law is None else type(law)(*(np.atleast_1d(np.asarray(v, dtype=np.float64))
                                                 for v in law.__dict__.values()))


def recommend(
    fit: FitDocument,
    budget: float,
    *,
    approach: str = "approach3",
    inference_tokens: float | None = None,
    unique_tokens: float | None = None,
    vocab_size: int | None = DEFAULT_VOCAB_SIZE,
    seq_len: int | None = DEFAULT_SEQ_LEN,
    level: float | None = None,
    shape_options: Mapping[str, Any] | None = None,
) -> Recommendation:
    """The plan for `budget` FLOPs from a fit (see the module docstring for the modes).

    `level` defaults to the bootstrap's own level (0.8 when the fit has none).
    `shape_options` go to scaling.shapes.solve_shape (mlp, tie_embeddings, qk_norm, recipe:
    analysis.artifacts.RunsModel.shape_options, the fitted runs' own); the solver's defaults
    without them.
    """
    mode = _mode(budget, inference_tokens, unique_tokens, level)
    if not isinstance(fit, FitDocument):
        raise UserError("fit: expected a fit document (analysis.fitdoc.read_fit)")
    budget = float(budget)
    frontier, loss_law, samples = _laws(fit, approach, mode)
    inputs = {"inference_tokens": inference_tokens, "unique_tokens": unique_tokens}
    level = fit.level(approach) if level is None else level
    point = _evaluate(_as_arrays(frontier), _as_arrays(loss_law), budget, mode, inputs)
    boot = None if samples is None else _evaluate(*samples, budget, mode, inputs)
    ci = _intervals(point, boot, level, mode)
    compute_optimal = _section(point, "compute_optimal.")
    inference = _section(point, "inference.") if mode == "inference_aware" else None
    constrained = _section(point, "data_constrained.") if mode == "data_constrained" else None
    if constrained is not None:
        constrained.update(r_d_star=MUENNIGHOFF_R_D_STAR, r_n_star=MUENNIGHOFF_R_N_STAR)
    notes = _mode_notes(mode, budget, inference, constrained)
    plan = {f: _section(point, "")[src] for f, src in _PLAN[mode].items() if src in point}
    if plan.get("loss") is None:
        notes.append("no parametric law (approach 3) in the fit: no predicted loss")
    # The shape keeps the plan's training compute (above the budget in inference-aware mode).
    shape_fields, shape_note = _solve_shape(plan["n_params"], vocab_size, seq_len,
                                            fit.params_kind,
                                            6.0 * plan["n_params"] * plan["n_tokens"],
                                            shape_options or {})
    notes += [shape_note] if shape_note else []
    if approach in PARAMETRIC and fit.convention != "6N":
        notes.append(f"the parametric frontier assumes C = 6ND; the runs' FLOPs convention is "
                     f"{fit.convention!r}")
    n_boot = 0 if samples is None else len(np.atleast_1d(samples[0].a))
    loss_pi = _plan_pi(fit, approach, plan["n_params"], plan["n_tokens"], plan.get("loss"),
                       level)
    return Recommendation(
        budget=budget, approach=approach, mode=mode, params_kind=fit.params_kind,
        convention=fit.convention, n_params=plan["n_params"], n_tokens=plan["n_tokens"],
        tokens_per_param=plan["tokens_per_param"], loss=plan.get("loss"),
        level=level if n_boot or loss_pi else None, n_bootstrap=n_boot, ci=ci,
        loss_pi=loss_pi, compute_optimal=compute_optimal, inference=inference, data_constrained=constrained,
        notes=tuple(notes), **(shape_fields or {}))
