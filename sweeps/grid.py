"""IsoFLOP grid planning: for a FLOP budget, model sizes around the optimum, each a real shape.

Pure functions, no I/O. For one budget C under a FLOP convention:
  1. RECIPE: the centre size N_c is the total parameter count at which a model trained on
     `tokens_per_param` (20, Chinchilla's rule of thumb) tokens per parameter spends C,
     using that convention's exact FLOPs per token of the solved shape (a few fixed-point
     steps from the 6N guess sqrt(C / 120)); `center_params` overrides it.
  2. RECIPE: `n_sizes` targets log-spaced over a factor `span` centred on N_c.
  3. MECHANICS: each target is solved to a shape (`scaling.shapes.solve_shape`).
  4. MECHANICS: tokens = C / flops_per_token, exact, then rounded to a whole number of
     `seq_len * batch_size` tokens (whole sequences when batch_size is None; the sweep
     layer that picks a batch must pass it here or re-check the tolerance).
  5. MECHANICS: achieved FLOPs are recomputed from the rounded tokens; a candidate whose
     FLOPs miss C by more than `tolerance` (1%), that needs less than one sequence, that
     falls below the smallest model, or that repeats a neighbour's shape is dropped, and
     the drop is reported in `BudgetPlan.dropped` with its reason.
`plan_budget_full` does all five steps and refuses a budget left with fewer than MIN_SIZES
runs; `plan_sizes` does steps 3-5 for a caller's own list of sizes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from scaling.errors import UserError, positive_number
from scaling.flops import check_convention, flops_per_token, param_counts
from scaling.model_config import DEFAULT_SEQ_LEN
from scaling.shapes import (
    DEFAULT_RECIPE,
    LadderRecipe,
    ModelConfig,
    ShapeRecipe,
    make_config,
    solve_shape,
)

MAX_BUDGET = 1e30
MIN_SIZES = 3


@dataclass(frozen=True)
class PlannedRun:
    budget: float  # nominal FLOP budget
    n_params: int  # total parameters of the solved shape
    n_params_non_embedding: int
    config: ModelConfig
    n_tokens: int  # a whole number of seq_len * batch_size tokens
    tokens_per_param: float  # n_tokens / n_params (total)
    flops: float  # achieved training FLOPs under `convention`
    rel_error: float  # flops / budget - 1
    convention: str
    target_params: float  # the size this run was solved for

    def to_dict(self) -> dict:
        return {
            "budget": self.budget, "n_params": self.n_params,
            "n_params_non_embedding": self.n_params_non_embedding,
            "n_layers": self.config.n_layers, "d_model": self.config.d_model,
            "n_heads": self.config.n_heads, "n_tokens": self.n_tokens,
            "tokens_per_param": self.tokens_per_param, "flops": self.flops,
            "rel_error": self.rel_error, "convention": self.convention,
            "target_params": self.target_params, "config": self.config.to_dict(),
        }


@dataclass(frozen=True)
class Dropped:
    budget: float
    target_params: float
    reason: str


@dataclass(frozen=True)
class BudgetPlan:
    budget: float
    center_params: float | None  # None for plan_sizes
    runs: tuple[PlannedRun, ...]
    dropped: tuple[Dropped, ...] = field(default=())


def _check_budget(budget: float, where: str = "budget") -> float:
    value = positive_number(budget, where, " of FLOPs")
    if value > MAX_BUDGET:
        raise UserError(f"{where}: expected at most {MAX_BUDGET:.0e} FLOPs, got {value:.3g}")
    return value


def _center_params(budget: float, convention: str, tokens_per_param: float, solve) -> float:
    # RECIPE: N with flops_per_token(shape(N)) * tokens_per_param * N = budget.
    n_params = math.sqrt(budget / (6.0 * tokens_per_param))
    for _ in range(4):
        shape = solve(n_params)
        per_param = flops_per_token(shape.config, convention) / shape.n_params
        n_params = math.sqrt(budget / (per_param * tokens_per_param))
    return n_params


def _check_options(convention, vocab_size, seq_len, batch_size, tolerance) -> str:
    convention = check_convention(convention)
    if not (isinstance(tolerance, (int, float)) and 0 < tolerance < 1):
        raise UserError(f"tolerance: expected a fraction in (0, 1), got {tolerance!r}")
    for name, value in (("vocab_size", vocab_size), ("seq_len", seq_len),
                        ("batch_size", 1 if batch_size is None else batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"{name}: expected a positive integer, got {value!r}")
    return convention


def _plan_targets(budget: float, targets, convention: str, vocab_size: int, seq_len: int,
                  batch_size: int | None, tolerance: float, shape_options: dict):
    unit = seq_len * (batch_size or 1)
    runs: list[PlannedRun] = []
    dropped: list[Dropped] = []
    seen: set[ModelConfig] = set()
    for target in targets:
        try:
            shape = solve_shape(target, vocab_size, seq_len, **shape_options)
        except UserError as e:
            dropped.append(Dropped(budget, target, str(e)))
            continue
        cfg = shape.config
        if cfg in seen:
            dropped.append(Dropped(budget, target, "same shape as a neighbouring size"))
            continue
        per_token = flops_per_token(cfg, convention)
        n_units = round(budget / per_token / unit)  # MECHANICS: round, then re-check
        if n_units < 1:
            dropped.append(Dropped(budget, target, f"needs less than {unit} tokens"))
            continue
        n_tokens = n_units * unit
        flops = per_token * n_tokens
        rel_error = flops / budget - 1
        if abs(rel_error) > tolerance:
            dropped.append(Dropped(budget, target, f"FLOPs off the budget by {rel_error:+.2%} "
                                                   f"after rounding to {unit} tokens"))
            continue
        seen.add(cfg)
        runs.append(PlannedRun(budget=budget, n_params=shape.n_params,
                               n_params_non_embedding=shape.n_params_non_embedding, config=cfg,
                               n_tokens=n_tokens, tokens_per_param=n_tokens / shape.n_params,
                               flops=flops, rel_error=rel_error, convention=convention,
                               target_params=target))
    return runs, dropped


def plan_budget_full(budget: float, *, n_sizes: int = 7, span: float = 30.0,
                     convention: str = "6N", vocab_size: int = 256, seq_len: int = DEFAULT_SEQ_LEN,
                     tokens_per_param: float = 20.0, center_params: float | None = None,
                     batch_size: int | None = None, tolerance: float = 0.01,
                     mlp: str = "swiglu", tie_embeddings: bool = True, qk_norm: bool = False,
                     recipe: ShapeRecipe = DEFAULT_RECIPE) -> BudgetPlan:
    """Plan one budget's IsoFLOP grid; see the module docstring. Raises UserError on bad
    input, including a budget that leaves fewer than MIN_SIZES usable sizes."""
    budget = _check_budget(budget)
    convention = _check_options(convention, vocab_size, seq_len, batch_size, tolerance)
    if not isinstance(n_sizes, int) or isinstance(n_sizes, bool) or n_sizes < MIN_SIZES:
        raise UserError(f"sizes: expected an integer >= {MIN_SIZES}, got {n_sizes!r}")
    if not (isinstance(span, (int, float)) and math.isfinite(span) and span > 1):
        raise UserError(f"span: expected a number > 1 (max/min size ratio), got {span!r}")
    if not (isinstance(tokens_per_param, (int, float)) and math.isfinite(tokens_per_param)
            and tokens_per_param > 0):
        raise UserError(f"tokens_per_param: expected a positive number, got {tokens_per_param!r}")
    shape_options: dict = dict(mlp=mlp, tie_embeddings=tie_embeddings, qk_norm=qk_norm, recipe=recipe)

    min_budget = smallest_budget(convention=convention, vocab_size=vocab_size, seq_len=seq_len,
                                 tokens_per_param=tokens_per_param, **shape_options)
    if budget < min_budget:
        raise UserError(
            f"budget: {budget:.3g} FLOPs is below what the smallest model can use "
            f"(about {min_budget:.2g} under {convention} for vocab_size={vocab_size}, "
            f"seq_len={seq_len}, {tokens_per_param:g} tokens per parameter)")

    if center_params is None:
        center = _center_params(
            budget, convention, tokens_per_param,
            lambda target: solve_shape(target, vocab_size, seq_len, **shape_options))
    else:
        center = float(center_params)
        if not math.isfinite(center) or center <= 0:
            raise UserError(f"center_params: expected a positive number, got {center_params!r}")

    # RECIPE: log-spaced over [center / sqrt(span), center * sqrt(span)].
    targets = [center * span ** (i / (n_sizes - 1) - 0.5) for i in range(n_sizes)]
    runs, dropped = _plan_targets(budget, targets, convention, vocab_size, seq_len,
                                  batch_size, tolerance, shape_options)
    if len(runs) < MIN_SIZES:
        raise UserError(f"budget: {budget:.3g} FLOPs leaves only {len(runs)} usable model "
                        f"sizes (need >= {MIN_SIZES}); use a larger budget or a smaller span")
    return BudgetPlan(budget=budget, center_params=center, runs=tuple(runs),
                      dropped=tuple(dropped))


def plan_sizes(budget: float, targets, *, convention: str = "6N", vocab_size: int = 256,
               seq_len: int = DEFAULT_SEQ_LEN, batch_size: int | None = None, tolerance: float = 0.01,
               mlp: str = "swiglu", tie_embeddings: bool = True, qk_norm: bool = False,
               recipe: ShapeRecipe = DEFAULT_RECIPE) -> BudgetPlan:
    """The grid's mechanics (steps 3-5) for the caller's own target sizes: each solved,
    tokens rounded, FLOPs re-checked, misses dropped with a reason. No minimum count of
    surviving sizes; `center_params` of the result is None."""
    budget = _check_budget(budget)
    convention = _check_options(convention, vocab_size, seq_len, batch_size, tolerance)
    shape_options: dict = dict(mlp=mlp, tie_embeddings=tie_embeddings, qk_norm=qk_norm, recipe=recipe)
    runs, dropped = _plan_targets(budget, list(targets), convention, vocab_size, seq_len,
                                  batch_size, tolerance, shape_options)
    return BudgetPlan(budget=budget, center_params=None, runs=tuple(runs), dropped=tuple(dropped))


def smallest_budget(*, convention: str = "6N", vocab_size: int = 256, seq_len: int = DEFAULT_SEQ_LEN,
                    tokens_per_param: float = 20.0, mlp: str = "swiglu",
                    tie_embeddings: bool = True, qk_norm: bool = False,
                    recipe: ShapeRecipe = DEFAULT_RECIPE) -> float:
    """FLOPs the smallest model of the recipe spends at `tokens_per_param` (>= one sequence).

    Budgets below this cannot be centred on any real model.
    """
    d_model = (recipe.width_for_depth(1) if isinstance(recipe, LadderRecipe)
               else recipe.min_head_dim)
    cfg = make_config(d_model, 1, vocab_size, seq_len, mlp=mlp, tie_embeddings=tie_embeddings,
                      qk_norm=qk_norm, recipe=recipe)
    n_tokens = max(seq_len, tokens_per_param * param_counts(cfg)["total"])
    return flops_per_token(cfg, check_convention(convention)) * n_tokens


_RUN_NAME = re.compile(
    r"^(?:c(?P<budget>\d\.\de[+-]\d+)_)?n(?P<n_params>\d+)_d(?P<n_tokens>\d\.\de[+-]\d+)"
    r"_L(?P<n_layers>\d+)_D(?P<d_model>\d+)_(?P<digest>[0-9a-f]{8})$")


def parse_run_name(name: str) -> dict:
    """Invert `RunConfig.run_name()`.

    Returns {"budget": float | None, "n_params": int, "n_tokens": float, "n_layers": int,
    "d_model": int, "digest": str}. budget and n_tokens carry the name's 2 significant
    digits only; the digest identifies the full config.
    """
    match = _RUN_NAME.match(name) if isinstance(name, str) else None
    if match is None:
        raise UserError(f"run name: {name!r} is not of the form "
                        "[c<budget>_]n<params>_d<tokens>_L<layers>_D<width>_<8 hex digits>")
    g = match.groupdict()
    return {"budget": float(g["budget"]) if g["budget"] else None,
            "n_params": int(g["n_params"]), "n_tokens": float(g["n_tokens"]),
            "n_layers": int(g["n_layers"]), "d_model": int(g["d_model"]),
            "digest": g["digest"]}


__all__ = ["MAX_BUDGET", "MIN_SIZES", "BudgetPlan", "Dropped", "PlannedRun",
           "parse_run_name", "plan_budget_full", "plan_sizes", "smallest_budget"]
