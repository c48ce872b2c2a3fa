"""The shape solver: a target parameter count -> a `ModelConfig` (scaling.model_config).

`solve_shape` turns a target parameter count into a shape of the model family under a named,
frozen recipe: a `ShapeRecipe` searches every (width, depth) for the closest count (the
"solver"), a `LadderRecipe` has one dial, depth, with width = aspect x depth rounded to the
head size (the "ladder": sizes along a grid are monotone in depth and width). `make_config`
applies a recipe to a given width and depth; `shape_recipe` looks one up by kind and aspect.
Parameter counts themselves live in `scaling.flops`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from scaling.errors import UserError, positive_number
from scaling.flops import param_counts
from scaling.model_config import MLP_KINDS, ModelConfig, mlp_matrices

# --------------------------------------------------------------------------------------
# The shape solver: target parameter count -> (n_layers, d_model, n_heads, head_dim, d_ff)
# --------------------------------------------------------------------------------------

PARAMS_KINDS = ("total", "non_embedding")
MAX_TARGET_PARAMS = 1e15


@dataclass(frozen=True)
class ShapeRecipe:
    """The opinions that turn a parameter count into a shape. A new rule needs a new name.

    Aspect ratio (d_model / n_layers). Kaplan et al. 2020 (Fig. 5) find loss nearly flat
    for aspect ratios from about 20 to 200; published families sit in 64-128: GPT-2/3 small
    768/12 = 64, Chinchilla's Table A9 runs 512/8 = 64 up to 5120/47 = 109, Chinchilla 70B
    8192/80 = 102, GPT-3 175B 12288/96 = 128. The target grows slowly with size:
    `aspect_ratio` at `aspect_anchor_params` non-embedding parameters, doubling every
    `aspect_doubling_decades` decades, clipped to [min_aspect, max_aspect]
    (1e4 -> 25, 1e6 -> 40, 1e8 -> 64, 1e9 -> 81, 1e10 -> 102, >= 1e11 -> 128).

    Widths: d_model a multiple of `width_multiple` (64) from `full_width_from` (256) up;
    below that, a multiple of its own head_dim (8, 16 or 32), so tiny models exist at all
    (with a 256-byte vocabulary and d_model 8, the embedding alone is 2K parameters).
    head_dim is `head_dim` (64) when d_model >= 4 * head_dim, else the largest power of two
    <= d_model / min_heads, at least `min_head_dim`. n_heads = d_model / head_dim.
    d_ff: `swiglu_ratio` (8/3) x d_model for SwiGLU (same parameters as a 4x two-matrix
    FFW), `gelu_ratio` (4) x d_model for GELU, rounded to `ffw_multiple` (64) from
    `ffw_multiple_from` (256) up, else to 8.

    Choice: among all (d_model, n_layers) with d_model/n_layers within `aspect_bounds`,
    the one minimising |log(count/target)| + aspect_weight * |log(aspect/target aspect)|:
    with weight 0.05 a factor-2 miss in aspect ratio costs as much as a 3.5% miss in
    parameters, so accuracy wins wherever the (width, depth) grid is dense, and the aspect
    ratio keeps tiny, embedding-dominated models from turning into one very wide layer or
    a tall stack of 8-wide ones. Measured worst |rel_error| with a 256-token vocabulary:
    17% below 1e5 parameters, 9.5% to 1e6, 6.4% to 1e7, 4.4% to 1e8, 2.5% to 1e9, 1.3%
    above (medians 0.1-4%); the solver always reports it. `param_tolerance` is how far
    below the smallest model a target may be before the solver refuses it.
    """

    name: str = "aspect64x2per3dec-v1"
    aspect_ratio: float = 64.0
    aspect_anchor_params: float = 1e8
    aspect_doubling_decades: float = 3.0
    min_aspect: float = 16.0
    max_aspect: float = 128.0
    aspect_bounds: tuple[float, float] = (1.0, 1024.0)
    head_dim: int = 64
    min_head_dim: int = 8
    min_heads: int = 4
    width_multiple: int = 64
    full_width_from: int = 256
    swiglu_ratio: float = 8.0 / 3.0
    gelu_ratio: float = 4.0
    ffw_multiple: int = 64
    ffw_multiple_from: int = 256
    small_ffw_multiple: int = 8
    aspect_weight: float = 0.05
    param_tolerance: float = 0.01
    max_layers: int = 1024

    def target_aspect(self, n_params_non_embedding: float) -> float:
        decades = math.log10(max(n_params_non_embedding, 1.0) / self.aspect_anchor_params)
        aspect = self.aspect_ratio * 2.0 ** (decades / self.aspect_doubling_decades)
        return min(max(aspect, self.min_aspect), self.max_aspect)

    def head_dim_for(self, d_model: int) -> int:
        if d_model >= self.min_heads * self.head_dim:
            return self.head_dim
        p = self.min_head_dim
        while p * 2 <= min(self.head_dim, d_model // self.min_heads):
            p *= 2
        return p

    def d_ff_for(self, d_model: int, mlp: str) -> int:
        ratio = self.swiglu_ratio if mlp == "swiglu" else self.gelu_ratio
        step = self.ffw_multiple if d_model >= self.ffw_multiple_from else self.small_ffw_multiple
        return max(step, int(math.floor(ratio * d_model / step + 0.5)) * step)

    def widths(self, limit: int) -> list[int]:
        """Allowed d_model values up to `limit`, ascending."""
        small = range(self.min_head_dim, min(self.full_width_from, limit + 1), self.min_head_dim)
        out = [d for d in small if d % self.head_dim_for(d) == 0]
        start = -(-self.full_width_from // self.width_multiple) * self.width_multiple
        out.extend(range(start, limit + 1, self.width_multiple))
        return out


SOLVER_RECIPE = ShapeRecipe()


@dataclass(frozen=True)
class LadderRecipe(ShapeRecipe):
    """One dial: depth. d_model = `ladder_aspect` x n_layers, rounded up to a multiple of its
    head_dim (the `ShapeRecipe` head rule: 64 from d_model 256 up, else a power of two
    <= d_model / 4, at least 8); heads = d_model / head_dim; d_ff by the `ShapeRecipe` rule.

    As in nanochat (`--depth` sets everything, width = 64 x depth) and the Pythia / OLMo
    ladders, every size of a study has the same aspect ratio, so depth and width grow
    together along a grid and an IsoFLOP curve compares models that differ in size only.
    A target parameter count gets the depth whose count is nearest in log; the grid's
    tokens absorb the miss (C / flops_per_token), so the FLOP budget is still met to 1%.
    The price is coarse sizes where depth is small: consecutive depths differ by
    ((L+1)/L)^3 in non-embedding parameters, so a grid of many sizes over a narrow span
    at depth < 10 repeats depths (the grid drops repeats and says so).

    Aspect: 64 is nanochat's and GPT-2/3 small's; byte-level models of 1e3-1e6 parameters
    need a small one (depth 1 at aspect 64 is already 65K parameters with 256 bytes), and
    8 gives the demo's budgets 5 distinct depths each (see BENCHMARKS.md, shape recipes).
    """

    name: str = "depth-ladder-a64-v1"
    ladder_aspect: float = 64.0

    def width_for_depth(self, n_layers: int) -> int:
        raw = max(self.min_head_dim, math.ceil(self.ladder_aspect * n_layers))
        width = -(-raw // self.head_dim_for(raw)) * self.head_dim_for(raw)
        while width % self.head_dim_for(width):  # MECHANICS: a crossed head-size threshold
            width += self.head_dim_for(raw)
        return width


SHAPE_KINDS = ("ladder", "solver")
DEFAULT_LADDER_ASPECT = 64.0


def shape_recipe(kind: str, aspect_ratio: float | None = None) -> ShapeRecipe:
    """The named recipe of a kind: "solver" (the exact-count search, no aspect option) or
    "ladder" at `aspect_ratio` (64 when None), named `depth-ladder-a<aspect>-v1`."""
    if kind == "solver":
        if aspect_ratio is not None:
            raise UserError("model.aspect_ratio: only the ladder recipe takes one "
                            "(the solver's aspect target grows with size)")
        return SOLVER_RECIPE
    if kind != "ladder":
        raise UserError(f"model.shape: expected one of {', '.join(SHAPE_KINDS)}, got {kind!r}")
    aspect = DEFAULT_LADDER_ASPECT if aspect_ratio is None else float(aspect_ratio)
    if not (math.isfinite(aspect) and 1 <= aspect <= 1024):
        raise UserError(f"model.aspect_ratio: expected a number in [1, 1024], got {aspect_ratio!r}")
    return LadderRecipe(name=f"depth-ladder-a{aspect:g}-v1", ladder_aspect=aspect)


DEFAULT_RECIPE = SOLVER_RECIPE


def recipe_named(name: str) -> ShapeRecipe:
    """The recipe a run recorded as its `shape_recipe` (the names `shape_recipe` gives)."""
    if name == SOLVER_RECIPE.name:
        return SOLVER_RECIPE
    match = re.fullmatch(r"depth-ladder-a(\d+(?:\.\d+)?)-v1", name)
    if match is None or not 1 <= float(match.group(1)) <= 1024:
        raise UserError(f"shape_recipe: unknown recipe {name!r} (expected {SOLVER_RECIPE.name!r} "
                        "or 'depth-ladder-a<aspect in [1, 1024]>-v1')")
    return shape_recipe("ladder", float(match.group(1)))


@dataclass(frozen=True)
class SolvedShape:
    config: ModelConfig
    n_params: int  # total
    n_params_non_embedding: int
    target_params: float
    params_kind: str  # which count `target_params` and `rel_error` refer to
    rel_error: float  # (count of params_kind) / target_params - 1
    recipe: str


def make_config(d_model: int, n_layers: int, vocab_size: int, seq_len: int, *,
                mlp: str = "swiglu", tie_embeddings: bool = True, qk_norm: bool = False,
                recipe: ShapeRecipe = DEFAULT_RECIPE) -> ModelConfig:
    """The recipe's ModelConfig for a given width and depth (heads and d_ff derived)."""
    head_dim = recipe.head_dim_for(d_model)
    if d_model % head_dim:
        raise ValueError(f"d_model: {d_model} is not a multiple of head_dim {head_dim} "
                         f"under recipe {recipe.name}")
    return ModelConfig(vocab_size=vocab_size, seq_len=seq_len, n_layers=n_layers,
                       d_model=d_model, n_heads=d_model // head_dim, head_dim=head_dim,
                       d_ff=recipe.d_ff_for(d_model, mlp), mlp=mlp,
                       tie_embeddings=tie_embeddings, qk_norm=qk_norm)


