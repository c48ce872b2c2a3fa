"""A spec's `[tune]` block: learning-rate (and batch) sweeps at a few small cells, then a law.

Each cell (target N, tokens per parameter) is solved to a shape under the spec's shape
recipe, given the FLOPs that train it on N x tokens_per_param tokens (rounded to whole
batches, within 1% as every grid run), and trained at base lr x each of
`tune.lr_multipliers`, where the base lr is what the tuned recipe (`tune.recipe`, default
the spec's optim.recipe, or its fixed optim.lr) gives that run; at the recipe's batch, or
at each of `tune.batch_sizes` (a grid lr x batch per cell). The runs live in
``<runs_dir>/<name>-tune/`` (claimed like a sweep, so a rerun resumes); each run's
config.json records its recipe with the multiplier (and batch). `analysis.lr_law` then fits
each cell's optimum with a bracket check and lr*(N, D[, B]) across the bracketed cells (and
B*(C) with batch sizes), and the law is saved (atomically) at
``<runs_dir>/<name>-tune/lr_law.json``, where ``optim.recipe = "fitted:<name>"`` of this or
any later spec finds it (sweeps.hparams.fitted_recipe) -- `scaling plan --runs-dir` included.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path

from analysis.lr_law import TUNE_SUFFIX, LrLaw, batch_cells_of, fit_cell, fit_lr_law
from scaling import runs
from scaling.errors import UserError
from scaling.fileio import atomic_write_json
from scaling.flops import flops_per_token
from scaling.shapes import solve_shape
from sweeps import hparams
from sweeps.grid import plan_sizes
from sweeps.launch.local import run_local
from sweeps.ownership import claim_sweep_dir
from sweeps.plan import PlannedConfig, SweepPlan, run_config
from sweeps.spec import SweepSpec


def tune_sweep_name(spec: SweepSpec) -> str:
    return spec.name + TUNE_SUFFIX


def _base_recipe(spec: SweepSpec) -> hparams.Recipe:
    assert spec.tune is not None
    name = spec.tune.recipe or spec.optim.recipe
    if name.startswith(hparams.FITTED_PREFIX):
        raise UserError("tune.recipe: a [tune] block tunes around a named recipe (deepseek, "
                        "tiny-bytes, constant), not a fitted one; the fitted recipe is its output")
    return hparams.with_overrides(hparams.get_recipe(name, "tune.recipe"),
                                  dict(spec.optim.overrides))


def plan_tune(spec: SweepSpec) -> list[PlannedConfig]:
    """Every tuning run: cells in spec order, then batch sizes ascending (one, the recipe's,
    without tune.batch_sizes), then multipliers ascending."""
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
        batches = spec.tune.batch_sizes or (
            hparams.choose(recipe, budget, seq_len, batch_size=spec.optim.batch_size)[1],)
        for batch in batches:
            plan = plan_sizes(budget, [n_target], convention=spec.convention, vocab_size=vocab,
                              seq_len=seq_len, batch_size=batch, **shape_options)
            if not plan.runs:
                at = f" at batch {batch}" if spec.tune.batch_sizes else ""
                raise UserError(f"{where}{at}: {plan.dropped[0].reason}")
            point = plan.runs[0]
            seed = spec.seeds[0]
            base_lr = run_config(spec, recipe, point, batch, seed).config.optim.lr
            for mult in spec.tune.lr_multipliers:
                spec_m = replace(spec, optim=replace(spec.optim, lr=base_lr * mult))
                run = run_config(spec_m, recipe, point, batch, seed)
                label = (f"tune lr x{mult:g}, batch {batch}" if spec.tune.batch_sizes
                         else f"tune lr x{mult:g}")
                out.append(PlannedConfig(planned=point,
                                         config=run.config.with_(sweep=tune_sweep_name(spec)),
                                         recipe=f"{recipe.name}[{label}]"))
    return out


def fit_tune(spec: SweepSpec, runs_dir: str | os.PathLike,
             planned: list[PlannedConfig] | None = None) -> LrLaw:
    """Fit and save the law from the finished tuning runs under `runs_dir`; a run that
    diverged counts as an infinite loss (it brackets the optimum from above), one that is
    missing is left out. Raises UserError when no cell is bracketed."""
    if spec.tune is None:
        raise UserError(f"{spec.name}: no [tune] block to fit")
    planned = plan_tune(spec) if planned is None else planned
    # a cell is (N, its FLOPs); with batch sizes, one sub-cell per batch
    by_cell: dict[tuple[float, float, int], list[tuple[float, float, float]]] = {}
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
        key = (r.planned.n_params, r.planned.budget, r.config.batch_size)
        by_cell.setdefault(key, []).append((r.config.optim.lr, loss, r.planned.n_tokens))
    seq_len = spec.data.seq_len
    cells = [fit_cell(n, max(p[2] for p in points), [p[0] for p in points],
                      [p[1] for p in points], batch_tokens=float(batch * seq_len), flops=budget)
             for (n, budget, batch), points in by_cell.items()]
    try:
        law = fit_lr_law(cells, name=f"{hparams.FITTED_PREFIX}{spec.name}",
                         base_recipe=spec.tune.recipe or spec.optim.recipe,
                         n_boot=spec.tune.bootstrap, level=spec.tune.level, seed=spec.seeds[0])
    except ValueError as e:
        raise UserError(f"tune: {e}") from None
    path = hparams.law_path(spec.name, runs_dir)
    atomic_write_json(path, law.to_dict())
    return law


def run_tune(spec: SweepSpec, runs_dir: str | os.PathLike, *, workers: int | None = None,
             train_cmd=None, on_update=None, on_plan=None, force: bool = False) -> LrLaw:
    """Prepare, train (locally) and fit the spec's tuning runs; resumable like a sweep.
    `on_plan(plan, dirs)` sees the tuning runs as a plan of sweep ``<name>-tune``."""
    planned = plan_tune(spec)
    if not planned:
        raise UserError("tune: the spec has no [tune] block")
    runs_dir = Path(runs_dir)
    claim_sweep_dir(runs_dir, tune_sweep_name(spec), spec.digest(), spec.to_dict(), force=force)
    dirs = [runs.init_run_dir(runs_dir, r.config, recipe=r.recipe) for r in planned]
    for d in dirs:
        if runs.read_config_json(d).get("shape_recipe") != spec.model.shape_recipe.name:
            runs.update_config_fields(d, shape_recipe=spec.model.shape_recipe.name)
    if on_plan is not None:
        on_plan(SweepPlan(spec=replace(spec, name=tune_sweep_name(spec)), runs=tuple(planned)),
                dirs)
    run_local(dirs, workers=workers or spec.launcher.workers,
              threads_per_worker=spec.launcher.threads_per_worker, train_cmd=train_cmd,
              on_update=on_update, group_replicas=spec.launcher.group_replicas)
    return fit_tune(spec, runs_dir, planned)


def format_law(law: LrLaw, path: str | os.PathLike | None = None) -> str:
    """Plain lines: each cell's optimum (or why it is not trusted), then the law (and B*(C))."""
    lines = []
    batch_cells = batch_cells_of(law)
    for c in law.cells:
        at = f" B={c.batch_tokens:.4g}" if c.batch_tokens is not None and batch_cells else ""
        if c.bracketed:
            lines.append(f"tune N={c.n_params:.3g} D={c.n_tokens:.3g}{at}: lr* = {c.lr_opt:.3g}")
        else:
            lines.append(f"tune: not trusted: {c.message}")
    for b in batch_cells:
        if b.bracketed:
            lines.append(f"tune N={b.n_params:.3g} C={b.flops:.3g}: B* = {b.batch_opt:.4g} "
                         "tokens per step")
        else:
            lines.append(f"tune: batch not trusted: {b.message}")
    lo, hi = law.n_exp_interval
    dlo, dhi = law.d_exp_interval
    b_term = ""
    if law.b_exp:
        blo, bhi = law.b_exp_interval
        b_term = f" B^{law.b_exp:.3f} [{blo:.3f}, {bhi:.3f}]"
    lines.append(f"{law.name}: lr*(N, D{', B' if law.b_exp else ''}) = {law.coef:.4g} "
                 f"N^{law.n_exp:.3f} [{lo:.3f}, {hi:.3f}] D^{law.d_exp:.3f} [{dlo:.3f}, {dhi:.3f}]"
                 f"{b_term} ({law.level:.0%} bootstrap, {law.n_boot} resamples)")
    if law.batch is not None:
        qlo, qhi = law.batch.exp_interval
        lines.append(f"{law.name}: B*(C) = {law.batch.coef:.4g} C^{law.batch.exp:.3f} "
                     f"[{qlo:.3f}, {qhi:.3f}] tokens per step")
    if path is not None:
        lines.append(f"law saved at {path} (optim.recipe = \"{law.name}\" uses it)")
    return "\n".join(lines)


