"""Per-run learning rate, batch size and warmup from a named rule (a frozen recipe).

A sweep's hyper-parameters come from one of the recipes below, never from constants at a
call site; the recipe's name goes into every run's config.json so a fit can say which rule
produced its points. Two kinds of rule are provided:

``deepseek``
    DeepSeek LLM (Bi et al. 2024, "Scaling Open-Source Language Models with Longtermism",
    section 3.1, fitted on their IsoFLOP runs from 1e17 to 2e19 FLOPs):
    ``lr = 0.3118 * C**-0.1250`` and ``B = 0.2920 * C**0.3271`` tokens per step, with C the
    training compute in FLOPs. The batch in sequences is ``B / seq_len`` rounded to a power
    of two. Extrapolated to tiny CPU budgets (1e11 FLOPs) it asks for lr ~0.013 and ~1.2K
    tokens per step, which is close to what was measured to work for byte-level 4K-200K
    parameter models on the stdlib corpus (issue 7: lr ~1e-2, batch 4 x 128), so the same
    rule serves both ends; the clamps guard the extremes.
``tiny-bytes``
    The constants measured for tiny byte-level CPU models (issue 7): lr 1e-2, 4 sequences,
    whatever the budget. Use it for demos where a fixed batch keeps steps comparable.
``constant``
    Whatever lr and batch the spec states (overrides are required).
``fitted:<sweep>``
    The lr law lr*(N, D[, B]) that spec `<sweep>`'s ``[tune]`` block fitted (sweeps.tune), found at
    ``<runs dir>/<sweep>-tune/lr_law.json`` (the runs dir: ``--runs-dir`` of ``scaling plan``
    / ``scaling sweep``, else ``$SCALING_RUNS_DIR``, else ``runs``); warmup as the recipe
    that tuning used, and the batch too unless the block tuned batch sizes: then the
    fitted B*(C) tokens per step (rounded and clamped as every recipe's batch, with the
    clamps widened to [1, 4096] sequences), and the lr at that batch.

Warmup is a fraction of the run's own steps, clamped, so short and long runs of one sweep
spend the same share of their horizon warming up.

Porian et al. 2024 ("Resolving Discrepancies in Compute-Optimal Scaling of Language
Models", sections 3-4) trace most of the Kaplan/Chinchilla gap to three settings; each is a
recipe option (off by default, so existing recipes keep their names and runs), set in the
spec's ``[optim]`` table like the clamps, and marked in the recipe name that config.json
records (the values themselves land in its ``optim`` and ``schedule``):

``warmup_tokens_per_param = k``
    warmup bounded by k x N tokens (N: total parameters; Porian use k = 1): a 5K-parameter
    model does not spend 5% of 10K steps warming up when 10 steps would do.
``beta2_ref_tokens = T`` (with ``beta2_ref``, default 0.95)
    AdamW beta2 by batch size, keeping the second-moment average's horizon fixed in tokens:
    ``beta2 = beta2_ref ** (batch_tokens / T)``, clamped to [beta2_min, beta2_max]. Porian
    find beta2 = 0.95 costly at small batches (<= ~100K tokens) and 0.99-0.999 right there;
    with T = 524288 (256 x 2048) this gives 0.95 at 512K tokens per step, 0.994 at 64K, 0.999
    (the clamp) below ~10K.
``wd_timescale = tau``
    weight decay as an AdamW timescale (Wang & Aitchison 2024; Porian section 4.3 keep
    decay's effect comparable across horizons): the EMA timescale of AdamW's weights,
    1 / (lr x wd) steps, is held at a fraction tau of the run, so
    ``wd = 1 / (tau x lr x n_steps)``, clamped to [0, wd_max]. (lr 1e-2, wd 0.1 over 11K
    steps is tau = 0.09; lr 3e-4, wd 0.1 over 100K steps is tau = 0.33.)
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from analysis import lr_law
from analysis.lr_law import LrLaw
from scaling.errors import UserError


@dataclass(frozen=True)
class Recipe:
    """A named rule for lr, batch and warmup. Each field is part of the rule's identity."""

    name: str
    description: str
    lr_coef: float
    """lr = lr_coef * C**lr_exp (C: run FLOPs under the sweep's convention)."""
    lr_exp: float
    batch_tokens_coef: float
    """tokens per optimiser step = batch_tokens_coef * C**batch_tokens_exp."""
    batch_tokens_exp: float
    lr_min: float = 1e-5
    lr_max: float = 3e-2
    """tiny models tolerate large rates, but beyond ~3e-2 AdamW runs diverge here."""
    batch_min: int = 1
    """in sequences."""
    batch_max: int = 4096
    batch_pow2: bool = True
    """round the batch to a power of two (device efficiency, and fewer distinct shapes)."""
    lr_width_exp: float = 0.0
    """per-size factor (lr_width_ref / d_model)**lr_width_exp on top of the C rule (muP-like;
    0 keeps one lr per budget, as DeepSeek's fit does)."""
    lr_width_ref: int = 256
    warmup_frac: float = 0.05
    warmup_min: int = 1
    warmup_max: int = 2000
    weight_decay: float = 0.1
    """AdamW's decoupled decay (matrices only); the spec's optim.weight_decay wins over it."""
    warmup_tokens_per_param: float | None = None
    """Porian: warmup at most this many tokens per (total) parameter; None: no bound."""
    beta2: float = 0.95
    """AdamW beta2 when beta2_ref_tokens is None (the spec's optim.beta2 wins over both)."""
    beta2_ref: float = 0.95
    beta2_ref_tokens: float | None = None
    """Porian: beta2 = beta2_ref ** (batch_tokens / beta2_ref_tokens); None: fixed beta2."""
    beta2_min: float = 0.9
    beta2_max: float = 0.999
    wd_timescale: float | None = None
    """AdamW timescale 1 / (lr wd) as a fraction of the run's steps; None: fixed weight_decay."""
    wd_max: float = 1.0

    def lr(self, flops: float, d_model: int | None = None, *, n_params: float | None = None,
           n_tokens: float | None = None, batch_tokens: float | None = None) -> float:
        """Peak learning rate for a run of ``flops`` FLOPs, clamped to [lr_min, lr_max]
        (``n_params``, ``n_tokens`` and ``batch_tokens`` serve fitted laws, see
        `FittedRecipe`)."""
        raw = self.lr_coef * flops ** self.lr_exp
        if d_model is not None and self.lr_width_exp:
            raw *= (self.lr_width_ref / d_model) ** self.lr_width_exp
        return float(min(max(raw, self.lr_min), self.lr_max))

    def batch_tokens(self, flops: float) -> float:
        """Unclamped tokens per optimiser step."""
        return float(self.batch_tokens_coef * flops ** self.batch_tokens_exp)

    def batch_size(self, flops: float, seq_len: int) -> int:
        """Sequences per optimiser step, rounded (to a power of two if asked) and clamped."""
        sequences = max(self.batch_tokens(flops) / seq_len, 1.0)
        if self.batch_pow2:
            n = 2 ** round(math.log2(sequences))
        else:
            n = round(sequences)
        return int(min(max(n, self.batch_min), self.batch_max))

    def warmup_steps(self, n_steps: int, *, n_params: int | None = None,
                     batch_tokens: int | None = None) -> int:
        """Warmup steps for a run of ``n_steps``: a fixed share of the run, clamped, at most
        ``warmup_tokens_per_param * n_params`` tokens when that bound is set (it needs
        ``n_params`` and ``batch_tokens``, tokens per step), and never more than half of it."""
        w = round(self.warmup_frac * n_steps)
        w = min(max(w, self.warmup_min), self.warmup_max)
        if self.warmup_tokens_per_param is not None:
            if n_params is None or batch_tokens is None:
                raise ValueError("warmup_steps: warmup_tokens_per_param needs n_params and "
                                 "batch_tokens")
            w = min(w, max(1, math.ceil(self.warmup_tokens_per_param * n_params / batch_tokens)))
        return int(max(0, min(w, n_steps // 2)))

    def beta2_for(self, batch_tokens: float) -> float:
        """AdamW beta2 for ``batch_tokens`` tokens per step (fixed unless beta2_ref_tokens)."""
        if self.beta2_ref_tokens is None:
            return float(self.beta2)
        b = self.beta2_ref ** (batch_tokens / self.beta2_ref_tokens)
        return float(min(max(b, self.beta2_min), self.beta2_max))

    def weight_decay_for(self, lr: float, n_steps: int) -> float:
        """AdamW weight decay for a run of ``n_steps`` at peak ``lr`` (fixed unless
        wd_timescale: then 1 / (wd_timescale * lr * n_steps), clamped to [0, wd_max])."""
        if self.wd_timescale is None:
            return float(self.weight_decay)
        return float(min(1.0 / (self.wd_timescale * lr * max(n_steps, 1)), self.wd_max))


DEEPSEEK = Recipe(
    name="deepseek",
    description="DeepSeek LLM power laws in C: lr=0.3118 C^-0.125, B=0.2920 C^0.3271 tokens",
    lr_coef=0.3118, lr_exp=-0.1250, batch_tokens_coef=0.2920, batch_tokens_exp=0.3271,
)

TINY_BYTES = Recipe(
    name="tiny-bytes",
    description="measured for byte-level 4K-200K parameter CPU models: lr 1e-2, 4 x seq_len tokens",
    lr_coef=1e-2, lr_exp=0.0, batch_tokens_coef=0.0, batch_tokens_exp=0.0,
    batch_min=4, batch_max=4,
)

CONSTANT = Recipe(
    name="constant",
    description="lr and batch exactly as the spec states",
    lr_coef=3e-3, lr_exp=0.0, batch_tokens_coef=0.0, batch_tokens_exp=0.0,
    batch_min=16, batch_max=16,
)

RECIPES: dict[str, Recipe] = {r.name: r for r in (DEEPSEEK, TINY_BYTES, CONSTANT)}
FITTED_PREFIX = "fitted:"
RUNS_DIR_ENV = "SCALING_RUNS_DIR"  # where "fitted:<sweep>" laws are found (default ./runs)


@dataclass(frozen=True)
class FittedRecipe(Recipe):
    """A base recipe whose lr is a law fitted by a `[tune]` block (sweeps.tune):
    lr = law_coef * N**law_n_exp * D**law_d_exp * B**law_b_exp (N total parameters, D tokens
    of the run, B tokens per step), clamped as usual; warmup and the Porian options stay the
    base recipe's, and the batch too unless the law fitted B*(C) (then batch_tokens_coef
    and batch_tokens_exp are its coefficients)."""

    law_coef: float = 0.0
    law_n_exp: float = 0.0
    law_d_exp: float = 0.0
    law_b_exp: float = 0.0

    def lr(self, flops: float, d_model: int | None = None, *, n_params: float | None = None,
           n_tokens: float | None = None, batch_tokens: float | None = None) -> float:
        if n_params is None or n_tokens is None:  # a budget-level call (for the batch):
            return super().lr(flops, d_model)   # the base rule; runs always pass N and D
        raw = lr_law.power_law_lr(
            self.name, (self.law_coef, self.law_n_exp, self.law_d_exp, self.law_b_exp),
            n_params, n_tokens, batch_tokens)
        return min(max(raw, self.lr_min), self.lr_max)


def default_runs_dir() -> Path:
    """Where "fitted:<sweep>" laws are looked for without a --runs-dir: $SCALING_RUNS_DIR,
    else ./runs."""
    return Path(os.environ.get(RUNS_DIR_ENV) or "runs")


def law_path(sweep: str, runs_dir=None) -> Path:
    """Where the tune block of spec `sweep` saves its law: <runs_dir>/<sweep>-tune/lr_law.json."""
    root = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    return root / f"{sweep}-tune" / "lr_law.json"


def read_law(path: Path, where: str = "optim.recipe") -> LrLaw:
    """The law saved at `path`; a file that is not one is a one-line UserError."""
    return lr_law.read_law(path, where)


def fitted_recipe(sweep: str, where: str = "optim.recipe", runs_dir=None) -> FittedRecipe:
    path = law_path(sweep, runs_dir)
    if not path.is_file():
        raise UserError(f"{where}: no fitted lr law for sweep {sweep!r} at {path} (run the "
                        f"spec with its [tune] block first, or point --runs-dir (or "
                        f"${RUNS_DIR_ENV}) at the runs dir that holds {sweep}-tune/)")
    law = read_law(path, where)
    base = get_recipe(law.base_recipe, where)
    fields_ = {k: v for k, v in asdict(base).items() if k not in ("name", "description")}
    batch_text = f"batch as {base.name}"
    if law.batch is not None:
        fields_.update(batch_tokens_coef=law.batch.coef, batch_tokens_exp=law.batch.exp,
                       batch_min=Recipe.batch_min, batch_max=Recipe.batch_max)
        batch_text = f"B = {law.batch.coef:.4g} C^{law.batch.exp:.3f} tokens"
    b_term = f" B^{law.b_exp:.3f}" if law.b_exp else ""
    return FittedRecipe(**fields_, name=f"{FITTED_PREFIX}{sweep}",
                        description=f"lr = {law.coef:.4g} N^{law.n_exp:.3f} D^{law.d_exp:.3f}"
                                    f"{b_term} (fitted by {sweep}'s [tune]); {batch_text}",
                        law_coef=law.coef, law_n_exp=law.n_exp, law_d_exp=law.d_exp,
                        law_b_exp=law.b_exp)


OVERRIDABLE = ("lr_min", "lr_max", "batch_min", "batch_max", "batch_pow2", "warmup_frac",
               "warmup_min", "warmup_max", "weight_decay", "lr_width_exp", "lr_width_ref",
               "warmup_tokens_per_param", "beta2_ref", "beta2_ref_tokens", "beta2_min",
               "beta2_max", "wd_timescale", "wd_max")


def get_recipe(name: str, where: str = "optim.recipe", runs_dir=None) -> Recipe:
    """A named recipe; "fitted:<sweep>" is read from `runs_dir` (default: `default_runs_dir`)."""
    if isinstance(name, str) and name.startswith(FITTED_PREFIX):
        return fitted_recipe(name[len(FITTED_PREFIX):], where, runs_dir)
    try:
        return RECIPES[name]
    except KeyError:
        raise UserError(f"{where}: unknown recipe {name!r} (expected one of "
                        f"{', '.join(RECIPES)})") from None


def with_overrides(recipe: Recipe, overrides: dict[str, Any], where: str = "optim") -> Recipe:
    """The recipe with some clamps changed; it keeps its name plus a marker, since a changed
    rule is a different rule."""
    known = {f.name for f in fields(Recipe)}
    for key in overrides:
        if key not in OVERRIDABLE or key not in known:
            raise UserError(f"{where}.{key}: not an overridable recipe field (expected one of "
                            f"{', '.join(OVERRIDABLE)})")
    if not overrides:
        return recipe
    suffix = ",".join(f"{k}={overrides[k]}" for k in sorted(overrides))
    return replace(recipe, name=f"{recipe.name}[{suffix}]", **overrides)


def choose(recipe: Recipe, flops: float, seq_len: int, *, d_model: int | None = None,
           lr: float | None = None, batch_size: int | None = None,
           n_params: float | None = None, n_tokens: float | None = None) -> tuple[float, int]:
    """(lr, batch_size) for a run of ``flops`` FLOPs; explicit values win over the rule (a
    fitted lr at the chosen batch)."""
    chosen_batch = recipe.batch_size(flops, seq_len) if batch_size is None else int(batch_size)
    chosen_lr = (recipe.lr(flops, d_model, n_params=n_params, n_tokens=n_tokens,
                           batch_tokens=chosen_batch * seq_len)
                 if lr is None else float(lr))
    return chosen_lr, chosen_batch