def solve_shape(target_params: float, vocab_size: int, seq_len: int, *,
                params_kind: str = "total", mlp: str = "swiglu", tie_embeddings: bool = True,
                qk_norm: bool = False, recipe: ShapeRecipe = DEFAULT_RECIPE) -> SolvedShape:
    """The recipe's shape whose parameter count (of `params_kind`) is closest to the target.

    Raises UserError when the target is not a finite positive number, is below the smallest
    model of this vocabulary (d_model = 8, one layer) by more than the recipe's tolerance,
    or above MAX_TARGET_PARAMS.
    """
    target = _checked_target(target_params, params_kind, mlp, vocab_size, seq_len)
    n_mats = mlp_matrices(mlp)
    embed_factor = 0 if params_kind == "non_embedding" else (1 if tie_embeddings else 2)
    qk = 2 if qk_norm else 0

    def fixed_and_per_layer(d: int) -> tuple[int, int]:
        # MECHANICS: the same sums as flops.param_counts, split into depth-free and per-layer.
        hd = recipe.head_dim_for(d)
        per_layer = 4 * d * d + n_mats * d * recipe.d_ff_for(d, mlp) + 2 * d + qk * hd
        return embed_factor * vocab_size * d + d, per_layer

    if isinstance(recipe, LadderRecipe):
        d_model, n_layers = _ladder_choice(recipe, target, fixed_and_per_layer, params_kind,
                                           vocab_size)
        return _solved(d_model, n_layers, target, vocab_size, seq_len, params_kind, mlp,
                       tie_embeddings, qk_norm, recipe)

    lo_aspect, hi_aspect = recipe.aspect_bounds
    # Widths past the one where even the thinnest allowed stack overshoots cannot help.
    width_limit = max(recipe.full_width_from,
                      int((hi_aspect * target / (4 + 2 * n_mats)) ** (1 / 3)) + recipe.width_multiple)
    candidates: list[tuple[float, float, int, int]] = []  # (cost, rel_error, d_model, n_layers)
    for d in recipe.widths(width_limit):
        fixed, per_layer = fixed_and_per_layer(d)
        if fixed + per_layer > target * 4 and candidates:
            break
        fewest = max(1, math.ceil(d / hi_aspect))
        most = min(recipe.max_layers, math.floor(d / lo_aspect))
        if fewest > most:
            continue
        exact_layers = (target - fixed) / per_layer
        for n_layers in {math.floor(exact_layers), math.ceil(exact_layers)}:
            n_layers = min(max(n_layers, fewest), most)
            count = fixed + n_layers * per_layer
            non_embedding = count - embed_factor * vocab_size * d
            # RECIPE: log-distance to the target count plus a weighted log-distance to the
            # target aspect ratio, so accuracy wins unless the shape would be lopsided.
            aspect_miss = abs(math.log(d / n_layers / recipe.target_aspect(non_embedding)))
            cost = abs(math.log(count / target)) + recipe.aspect_weight * aspect_miss
            candidates.append((cost, abs(count / target - 1), d, n_layers))

    smallest = sum(fixed_and_per_layer(recipe.min_head_dim))
    if target < smallest * (1 - recipe.param_tolerance) or not candidates:
        raise UserError(
            f"target_params: {target:.4g} is below the smallest model for vocab_size="
            f"{vocab_size} ({smallest} {params_kind} parameters at d_model="
            f"{recipe.min_head_dim}, one layer)")
    _, _, d_model, n_layers = min(candidates)
    return _solved(d_model, n_layers, target, vocab_size, seq_len, params_kind, mlp,
                   tie_embeddings, qk_norm, recipe)


