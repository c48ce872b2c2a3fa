"""From a validated sweep spec to the RunConfigs of every run, with design findings.

Per budget: the batch comes from the hyper-parameter recipe (sweeps.hparams) evaluated at
the budget, the IsoFLOP sizes and token counts from sweeps.grid (sizes log-spaced around
the Chinchilla prior, FLOPs within 1% after rounding to whole batches), then the learning
rate and warmup per run. With ``schedule.kind = "wsd"`` and ``share_stable``, runs of the
same shape share one stable phase (see `wsd_groups`) and the plan reports the FLOPs saved.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace

import numpy as np

from scaling.config import DataConfig, OptimConfig, RunConfig, ScheduleConfig
from scaling.errors import UserError, positive_number
from scaling.flops import flops_per_token
from scaling.runs import iter_runs
from sweeps import hparams
from sweeps.checks import check_plan
from sweeps.grid import PlannedRun, plan_budget_full, plan_sizes
from sweeps.spec import SweepSpec


@dataclass(frozen=True)
class PlannedConfig:
    """One run of a sweep: the grid point (`planned`, a sweeps.grid.PlannedRun) and its config."""

    planned: PlannedRun
    config: RunConfig
    recipe: str
    branch_of: str | None = None  # WSD: run name of the stable run this one branches from
    branch_step: int | None = None  # WSD: the step it starts from (its cooldown's start)
    keep_steps: tuple[int, ...] = ()  # WSD stable run: branch points to checkpoint and keep

    @property
    def run_name(self) -> str:
        return self.config.run_name()

    @property
    def flops(self) -> float:
        return self.planned.flops

    @property
    def trained_flops(self) -> float:
        """FLOPs this run itself costs (a WSD branch skips its shared stable prefix)."""
        if self.branch_step is None:
            return self.planned.flops
        return self.planned.flops * (1 - self.branch_step / self.config.n_steps)


@dataclass(frozen=True)
class SweepPlan:
    spec: SweepSpec
    runs: tuple[PlannedConfig, ...]
    dropped: tuple = ()
    findings: tuple = field(default=())

    @property
    def total_flops(self) -> float:
        return sum(r.flops for r in self.runs)

    @property
    def trained_flops(self) -> float:
        return sum(r.trained_flops for r in self.runs)


def plan_sweep(spec: SweepSpec, *, centers: dict[float, float] | None = None,
               check: bool = True, runs_dir=None) -> SweepPlan:
    """Plan every run of `spec`. `centers` maps a budget to a centre size (re-centring on an
    earlier fit); other budgets use the Chinchilla prior. Raises UserError when a design
    check refuses the plan (see sweeps.checks)."""
    recipe = hparams.with_overrides(hparams.get_recipe(spec.optim.recipe, runs_dir=runs_dir),
                                    dict(spec.optim.overrides))
    seq_len = spec.data.seq_len
    vocab = spec.vocab_size
    runs: list[PlannedConfig] = []
    dropped: list = []
    for budget in spec.budgets:
        _, batch = hparams.choose(recipe, budget, seq_len, batch_size=spec.optim.batch_size)
        kwargs: dict = dict(convention=spec.convention, vocab_size=vocab, seq_len=seq_len,
                      tokens_per_param=spec.grid.tokens_per_param, batch_size=batch,
                      mlp=spec.model.mlp, tie_embeddings=spec.model.tie_embeddings,
                      qk_norm=spec.model.qk_norm, recipe=spec.model.shape_recipe)
        try:
            if spec.grid.params is not None:
                kwargs.pop("tokens_per_param")
                grid = plan_sizes(budget, spec.grid.params, **kwargs)
            else:
                grid = plan_budget_full(budget, n_sizes=spec.grid.sizes, span=spec.grid.span,
                                        center_params=(centers or {}).get(budget), **kwargs)
        except UserError as e:
            raise UserError(f"budgets: {str(e).removeprefix('budget: ')}") from None
        dropped.extend(grid.dropped)
        for p in grid.runs:
            for seed in spec.seeds:
                runs.append(run_config(spec, recipe, p, batch, seed))
    if spec.schedule.kind == "wsd" and spec.schedule.share_stable:
        runs = share_stable_phases(runs)
    plan = SweepPlan(spec=spec, runs=tuple(runs), dropped=tuple(dropped))
    if check:
        plan = SweepPlan(spec=spec, runs=plan.runs, dropped=plan.dropped,
                         findings=tuple(check_plan(plan, predicted=centers)))
    return plan


def run_config(spec: SweepSpec, recipe: hparams.Recipe, p, batch: int, seed: int) -> PlannedConfig:
    """The planned run of grid point `p` at `batch` and `seed` (lr, warmup, weight decay
    and beta2 from `recipe` unless the spec fixes them); sweeps.tune plans its lr cells by it."""
    n_steps = p.n_tokens // (batch * spec.data.seq_len)
    lr, _ = hparams.choose(recipe, p.budget, spec.data.seq_len, d_model=p.config.d_model,
                           lr=spec.optim.lr, batch_size=batch, n_params=p.n_params,
                           n_tokens=p.n_tokens)
    batch_tokens = batch * spec.data.seq_len
    warmup = (spec.schedule.warmup_steps if spec.schedule.warmup_steps is not None
              else recipe.warmup_steps(n_steps, n_params=p.n_params, batch_tokens=batch_tokens))
    warmup = min(warmup, n_steps)
    # explicit spec values win over the recipe's rules (as lr and batch_size do)
    weight_decay = (spec.optim.weight_decay if spec.optim.weight_decay is not None
                    else recipe.weight_decay_for(lr, n_steps))
    beta2 = spec.optim.beta2 if spec.optim.beta2 is not None else recipe.beta2_for(batch_tokens)
    sched = ScheduleConfig(kind=spec.schedule.kind, warmup_steps=warmup,
                           final_lr_frac=spec.schedule.final_lr_frac,
                           decay_frac=spec.schedule.decay_frac)
    optim = OptimConfig(lr=lr, weight_decay=weight_decay, beta1=spec.optim.beta1,
                        beta2=beta2, grad_clip=spec.optim.grad_clip,
                        z_loss=spec.optim.z_loss)
    data = DataConfig(source=spec.data.source, tokenizer=spec.data.tokenizer,
                      eval_tokens=spec.data.eval_tokens, max_epochs=spec.data.max_epochs,
                      text_column=spec.data.text_column, vocab_size=spec.data.vocab_size,
                      eval_sets=spec.data.eval_sets, tasks=spec.data.tasks)
    model = p.config
    if spec.model.parameterization != "sp":
        model = replace(model, parameterization=spec.model.parameterization,
                        base_width=spec.model.base_width)
    cfg = RunConfig(model=model, data=data, optim=optim, schedule=sched, batch_size=batch,
                    grad_accum=spec.train.grad_accum, n_steps=n_steps, seed=seed,
                    eval_every=spec.train.eval_every, log_every=spec.train.log_every,
                    checkpoint_every=spec.train.checkpoint_every, sweep=spec.name,
                    budget=p.budget, convention=spec.convention)
    return PlannedConfig(planned=p, config=cfg, recipe=recipe.name)


def share_stable_phases(runs: list[PlannedConfig]) -> list[PlannedConfig]:
    """WSD: group runs that differ only in length (same model, data, optimiser, batch, seed,
    warmup); the longest of a group is the stable run, checkpointed at every other member's
    cooldown start, and each other member branches from it there, training only its
    cooldown. Members keep their own config (their own D), so each is its own run.

    Groups form when a shape recurs across budgets with the same lr and batch: explicit
    `grid.params` with a recipe whose lr and batch do not depend on C (or fixed lr/batch).
    """
    from scaling.schedules import branch_schedule  # imports JAX: only when a WSD plan shares

    groups: dict = {}
    for i, r in enumerate(runs):
        c = r.config
        key = (c.model, c.data, c.optim, c.batch_size, c.grad_accum, c.seed, c.schedule.decay_frac)
        groups.setdefault(key, []).append(i)
    out = list(runs)
    for members in groups.values():
        # one warmup for the group (the shortest member's), so the stable prefixes agree
        warmup = min(runs[i].config.schedule.warmup_steps for i in members)
        for i in members:
            cfg = runs[i].config
            sched = branch_schedule(replace(cfg.schedule, warmup_steps=warmup), n_steps=cfg.n_steps)
            out[i] = PlannedConfig(planned=runs[i].planned, recipe=runs[i].recipe,
                                   config=cfg.with_(schedule=sched))
    for members in groups.values():
        longest = max(members, key=lambda i: out[i].config.n_steps)
        source = out[longest].config
        keep = []
        for i in members:
            cfg = out[i].config
            start = cfg.schedule.stable_steps
            if i == longest or cfg.n_steps == source.n_steps or not 0 < start <= source.schedule.stable_steps:
                continue
            keep.append(start)
            out[i] = PlannedConfig(planned=out[i].planned, config=cfg, recipe=out[i].recipe,
                                   branch_of=source.run_name(), branch_step=start)
        if keep:
            out[longest] = PlannedConfig(planned=out[longest].planned, config=source,
                                         recipe=out[longest].recipe,
                                         keep_steps=tuple(sorted(set(keep))))
    return out


def wsd_savings(plan: SweepPlan) -> float:
    """FLOPs the shared stable phases save (0 without WSD sharing)."""
    return plan.total_flops - plan.trained_flops


def measured_throughput(runs_dir: str | os.PathLike | None,
                        convention: str = "6N") -> list[tuple[float, float]]:
    """(FLOPs per token, tokens/s) of every finished run under `runs_dir` (this device's
    measured throughput, the calibration cache that a sweep builds as it goes): the rate the
    trainer wrote in result.json, else the one its metrics.jsonl logged."""
    if runs_dir is None or not os.path.isdir(runs_dir):
        return []
    points = []
    for r in iter_runs(runs_dir, throughput=True):
        rate = (r.result.tokens_per_s or r.measured_tokens_per_s) if r.result else None
        per_token = r.flops.get(convention, 0) / (r.n_tokens or float("inf"))
        if rate and per_token and rate > 0 and per_token > 0:
            points.append((float(per_token), float(rate)))
    return points


def estimate_wall_time(plan: SweepPlan, *, tokens_per_second: float | None = None,
                       runs_dir=None, workers: int = 1) -> dict:
    """Wall time of each run and of the sweep.

    With `tokens_per_second` every run trains at that rate. Otherwise the rate comes from
    finished runs under `runs_dir` on this device: a power law tokens/s = k * (FLOPs per
    token)^e fitted in log space (e clipped to [-1.5, 0]; with one run, e = -1, i.e. constant
    FLOP/s). A WSD branch only trains its cooldown. Returns {"per_run_s": [...],
    "total_s", "device_hours", "wall_s" (total / workers), "source"}; the times are None
    when nothing is known (pass --tokens-per-second).
    """
    convention = plan.spec.convention
    trained = [r.config.n_tokens * (r.trained_flops / r.flops if r.flops else 1.0)
               for r in plan.runs]
    if tokens_per_second is not None:
        positive_number(tokens_per_second, "--tokens-per-second")
        rates = [float(tokens_per_second)] * len(plan.runs)
        source = "override"
    else:
        points = measured_throughput(runs_dir, convention)
        if not points:
            return {"per_run_s": [None] * len(plan.runs), "total_s": None,
                    "device_hours": None, "wall_s": None, "source": None}
        x, y = np.log(np.array(points)).T  # log FLOPs per token, log tokens/s
        if len(points) >= 2 and np.ptp(x) > 0:
            slope, intercept = np.polyfit(x, y, 1)
            slope = float(np.clip(slope, -1.5, 0.0))
            intercept = float(np.mean(y - slope * x))
        else:
            slope, intercept = -1.0, float(np.mean(y + x))
        rates = [math.exp(intercept + slope * math.log(flops_per_token(r.config.model, convention)))
                 for r in plan.runs]
        source = f"measured ({len(points)} finished runs)"
    per_run = [t / rate for t, rate in zip(trained, rates, strict=True)]
    total = sum(per_run)
    return {"per_run_s": per_run, "total_s": total, "device_hours": total / 3600,
            "wall_s": total / max(1, workers), "source": source}


def plan_summary(plan: SweepPlan, *, tokens_per_second: float | None = None, runs_dir=None,
                 workers: int | None = None) -> dict:
    """What `scaling plan SPEC` prints under the table: FLOPs (and what WSD sharing saves),
    the wall-time estimate, dropped sizes and design findings."""
    workers = workers or plan.spec.launcher.workers
    est = estimate_wall_time(plan, tokens_per_second=tokens_per_second, runs_dir=runs_dir,
                             workers=workers)
    return {
        "runs": len(plan.runs),
        "total_flops": plan.total_flops,
        "trained_flops": plan.trained_flops,
        "wsd_saved_flops": wsd_savings(plan),
        "wsd_branches": sum(1 for r in plan.runs if r.branch_of),
        "wall_time": {k: v for k, v in est.items() if k != "per_run_s"},
        "per_run_s": est["per_run_s"],
        "dropped": [{"budget": d.budget, "target_params": d.target_params, "reason": d.reason}
                    for d in plan.dropped],
        "findings": [{"level": f.level, "check": f.check, "message": f.message}
                     for f in plan.findings],
    }


def format_summary(summary: dict) -> str:
    """Plain lines for `plan_summary`."""
    lines = [f"{summary['runs']} runs, {summary['total_flops']:.4g} FLOPs of results"]
    if summary["wsd_saved_flops"]:
        lines.append(f"WSD: {summary['wsd_branches']} runs branch from a shared stable run; "
                     f"{summary['trained_flops']:.4g} FLOPs trained, "
                     f"{summary['wsd_saved_flops']:.4g} saved "
                     f"({100 * summary['wsd_saved_flops'] / summary['total_flops']:.1f}%)")
    wall = summary["wall_time"]
    if wall["total_s"] is None:
        lines.append("wall time: unknown (pass --tokens-per-second, or finish a few runs)")
    else:
        lines.append(f"wall time ({wall['source']}): {wall['device_hours']:.3g} device-hours, "
                     f"~{wall['wall_s'] / 3600:.3g} h with the spec's workers")
    for f in summary["findings"]:
        lines.append(f"{f['level']}: {f['message']}")
    return "\n".join(lines)
