"""Design checks on a sweep plan: what makes an IsoFLOP study unable to answer its question.

Each check yields a Finding. ``error`` findings refuse the plan (UserError); ``warning``
findings are printed by `scaling plan` / `scaling sweep` and refuse it only with
``checks.strict = true``:

- steps: a run with fewer than ``MIN_STEPS_ERROR`` (10) optimiser steps cannot warm up and
  decay: error. Fewer than ``checks.min_steps``: warning (its loss is dominated by the
  schedule, not by the model size).
- sizes: a budget with fewer than ``checks.min_sizes`` (5) sizes left after the grid's
  tolerance drops: warning (a parabola through 3-4 points has no redundancy).
- bracket: a budget whose smallest and largest sizes do not enclose the predicted optimum
  (the grid centre's prior, or the fit it was re-centred on): warning, since the minimum
  would then be an extrapolation.
- epochs: a run needing more passes over the unique training tokens than
  ``data.max_epochs``: error (only checked when max_epochs is set; it reads the corpus).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from scaling.config import DataConfig
from scaling.data import load_tokens
from scaling.errors import UserError

MIN_STEPS_ERROR = 10


@dataclass(frozen=True)
class Finding:
    level: str  # "warning" | "error"
    check: str  # "steps" | "sizes" | "bracket" | "epochs"
    message: str


def check_plan(plan, *, predicted: dict[float, float] | None = None,
               train_tokens: int | None = None) -> list[Finding]:
    """Findings for a sweeps.plan.SweepPlan; raises UserError on an error finding (or on a
    warning under checks.strict). `predicted` maps budget -> predicted optimal N (default:
    the Chinchilla prior, tokens_per_param tokens per parameter under C = 6ND);
    `train_tokens` overrides reading the corpus for the epochs check."""
    spec = plan.spec
    findings: list[Finding] = []
    by_budget: dict[float, list] = defaultdict(list)
    for r in plan.runs:
        by_budget[r.config.budget].append(r)

    too_short = [r for r in plan.runs if r.config.n_steps < MIN_STEPS_ERROR]
    if too_short:
        r = min(too_short, key=lambda r: r.config.n_steps)
        findings.append(Finding("error", "steps", (
            f"{len(too_short)} run(s) have fewer than {MIN_STEPS_ERROR} optimiser steps (fewest: "
            f"{r.config.n_steps} at budget {r.config.budget:.3g}, {r.planned.n_params} params); "
            f"raise the budget or lower the batch")))
    short = [r for r in plan.runs if MIN_STEPS_ERROR <= r.config.n_steps < spec.checks.min_steps]
    if short:
        r = min(short, key=lambda r: r.config.n_steps)
        findings.append(Finding("warning", "steps", (
            f"{len(short)} run(s) have fewer than checks.min_steps={spec.checks.min_steps} "
            f"steps (fewest: {r.config.n_steps} at budget {r.config.budget:.3g}, "
            f"{r.planned.n_params} params)")))

    for budget in spec.budgets:
        members = by_budget.get(budget, [])
        n_sizes = len({r.config.model for r in members})
        if n_sizes < spec.checks.min_sizes:
            findings.append(Finding("warning", "sizes", (
                f"budget {budget:.3g}: {n_sizes} sizes (< checks.min_sizes="
                f"{spec.checks.min_sizes}); the parabola through them has little redundancy")))
        if not members:
            continue
        n_opt = (predicted or {}).get(budget)
        if n_opt is None:
            n_opt = math.sqrt(budget / (6.0 * spec.grid.tokens_per_param))
        lo = min(r.planned.n_params for r in members)
        hi = max(r.planned.n_params for r in members)
        if not lo <= n_opt <= hi:
            findings.append(Finding("warning", "bracket", (
                f"budget {budget:.3g}: sizes {lo}..{hi} do not bracket the predicted optimum "
                f"of ~{n_opt:.3g} params; the minimum would be extrapolated")))

    if spec.data.max_epochs is not None and plan.runs:
        if train_tokens is None:
            train_tokens = _train_tokens(spec)
        worst = max(plan.runs, key=lambda r: r.config.n_tokens)
        epochs = worst.config.n_tokens / max(train_tokens, 1)
        if epochs > spec.data.max_epochs:
            findings.append(Finding("error", "epochs", (
                f"data.max_epochs: run {worst.run_name} needs {epochs:.3g} passes over the "
                f"{train_tokens} unique training tokens (> {spec.data.max_epochs:g}); use more "
                f"data, smaller budgets or raise data.max_epochs")))

    enforce(findings, strict=spec.checks.strict)
    return findings


def enforce(findings: list[Finding], *, strict: bool) -> None:
    for f in findings:
        if f.level == "error":
            raise UserError(f.message)
    if strict:
        for f in findings:
            raise UserError(f"{f.message} (checks.strict refuses warnings)")


def _train_tokens(spec) -> int:
    data = DataConfig(source=spec.data.source, tokenizer=spec.data.tokenizer,
                      eval_tokens=spec.data.eval_tokens, text_column=spec.data.text_column,
                      vocab_size=spec.data.vocab_size)
    return load_tokens(data, seq_len=spec.data.seq_len).n_train_tokens
