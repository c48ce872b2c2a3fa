"""A whole sweep: plan the spec, create (or find) every run directory, launch what is left.

Re-running the same spec on the same runs dir is the resume: finished runs are skipped,
interrupted ones continue from their checkpoints. The sweep's directory
``<runs_dir>/<name>/`` is claimed by the spec's hash (sweep.json); another spec with the
same name is refused unless ``force``.

With ``grid.center = "fit"`` budgets are run smallest first, and each budget after the
first is re-centred on the optimum that the finished budgets predict (a parabola in
log N through each finished budget's losses, then a power law N*(C) through their minima;
with one finished budget, Chinchilla's exponent 0.5 from its minimum), as Marin's ladder
does. The plan is a pure function of the finished results, so a resumed sweep re-plans
the same runs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from scaling import runs
from scaling.errors import UserError
from sweeps.plan import SweepPlan, plan_sweep
from sweeps.spec import SweepSpec

TRAIN_CMD_ENV = "SCALING_TRAIN_CMD"  # test hook: JSON list replacing `python -m scaling_cli train`


@dataclass
class SweepOutcome:
    plan: SweepPlan
    run_dirs: list[Path]
    states: dict[Path, str]

    def count(self, state: str) -> int:
        return sum(1 for s in self.states.values() if s == state)


def prepare(spec: SweepSpec, runs_dir: str | os.PathLike, *, force: bool = False,
            plan: SweepPlan | None = None) -> tuple[SweepPlan, list[Path]]:
    """Claim the sweep dir and create every planned run dir (idempotent)."""
    runs_dir = Path(runs_dir)
    if spec.data.source.startswith("text:"):
        corpus = Path(spec.data.source[len("text:"):]).expanduser()
        if not corpus.exists():
            raise UserError(f"{spec.path or 'spec'}: data.source: {corpus}: no such file or "
                            "directory")
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--runs-dir: cannot create {runs_dir} ({e.strerror or e})") from None
    runs.claim_sweep_dir(runs_dir, spec.name, spec.digest(), spec.to_dict(), force=force)
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
        except PermissionError as e:
            raise UserError(f"{runs_dir}: cannot write ({e.strerror})") from None
        except OSError as e:
            raise UserError(f"{runs_dir}: cannot write ({e.strerror or e})") from None
        dirs.append(run_dir)
    return plan, dirs


def fit_centers(spec: SweepSpec, runs_dir: str | os.PathLike) -> dict[float, float]:
    """Predicted optimal N for every budget of `spec` not yet finished, from those finished
    in ``runs_dir/<name>`` (empty when none is)."""
    import numpy as np

    minima: dict[float, float] = {}
    by_budget: dict[float, list[tuple[float, float]]] = {}
    sweep_dir = Path(runs_dir) / spec.name
    if not sweep_dir.is_dir():
        return {}
    for d in runs.list_run_dirs(sweep_dir):
        result = runs.read_result(d)
        cfg = runs.read_config_json(d)
        if result is None or cfg.get("budget") is None or result.get("eval_loss") is None:
            continue
        n = cfg["param_counts"]["total"]
        by_budget.setdefault(float(cfg["budget"]), []).append((math.log(n), result["eval_loss"]))
    for budget, points in by_budget.items():
        if len(points) < 3:
            continue
        x, y = np.array(points).T
        c2, c1, _ = np.polyfit(x, y, 2)
        # positive curvature only; else the best measured point (never a concave vertex)
        log_n = -c1 / (2 * c2) if c2 > 0 else x[np.argmin(y)]
        minima[budget] = float(np.clip(log_n, x.min() - 1.0, x.max() + 1.0))
    if not minima:
        return {}
    cs = np.log(np.array(sorted(minima)))
    ns = np.array([minima[c] for c in sorted(minima)])
    slope, intercept = (np.polyfit(cs, ns, 1) if len(cs) >= 2 else (0.5, ns[0] - 0.5 * cs[0]))
    return {b: float(math.exp(intercept + slope * math.log(b)))
            for b in spec.budgets if b not in minima}


def run_sweep(spec: SweepSpec, runs_dir: str | os.PathLike, *, workers: int | None = None,
              launcher: str | None = None, force: bool = False,
              train_cmd: Sequence[str] | None = None,
              on_update: Callable | None = None,
              on_plan: Callable[[SweepPlan, list[Path]], None] | None = None) -> SweepOutcome:
    """Plan, prepare and train every run of `spec` under `runs_dir`."""
    launcher = launcher or spec.launcher.kind
    workers = workers or spec.launcher.workers
    if train_cmd is None and os.environ.get(TRAIN_CMD_ENV):
        import json

        train_cmd = json.loads(os.environ[TRAIN_CMD_ENV])
    if spec.tune is not None:  # the lr law first: optim.recipe "fitted:<name>" may need it
        from sweeps.tune import run_tune

        run_tune(spec, runs_dir, workers=workers, train_cmd=train_cmd, on_update=on_update,
                 force=force)
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
            from sweeps.launch.slurm import run_slurm

            stage_states = run_slurm(dirs, spec.launcher, Path(runs_dir) / spec.name,
                                     train_cmd=train_cmd, on_update=on_update)
        elif launcher == "local":
            from sweeps.launch.local import run_local

            progress = run_local(dirs, workers=workers,
                                 threads_per_worker=spec.launcher.threads_per_worker,
                                 train_cmd=train_cmd, on_update=on_update)
            stage_states = progress.states
        else:
            raise UserError(f"--launcher: expected local or slurm, got {launcher!r}")
        states.update(stage_states)
    plan = SweepPlan(spec=spec, runs=tuple(r for p in stage_plans for r in p.runs),
                     dropped=tuple(d for p in stage_plans for d in p.dropped),
                     findings=tuple(f for p in stage_plans for f in p.findings))
    return SweepOutcome(plan=plan, run_dirs=all_dirs, states=states)
