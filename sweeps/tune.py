"""A spec's `[tune]` block: learning-rate sweeps at a few small cells, then a fitted law.

Each cell (target N, tokens per parameter) is solved to a shape under the spec's shape
recipe, given the FLOPs that train it on N x tokens_per_param tokens (rounded to whole
batches, within 1% as every grid run), and trained at base lr x each of
`tune.lr_multipliers`, where the base lr is what the spec's recipe (or its fixed optim.lr)
gives that run. The runs live in ``<runs_dir>/<name>-tune/`` (claimed like a sweep, so a
rerun resumes); each run's config.json records its recipe with the multiplier.
`analysis.lr_law` then fits each cell's optimum with a bracket check and lr*(N, D) across
the bracketed cells, and the law is saved (atomically) at
``<runs_dir>/<name>-tune/lr_law.json``, where ``optim.recipe = "fitted:<name>"`` of this or
any later spec finds it (sweeps.hparams.fitted_recipe) -- `scaling plan` included.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path

from analysis.lr_law import LrLaw, fit_cell, fit_lr_law
from scaling import runs
from scaling.errors import UserError
from scaling.fileio import atomic_write_json
from scaling.flops import flops_per_token
from scaling.shapes import solve_shape
from sweeps import hparams
from sweeps.grid import plan_sizes
from sweeps.launch.local import run_local
from sweeps.ownership import claim_sweep_dir
from sweeps.plan import PlannedConfig, run_config
from sweeps.spec import SweepSpec


def tune_sweep_name(spec: SweepSpec) -> str:
    return f"{spec.name}-tune"


def _base_recipe(spec: SweepSpec) -> hparams.Recipe:
    if spec.optim.recipe.startswith(hparams.FITTED_PREFIX):
        raise UserError("optim.recipe: a [tune] block tunes around a named recipe (deepseek, "
                        "tiny-bytes, constant), not a fitted one; the fitted recipe is its output")
    return hparams.with_overrides(hparams.get_recipe(spec.optim.recipe),
                                  dict(spec.optim.overrides))


def plan_tune(spec: SweepSpec) -> list[PlannedConfig]:
    """Every tuning run: cells in spec order, multipliers ascending within a cell."""
    if spec.tune is None:
        return []
    recipe = _base_recipe(spec)
    seq_len, vocab = spec.data.seq_len, spec.vocab_size
    shape_options = dict(mlp=spec.model.mlp, tie_embeddings=spec.model.tie_embeddings,
                         qk_norm=spec.model.qk_norm, recipe=spec.model.shape_recipe)
    out = []
    for i, (n_target, tokens_per_param) in enumerate(spec.tune.cells):
        where = f"tune.cells[{i}]"
        try:
            shape = solve_shape(n_target, vocab, seq_len, **shape_options)
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
        budget = (flops_per_token(shape.config, spec.convention) * tokens_per_param
                  * shape.n_params)
        _, batch = hparams.choose(recipe, budget, seq_len, batch_size=spec.optim.batch_size)
        plan = plan_sizes(budget, [n_target], convention=spec.convention, vocab_size=vocab,
                          seq_len=seq_len, batch_size=batch, **shape_options)
        if not plan.runs:
            raise UserError(f"{where}: {plan.dropped[0].reason}")
        point = plan.runs[0]
        seed = spec.seeds[0]
        base_lr = run_config(spec, recipe, point, batch, seed).config.optim.lr
        for mult in spec.tune.lr_multipliers:
            spec_m = replace(spec, optim=replace(spec.optim, lr=base_lr * mult))
            run = run_config(spec_m, recipe, point, batch, seed)
            out.append(PlannedConfig(planned=point,
                                     config=run.config.with_(sweep=tune_sweep_name(spec)),
                                     recipe=f"{recipe.name}[tune lr x{mult:g}]"))
    return out


def fit_tune(spec: SweepSpec, runs_dir: str | os.PathLike,
             planned: list[PlannedConfig] | None = None) -> LrLaw:
    """Fit and save the law from the finished tuning runs under `runs_dir`; a run that
    diverged counts as an infinite loss (it brackets the optimum from above), one that is
    missing is left out. Raises UserError when no cell is bracketed."""
    if spec.tune is None:
        raise UserError(f"{spec.name}: no [tune] block to fit")
    planned = plan_tune(spec) if planned is None else planned
    by_cell: dict[tuple[float, float], list[tuple[float, float]]] = {}
    for r in planned:
        run_dir = runs.run_dir_for(runs_dir, r.config)
        result = runs.read_result(run_dir) if run_dir.is_dir() else None
        status = (runs.read_status(run_dir) or {}).get("state") if run_dir.is_dir() else None
        if result is not None and result.get("eval_loss") is not None:
            loss = float(result["eval_loss"])
        elif status == "diverged":
            loss = math.inf
        else:
            continue
        by_cell.setdefault((r.planned.n_params, r.planned.n_tokens), []).append(
            (r.config.optim.lr, loss))
    cells = [fit_cell(n, d, *zip(*points, strict=True)) for (n, d), points in by_cell.items()]
    try:
        law = fit_lr_law(cells, name=f"{hparams.FITTED_PREFIX}{spec.name}",
                         base_recipe=spec.optim.recipe, n_boot=spec.tune.bootstrap,
                         level=spec.tune.level, seed=spec.seeds[0])
    except ValueError as e:
        raise UserError(f"tune: {e}") from None
    path = hparams.law_path(spec.name, runs_dir)
    atomic_write_json(path, law.to_dict())
    return law


def run_tune(spec: SweepSpec, runs_dir: str | os.PathLike, *, workers: int | None = None,
             train_cmd=None, on_update=None, force: bool = False) -> LrLaw:
    """Prepare, train (locally) and fit the spec's tuning runs; resumable like a sweep."""
    planned = plan_tune(spec)
    if not planned:
        raise UserError("tune: the spec has no [tune] block")
    runs_dir = Path(runs_dir)
    claim_sweep_dir(runs_dir, tune_sweep_name(spec), spec.digest(), spec.to_dict(), force=force)
    dirs = [runs.init_run_dir(runs_dir, r.config, recipe=r.recipe) for r in planned]
    for d in dirs:
        if runs.read_config_json(d).get("shape_recipe") != spec.model.shape_recipe.name:
            runs.update_config_fields(d, shape_recipe=spec.model.shape_recipe.name)
    run_local(dirs, workers=workers or spec.launcher.workers,
              threads_per_worker=spec.launcher.threads_per_worker, train_cmd=train_cmd,
              on_update=on_update, group_replicas=spec.launcher.group_replicas)
    return fit_tune(spec, runs_dir, planned)


def format_law(law: LrLaw) -> str:
    """Plain lines: each cell's optimum (or why it is not trusted), then the law."""
    lines = []
    for c in law.cells:
        if c.bracketed:
            lines.append(f"tune N={c.n_params:.3g} D={c.n_tokens:.3g}: lr* = {c.lr_opt:.3g}")
        else:
            lines.append(f"tune: not trusted: {c.message}")
    lo, hi = law.n_exp_interval
    dlo, dhi = law.d_exp_interval
    lines.append(f"{law.name}: lr*(N, D) = {law.coef:.4g} N^{law.n_exp:.3f} [{lo:.3f}, {hi:.3f}]"
                 f" D^{law.d_exp:.3f} [{dlo:.3f}, {dhi:.3f}] ({law.level:.0%} bootstrap, "
                 f"{law.n_boot} resamples)")
    return "\n".join(lines)


__all__ = ["fit_tune", "format_law", "plan_tune", "run_tune", "tune_sweep_name"]