def _checked_target(target_params: float, params_kind: str, mlp: str, vocab_size: int,
                    seq_len: int) -> float:
    target = positive_number(target_params, "target_params")
    if target > MAX_TARGET_PARAMS:
        raise UserError(f"target_params: {target:.3g} is above the largest supported model "
                        f"({MAX_TARGET_PARAMS:.0e} parameters)")
    if params_kind not in PARAMS_KINDS:
        raise UserError(f"params_kind: expected one of {', '.join(PARAMS_KINDS)}, got {params_kind!r}")
    if mlp not in MLP_KINDS:
        raise UserError(f"mlp: expected one of {', '.join(MLP_KINDS)}, got {mlp!r}")
    for name, value in (("vocab_size", vocab_size), ("seq_len", seq_len)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"{name}: expected a positive integer, got {value!r}")
    return target


def _ladder_choice(recipe: LadderRecipe, target: float, fixed_and_per_layer, params_kind: str,
                   vocab_size: int) -> tuple[int, int]:
    """RECIPE: the depth whose count is nearest the target in log (counts grow with depth)."""
    def count(n_layers: int) -> int:
        fixed, per_layer = fixed_and_per_layer(recipe.width_for_depth(n_layers))
        return fixed + n_layers * per_layer

    smallest = count(1)
    if target < smallest * (1 - recipe.param_tolerance):
        raise UserError(
            f"target_params: {target:.4g} is below the smallest model of {recipe.name} for "
            f"vocab_size={vocab_size} ({smallest} {params_kind} parameters at depth 1, "
            f"d_model={recipe.width_for_depth(1)})")
    n_layers = 1
    while n_layers < recipe.max_layers and count(n_layers + 1) <= target:
        n_layers += 1
    if n_layers < recipe.max_layers and (math.log(count(n_layers + 1) / target)
                                         < math.log(target / count(n_layers))):
        n_layers += 1
    return recipe.width_for_depth(n_layers), n_layers


def _solved(d_model: int, n_layers: int, target: float, vocab_size: int, seq_len: int,
            params_kind: str, mlp: str, tie_embeddings: bool, qk_norm: bool,
            recipe: ShapeRecipe) -> SolvedShape:
    cfg = make_config(d_model, n_layers, vocab_size, seq_len, mlp=mlp,
                      tie_embeddings=tie_embeddings, qk_norm=qk_norm, recipe=recipe)
    counts = param_counts(cfg)
    achieved = counts["total"] if params_kind == "total" else counts["non_embedding"]
    return SolvedShape(config=cfg, n_params=counts["total"],
                       n_params_non_embedding=counts["non_embedding"], target_params=target,
                       params_kind=params_kind, rel_error=achieved / target - 1,
                       recipe=recipe.name)