def tune_progress(runs_dir: str | os.PathLike, rows: list[dict]) -> list[dict]:
    """Per tuning sweep among `rows` (sweeps.status rows of `runs_dir`, a runs dir or one
    tune dir): runs done of total, and the law's path and exponents once it is saved."""
    root = Path(runs_dir)
    out = []
    for sweep in sorted({r["sweep"] for r in rows if str(r.get("sweep") or "").endswith("-tune")}):
        mine = [r for r in rows if r["sweep"] == sweep]
        candidates = [root / sweep / "lr_law.json", root / "lr_law.json"]
        path = next((p for p in candidates if p.is_file()), None)
        entry = {"sweep": sweep, "runs": len(mine),
                 "done": sum(r["state"] in ("done", "diverged") for r in mine),
                 "law": str(path) if path else None}
        if path is not None:
            try:
                law = hparams.read_law(path, str(path))
            except UserError as e:
                entry["error"] = str(e)
            else:
                entry.update(n_exp=law.n_exp, d_exp=law.d_exp, b_exp=law.b_exp,
                             batch_exp=law.batch.exp if law.batch else None,
                             bracketed=sum(c.bracketed for c in law.cells), cells=len(law.cells))
        out.append(entry)
    return out


def format_tune_progress(entry: dict) -> str:
    head = f"tune {entry['sweep']}: {entry['done']}/{entry['runs']} runs finished"
    if entry.get("error"):
        return f"{head}; {entry['error']}"
    if entry["law"] is None:
        return f"{head}; law not fitted yet"
    batch = f" B*(C) ~ C^{entry['batch_exp']:.3f}" if entry.get("batch_exp") is not None else ""
    b_term = f" B^{entry['b_exp']:.3f}" if entry.get("b_exp") else ""
    return (f"{head}; law {entry['law']}: lr* ~ N^{entry['n_exp']:.3f} D^{entry['d_exp']:.3f}"
            f"{b_term}{batch} ({entry['bracketed']}/{entry['cells']} cells bracketed)")


__all__ = ["fit_tune", "format_law", "format_tune_progress", "plan_tune", "run_tune",
           "tune_progress", "tune_sweep_name"]
