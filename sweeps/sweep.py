"""A whole sweep: plan the spec, create (or find) every run directory, launch what is left.

Re-running the same spec on the same runs dir is the resume: finished runs are skipped,
interrupted ones continue from their checkpoints. The sweep's directory
``<runs_dir>/<name>/`` is claimed by the spec's hash (sweep.json); another spec with the
same name is refused unless ``force``.

With ``grid.center = "fit"`` budgets are run smallest first, and each budget after the
first is re-centred on the optimum that the finished budgets predict (Approach 2 of the analysis:
a parabola in log N through each finished budget's losses, then a power law N*(C) through
their minima; with one finished budget, Chinchilla's exponent 0.5 from its minimum), as
Marin's ladder does. The plan is a pure function of the finished results, so a resumed sweep re-plans
the same runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.approach2 import isoflop_minima, power_laws_from_minima
from analysis.lr_law import LrLaw
from scaling import runs, sources
from scaling.errors import UserError
from sweeps.hparams import law_path
from sweeps.launch.local import run_local
from sweeps.launch.slurm import run_slurm
from sweeps.ownership import claim_sweep_dir
from sweeps.plan import SweepPlan, plan_sweep
from sweeps.spec import SweepSpec, check_launcher
from sweeps.tune import run_tune

TRAIN_CMD_ENV = "SCALING_TRAIN_CMD"  # test hook: JSON list replacing `python -m scaling_cli train`


@dataclass
class SweepOutcome:
    plan: SweepPlan
    run_dirs: list[Path]
    states: dict[Path, str]


def prepare(spec: SweepSpec, runs_dir: str | os.PathLike, *, force: bool = False,
            plan: SweepPlan | None = None) -> tuple[SweepPlan, list[Path]]:
    """Claim the sweep dir and create every planned run dir (idempotent)."""
    runs_dir = Path(runs_dir)
    if spec.data.source.startswith("text:"):
        corpus = Path(spec.data.source[len("text:"):]).expanduser()
        if not corpus.exists():
            raise UserError(f"{spec.path or 'spec'}: data.source: {corpus}: no such file or "
                            "directory")
    try:  # a bad column or token file fails here, before any run dir exists
        sources.validate(spec.data.source, text_column=spec.data.text_column,
                         vocab_size=spec.data.vocab_size)
    except UserError as e:
        raise UserError(f"{spec.path or 'spec'}: {e}") from None
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--runs-dir: cannot create {runs_dir} ({e.strerror or e})") from None
    claim_sweep_dir(runs_dir, spec.name, spec.digest(), spec.to_dict(), force=force)
    plan = plan or plan_sweep(spec)
    shape_recipe = spec.model.shape_recipe.name
    dirs = []
    for r in plan.runs:
        try:
            run_dir = runs.init_run_dir(runs_dir, r.config, recipe=r.recipe)
            if runs.read_config_json(run_dir).get("shape_recipe") != shape_recipe:
                runs.update_config_fields(run_dir, shape_recipe=shape_recipe)
            if r.branch_of or r.keep_steps:
                wsd = ({"branch_of": r.branch_of, "branch_step": r.branch_step} if r.branch_of
                       else {"keep_steps": list(r.keep_steps)})
                if runs.read_config_json(run_dir).get("wsd") != wsd:
                    runs.update_config_fields(run_dir, wsd=wsd)
            # label: the ladder's name for per-label fits and `scaling compare`
            derived = {"tracking": spec.tracking.for_run(spec.name), "label": spec.label}
            config = runs.read_config_json(run_dir)
            changed = {k: v for k, v in derived.items() if config.get(k) != v}
            if changed:
                runs.update_config_fields(run_dir, **changed)
        except PermissionError as e:
            raise UserError(f"{runs_dir}: cannot write ({e.strerror})") from None
        except OSError as e:
            raise UserError(f"{runs_dir}: cannot write ({e.strerror or e})") from None
        dirs.append(run_dir)
    return plan, dirs


def fit_centers(spec: SweepSpec, runs_dir: str | os.PathLike) -> dict[float, float]:
    """Predicted optimal N for every budget of `spec` not yet finished, from those finished
    in ``runs_dir/<name>`` (empty when none is): the Approach 2 frontier that the report
    shows (analysis.approach2), or with one finished budget Chinchilla's exponent 0.5
    through its IsoFLOP minimum."""
    sweep_dir = Path(runs_dir) / spec.name
    rows = [{"params": r.n_params, "tokens": r.n_tokens, "budget": float(r.budget),
             "loss": r.result.eval_loss}
            for r in (runs.iter_runs(sweep_dir) if sweep_dir.is_dir() else ())
            if r.result is not None and r.budget is not None and r.result.eval_loss is not None
            and r.n_params and r.n_tokens]
    minima = isoflop_minima(pd.DataFrame(rows), warn=False) if rows else []
    if not minima:
        return {}
    frontier: Callable[[float], float | np.ndarray]
    if len(minima) >= 2:
        frontier = power_laws_from_minima(minima).params_opt
    else:
        (m,) = minima
        frontier = lambda c: m.params_opt * (c / m.budget) ** 0.5  # noqa: E731
    done = {m.budget for m in minima}
    return {b: float(frontier(b)) for b in spec.budgets if b not in done}


def run_sweep(spec: SweepSpec, runs_dir: str | os.PathLike, *, workers: int | None = None,
              launcher: str | None = None, force: bool = False,
              train_cmd: Sequence[str] | None = None,
              on_update: Callable | None = None,
              on_plan: Callable[[SweepPlan, list[Path]], None] | None = None,
              on_tune: Callable[[LrLaw, Path], None] | None = None) -> SweepOutcome:
    """Plan, prepare and train every run of `spec` under `runs_dir` (its [tune] block
    first: `on_plan` sees its runs too, `on_tune(law, path)` the law it saved)."""
    launcher = launcher or spec.launcher.kind
    check_launcher(spec.launcher, launcher)  # before anything is written
    workers = workers or spec.launcher.workers
    if train_cmd is None and os.environ.get(TRAIN_CMD_ENV):
        train_cmd = json.loads(os.environ[TRAIN_CMD_ENV])
    if spec.tune is not None and spec.optim.recipe != f"fitted:{spec.name}":
        plan_sweep(spec, runs_dir=runs_dir)  # a grid that cannot be planned fails before tuning
    if spec.tune is not None:  # the lr law first: optim.recipe "fitted:<name>" may need it
        law = run_tune(spec, runs_dir, workers=workers, train_cmd=train_cmd,
                       on_update=on_update, on_plan=on_plan, force=force)
        if on_tune is not None:
            on_tune(law, law_path(spec.name, runs_dir))
    stages = [spec.budgets] if spec.grid.center != "fit" else [(b,) for b in spec.budgets]
    states: dict[Path, str] = {}
    all_dirs: list[Path] = []
    stage_plans: list[SweepPlan] = []
    for i, stage in enumerate(stages):
        centers = fit_centers(spec, runs_dir) if spec.grid.center == "fit" and i else None
        plan = plan_sweep(spec, centers=centers, runs_dir=runs_dir)
        if len(stages) > 1:
            plan = SweepPlan(spec=spec, runs=tuple(r for r in plan.runs if r.config.budget in stage),
                             dropped=plan.dropped, findings=plan.findings)
        plan, dirs = prepare(spec, runs_dir, force=force, plan=plan)
        force = False  # claimed now
        stage_plans.append(plan)
        all_dirs.extend(dirs)
        if on_plan is not None:
            on_plan(plan, dirs)
        if launcher == "slurm":
            stage_states = run_slurm(dirs, spec.launcher, Path(runs_dir) / spec.name,
                                     train_cmd=train_cmd, on_update=on_update)
        elif launcher == "local":
            progress = run_local(dirs, workers=workers,
                                 threads_per_worker=spec.launcher.threads_per_worker,
                                 train_cmd=train_cmd, on_update=on_update,
                                 group_replicas=spec.launcher.group_replicas)
            stage_states = progress.states
        else:
            raise UserError(f"--launcher: expected local or slurm, got {launcher!r}")
        states.update(stage_states)
    plan = SweepPlan(spec=spec, runs=tuple(r for p in stage_plans for r in p.runs),
                     dropped=tuple(d for p in stage_plans for d in p.dropped),
                     findings=tuple(f for p in stage_plans for f in p.findings))
    return SweepOutcome(plan=plan, run_dirs=all_dirs, states=states)
