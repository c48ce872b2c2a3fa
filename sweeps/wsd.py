"""WSD branches: seed a branch's run directory from its stable run's checkpoint.

A sweep with a shared stable phase trains one stable run per group (with `--keep-steps` at
its branch points) and starts each branch from the stable run's checkpoint at its branch
step; the trainer then just resumes from that checkpoint and runs the branch's own cooldown.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from scaling import runs
from scaling.checkpoint import CHECKPOINT_DIR, Checkpointer
from scaling.errors import UserError
from scaling.fileio import append_jsonl, read_jsonl
from scaling.schedules import learning_rate


def start_from(run_dir: str | os.PathLike, source_run_dir: str | os.PathLike, step: int) -> None:
    """Seed `run_dir` (a WSD branch) with `source_run_dir`'s checkpoint at `step`.

    The two runs must agree on everything that shaped the first `step` updates (model,
    data, optimiser, batch, seed, and the learning rate at every step before `step`), so
    the branch continues the source bit for bit; `train_run(run_dir)` then resumes from
    `step` and runs the branch's own cooldown. The source's metrics up to `step` are copied
    too, so the branch's curve is complete. A no-op if `run_dir` already has checkpoints.
    """
    run_dir, source_run_dir = Path(run_dir), Path(source_run_dir)
    cfg = runs.load_run_config(run_dir)
    src = runs.load_run_config(source_run_dir)
    for name in ("model", "data", "batch_size", "grad_accum", "seed"):
        if getattr(cfg, name) != getattr(src, name):
            raise UserError(f"{name}: the branch {run_dir.name} and its source {source_run_dir.name} differ")
    o1, o2 = cfg.optim, src.optim
    if (o1.lr, o1.weight_decay, o1.beta1, o1.beta2, o1.eps, o1.grad_clip, o1.z_loss) != \
            (o2.lr, o2.weight_decay, o2.beta1, o2.beta2, o2.eps, o2.grad_clip, o2.z_loss):
        raise UserError(f"optim: the branch {run_dir.name} and its source {source_run_dir.name} differ")
    if not 0 < step <= min(cfg.n_steps, src.n_steps):
        raise UserError(f"step: expected 1..{min(cfg.n_steps, src.n_steps)}, got {step}")
    steps = jnp.arange(step)
    lr_branch = np.asarray(learning_rate(steps, peak_lr=o1.lr, n_steps=cfg.n_steps, sched=cfg.schedule))
    lr_source = np.asarray(learning_rate(steps, peak_lr=o2.lr, n_steps=src.n_steps, sched=src.schedule))
    if not np.array_equal(lr_branch, lr_source):
        first = int(np.argmax(lr_branch != lr_source))
        raise UserError(f"schedule: the branch's learning rate differs from the source's at step "
                        f"{first} < {step} (set schedule.stable_steps >= {step})")
    target = run_dir / CHECKPOINT_DIR
    if target.exists() and any(p.name.isdigit() for p in target.iterdir()):
        return
    source_ckpt = source_run_dir / CHECKPOINT_DIR / str(step)
    if step not in Checkpointer(source_run_dir / CHECKPOINT_DIR).steps():
        raise UserError(f"{source_ckpt}: no checkpoint at step {step} (train the source with "
                        f"keep_steps including {step})")
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / f".{step}.copy"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source_ckpt, tmp)
    os.replace(tmp, target / str(step))
    metrics = [r for r in read_jsonl(source_run_dir / runs.METRICS_FILE)
               if isinstance(r.get("step"), int) and r["step"] <= step]
    path = run_dir / runs.METRICS_FILE
    if not path.exists():
        for r in metrics:
            append_jsonl(path, r)
