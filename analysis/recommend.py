"""From a saved fit to a plan: how many parameters, how many tokens, which shape, what loss.

Three modes, all pure functions of a fit dict (the `fit.json` contract in docs/architecture.md):

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
from dataclasses import asdict, dataclass, field

import numpy as np

from scaling.errors import UserError

APPROACHES = ("approach1", "approach2", "approach3", "vpnls")
PARAMETRIC = ("approach3", "vpnls")
PARAMETRIC_KEYS = ("A", "B", "E", "alpha", "beta")
POWER_KEYS = ("a", "k_params")

# Muennighoff et al. 2023, eq. 5 and the fit to their 400+ runs (Section 3.1): the
# "half-lives" of repeated data and of excess parameters. The paper reports
# R_D* = 15.39 and R_N* = 5.31 (rounded to 15.4 and 5.3 in the text); we use the rounded
# values the paper quotes so a reader can check our numbers by hand.
MUENNIGHOFF_R_D_STAR = 15.4
MUENNIGHOFF_R_N_STAR = 5.3

DEFAULT_VOCAB_SIZE = 32_000  # Hoffmann et al.'s SentencePiece vocabulary
DEFAULT_SEQ_LEN = 2_048
DEFAULT_LEVEL = 0.8

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
    shape_recipe: str | None = None  # the shape solver's named recipe
    level: float | None = None
    n_bootstrap: int = 0
    ci: dict = field(default_factory=dict)
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


def parametric_loss(law: dict, n_params, n_tokens):
    """L(N, D) = E + A/N^alpha + B/D^beta, broadcasting over arrays of parameters."""
    return law["E"] + law["A"] * np.power(n_params, -law["alpha"]) + law["B"] * np.power(
        n_tokens, -law["beta"]
    )


def parametric_frontier(law: dict, budget):
    """Minimiser of L on 6 N D = C: N* = G (C/6)^a, D* = (C/6)^b / G (Hoffmann et al. App. D.2)."""
    alpha, beta = law["alpha"], law["beta"]
    a = beta / (alpha + beta)
    b = alpha / (alpha + beta)
    g = np.power(alpha * law["A"] / (beta * law["B"]), 1.0 / (alpha + beta))
    half = np.asarray(budget, dtype=float) / 6.0
    return g * np.power(half, a), np.power(half, b) / g


def power_frontier(law: dict, budget):
    """Approaches 1 and 2: N* = k_params C^a and D* = k_tokens C^b (or C / 6N* without b).

    A wild bootstrap sample (inf k) gives inf/nan, which the percentile intervals drop."""
    with np.errstate(over="ignore", invalid="ignore"):
        n_params = law["k_params"] * np.power(budget, law["a"])
        if "k_tokens" in law and "b" in law:
            n_tokens = law["k_tokens"] * np.power(budget, law["b"])
        else:
            n_tokens = budget / (6.0 * n_params)
    return n_params, n_tokens


def compute_optimal_params_for_tokens(law: dict, unique_tokens):
    """The N whose compute-optimal token count equals `unique_tokens` (U_N of Muennighoff)."""
    alpha, beta = law["alpha"], law["beta"]
    a = beta / (alpha + beta)
    b = alpha / (alpha + beta)
    g = np.power(alpha * law["A"] / (beta * law["B"]), 1.0 / (alpha + beta))
    return g * np.power(g * unique_tokens, a / b)


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


# --------------------------------------------------------------------------- fit access


def _check_approach(fit: dict, approach: str) -> dict:
    if not isinstance(fit, dict):
        raise UserError("fit: expected a JSON object (the fit.json written by `scaling fit`)")
    if approach not in APPROACHES:
        raise UserError(f"approach: expected one of {', '.join(APPROACHES)}, got {approach!r}")
    block = fit.get(approach)
    keys = PARAMETRIC_KEYS if approach in PARAMETRIC else POWER_KEYS
    if not isinstance(block, dict):
        raise UserError(f"fit: no {approach!r} result in the fit; run `scaling fit --approach all`")
    if "error" in block:
        reason = str(block["error"]).splitlines()[0] if block["error"] else "unknown reason"
        raise UserError(f"fit.{approach}: could not be fitted on these data ({reason})")
    missing = [k for k in keys if not _finite(block.get(k))]
    if missing:
        raise UserError(f"fit.{approach}: missing or non-finite {', '.join(missing)}")
    return block


def _finite(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _law_point(block: dict, keys) -> dict:
    law = {k: np.array([float(block[k])]) for k in keys}
    for extra in ("k_tokens", "b"):
        if extra in keys or not _finite(block.get(extra)):
            continue
        law[extra] = np.array([float(block[extra])])
    return law


def _law_samples(block: dict, keys) -> dict | None:
    """The bootstrap samples of `keys` as equal-length arrays with failed resamples dropped."""
    boot = block.get("bootstrap")
    if not isinstance(boot, dict) or not isinstance(boot.get("samples"), dict):
        return None
    samples = boot["samples"]
    wanted = list(keys) + [k for k in ("k_tokens", "b") if k not in keys and k in samples]
    try:
        cols = [np.asarray(samples[k], dtype=float) for k in wanted]
    except (KeyError, TypeError, ValueError):
        return None
    if not cols or len({c.shape for c in cols}) != 1 or cols[0].ndim != 1:
        return None
    ok = np.all(np.isfinite(np.stack(cols)), axis=0)
    if ok.sum() < 2:
        return None
    return {k: c[ok] for k, c in zip(wanted, cols, strict=True)}


def _interval(values: np.ndarray, level: float) -> tuple[float, float] | None:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size < 2:
        return None
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return float(lo), float(hi)


# --------------------------------------------------------------------------- modes


def inference_aware(law: dict, budget: float, inference_tokens: float) -> dict:
    """Sardana et al. 2023: minimise 6 N D + 2 N T_inf subject to L(N, D) = L(N*, D*).

    Along the iso-loss curve D(N) = (B / (l - E - A N^-alpha))^(1/beta), the derivative of
    the total is 6 D (1 - q) + 2 T with q = (alpha/beta) A N^-alpha / (l - E - A N^-alpha).
    It tends to -inf where the curve has its asymptote (l - E = A N^-alpha) and equals 2 T
    at N* (where q = 1, the compute-optimal condition), so the optimum is the root in
    between, found by bisection on log N for every sample at once.
    """
    n_opt, d_opt = parametric_frontier(law, budget)
    target = parametric_loss(law, n_opt, d_opt)
    alpha, beta, big_a, big_b, e = (law[k] for k in ("alpha", "beta", "A", "B", "E"))
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
    law: dict,
    budget: float,
    unique_tokens: float,
    r_d_star: float = MUENNIGHOFF_R_D_STAR,
    r_n_star: float = MUENNIGHOFF_R_N_STAR,
) -> dict:
    """Muennighoff et al. 2023: on 6 N D = C, minimise E + A/N'^alpha + B/D'^beta.

    The search is a dense grid in log N around the unconstrained N* (it needs no convexity:
    the effective quantities are piecewise), refined once around the best grid cell.
    """
    n_opt, d_opt = parametric_frontier(law, budget)
    base_params = compute_optimal_params_for_tokens(law, unique_tokens)[:, None]
    col = {k: v[:, None] for k, v in law.items()}

    def loss_at(log_n):
        n_params = np.exp(log_n)
        n_tokens = budget / (6.0 * n_params)
        return parametric_loss(
            col,
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
    naive_loss = parametric_loss(
        law,
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
        "loss": parametric_loss(law, eff_params, eff_tokens),
        "compute_optimal_epochs": d_opt / unique_tokens,
        "compute_optimal_loss_repeated": naive_loss,
        "at_grid_edge": (best == 0) | (best == _GRID_POINTS - 1),
    }


# --------------------------------------------------------------------------- shape


def _solve_shape(n_params: float, vocab_size, seq_len, params_kind: str, train_flops: float):
    """Shape nearest to n_params from the foundation's solver; (None, note) if impossible."""
    if vocab_size is None or seq_len is None:
        return None, "no shape: vocabulary size or sequence length unknown"
    try:
        from scaling.shapes import solve_shape
    except ImportError:
        return None, "no shape: the shape solver (scaling.shapes.solve_shape) is unavailable"
    try:
        solved = solve_shape(int(round(n_params)), int(vocab_size), int(seq_len),
                             params_kind=params_kind)
    except (ValueError, UserError) as e:
        return None, f"no shape for {n_params:.3g} parameters: {str(e).splitlines()[0]}"
    cfg = solved.config
    shape = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    total = int(solved.n_params)
    non_embedding = getattr(solved, "n_params_non_embedding", None)
    counted = non_embedding if params_kind == "non_embedding" and non_embedding else total
    return {
        "shape": shape,
        "shape_params": total,
        "shape_params_non_embedding": None if non_embedding is None else int(non_embedding),
        "shape_rel_error": float(solved.rel_error),
        "shape_tokens": float(train_flops / (6.0 * counted)),
        "shape_recipe": getattr(solved, "recipe", None),
    }, None


# --------------------------------------------------------------------------- entry point


def recommend(
    fit: dict,
    budget: float,
    *,
    approach: str = "approach3",
    inference_tokens: float | None = None,
    unique_tokens: float | None = None,
    vocab_size: int | None = DEFAULT_VOCAB_SIZE,
    seq_len: int | None = DEFAULT_SEQ_LEN,
    level: float | None = None,
) -> Recommendation:
    """The plan for `budget` FLOPs from a fit dict (see the module docstring for the modes).

    `level` defaults to the bootstrap's own level (0.8 when the fit has none).
    """
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
    block = _check_approach(fit, approach)
    budget = float(budget)
    mode = "compute_optimal"
    if inference_tokens is not None:
        mode = "inference_aware"
    elif unique_tokens is not None:
        mode = "data_constrained"

    # The law that predicts loss: the approach's own when parametric, else approach 3's.
    law_name = approach if approach in PARAMETRIC else (
        "approach3" if isinstance(fit.get("approach3"), dict) else None)
    if mode != "compute_optimal" and approach not in PARAMETRIC:
        raise UserError(
            f"approach: the {mode.replace('_', '-')} mode needs a parametric law "
            f"(approach3 or vpnls), got {approach!r}")
    law_block = None
    if law_name is not None:
        try:
            law_block = _check_approach(fit, law_name)
        except UserError:
            law_block = None

    keys = PARAMETRIC_KEYS if approach in PARAMETRIC else POWER_KEYS
    point = _law_point(block, keys)
    samples = _law_samples(block, keys)
    boot = block.get("bootstrap") if isinstance(block.get("bootstrap"), dict) else {}
    if level is None:
        level = float(boot.get("level", DEFAULT_LEVEL)) if _finite(boot.get("level")) else (
            DEFAULT_LEVEL)
    law_point = _law_point(law_block, PARAMETRIC_KEYS) if law_block is not None else None
    law_samples = _law_samples(law_block, PARAMETRIC_KEYS) if law_block is not None else None
    if approach not in PARAMETRIC and law_samples is not None and samples is not None:
        # Pair power-law and parametric samples only when they are the same resamples.
        if len(next(iter(law_samples.values()))) != len(next(iter(samples.values()))):
            law_samples = None

    def evaluate(law, loss_law) -> dict:
        if approach in PARAMETRIC:
            n_params, n_tokens = parametric_frontier(law, budget)
        else:
            n_params, n_tokens = power_frontier(law, budget)
        out = {"n_params": n_params, "n_tokens": n_tokens, "tokens_per_param": n_tokens / n_params}
        if loss_law is not None:
            out["loss"] = parametric_loss(loss_law, n_params, n_tokens)
        if mode == "inference_aware":
            out["inference"] = inference_aware(law, budget, float(inference_tokens))
        elif mode == "data_constrained":
            out["data_constrained"] = data_constrained(law, budget, float(unique_tokens))
        return out

    got = evaluate(point, law_point)
    boot_got = None
    if samples is not None:
        boot_got = evaluate(samples, law_samples if approach not in PARAMETRIC else samples)

    def scalar(x):
        return float(np.asarray(x).reshape(-1)[0])

    ci: dict[str, tuple[float, float]] = {}

    def collect(prefix: str, values: dict, boot_values: dict | None) -> dict:
        result = {}
        for name, value in values.items():
            if isinstance(value, dict):
                continue
            if np.asarray(value).dtype == bool:
                result[name] = bool(np.asarray(value).reshape(-1)[0])
                continue
            result[name] = scalar(value)
            if name in _INPUTS:
                continue
            if boot_values is not None and name in boot_values:
                iv = _interval(boot_values[name], level)
                if iv is not None:
                    ci[prefix + name] = iv
        return result

    top = collect("", got, boot_got)
    compute_optimal = {k: top[k] for k in ("n_params", "n_tokens", "tokens_per_param", "loss")
                       if k in top}
    for k in list(compute_optimal):
        if k in ci:
            ci["compute_optimal." + k] = ci[k]
    notes: list[str] = []
    inference = constrained = None
    plan = dict(compute_optimal)
    if mode == "inference_aware":
        inference = collect("inference.", got["inference"],
                            boot_got["inference"] if boot_got else None)
        plan = {"n_params": inference["n_params"], "n_tokens": inference["n_tokens"],
                "tokens_per_param": inference["tokens_per_param"],
                "loss": inference["target_loss"]}
        for k, src in (("n_params", "n_params"), ("n_tokens", "n_tokens"),
                       ("tokens_per_param", "tokens_per_param"), ("loss", "target_loss")):
            if "inference." + src in ci:
                ci[k] = ci["inference." + src]
            else:
                ci.pop(k, None)
        notes.append(
            f"inference-aware (Sardana et al. 2023): same loss as the compute-optimal model, "
            f"trained on more tokens; training FLOPs {inference['train_flops']:.3g} "
            f"exceed the budget {budget:.3g} by design")
    elif mode == "data_constrained":
        constrained = collect("data_constrained.", got["data_constrained"],
                              boot_got["data_constrained"] if boot_got else None)
        constrained["r_d_star"] = MUENNIGHOFF_R_D_STAR
        constrained["r_n_star"] = MUENNIGHOFF_R_N_STAR
        plan = {"n_params": constrained["n_params"], "n_tokens": constrained["n_tokens"],
                "tokens_per_param": constrained["tokens_per_param"], "loss": constrained["loss"]}
        for k in ("n_params", "n_tokens", "tokens_per_param", "loss"):
            if "data_constrained." + k in ci:
                ci[k] = ci["data_constrained." + k]
            else:
                ci.pop(k, None)
        if constrained.pop("at_grid_edge", False):
            notes.append("data-constrained optimum at the edge of the searched range "
                         "(N* x 10^+-4): the law is flat there; treat N as a bound")
        if constrained["epochs"] > 4.0:
            notes.append(
                f"the plan repeats the data {constrained['epochs']:.1f} times; Muennighoff et "
                "al. found up to ~4 epochs almost as good as fresh data, and rapidly "
                "diminishing returns beyond ~16")

    n_boot = 0
    if samples is not None:
        n_boot = int(len(next(iter(samples.values()))))
    if plan.get("loss") is None:
        notes.append("no parametric law (approach 3) in the fit: no predicted loss")

    # The shape keeps the plan's training compute (above the budget in inference-aware mode).
    plan_flops = 6.0 * plan["n_params"] * plan["n_tokens"]
    shape_fields, shape_note = _solve_shape(
        plan["n_params"], vocab_size, seq_len, str(fit.get("params_kind") or "total"), plan_flops)
    if shape_note:
        notes.append(shape_note)
    convention = fit.get("convention")
    if approach in PARAMETRIC and convention not in (None, "6N"):
        notes.append(f"the parametric frontier assumes C = 6ND; the runs' FLOPs convention is "
                     f"{convention!r}")
    return Recommendation(
        budget=budget,
        approach=approach,
        mode=mode,
        params_kind=str(fit.get("params_kind") or "total"),
        convention=convention,
        n_params=plan["n_params"],
        n_tokens=plan["n_tokens"],
        tokens_per_param=plan["tokens_per_param"],
        loss=plan.get("loss"),
        level=level if n_boot else None,
        n_bootstrap=n_boot,
        ci=ci,
        compute_optimal=compute_optimal,
        inference=inference,
        data_constrained=constrained,
        notes=tuple(notes),
        **(shape_fields or {}),
    )
