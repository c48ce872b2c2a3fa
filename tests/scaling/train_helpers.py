"""Tiny run directories for the trainer's tests (d_model 32, 2 layers, seq 32)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from scaling import runs
from scaling.config import DataConfig, OptimConfig, RunConfig, ScheduleConfig
from scaling.shapes import ModelConfig

REPO = Path(__file__).resolve().parents[2]
SYNTHETIC = "synthetic:tokens=20000,vocab=32,seed=1"


def tiny_config(**changes) -> RunConfig:
    model = ModelConfig(vocab_size=32, seq_len=32, n_layers=2, d_model=32, n_heads=2,
                        head_dim=16, d_ff=64)
    cfg = RunConfig(model=model, data=DataConfig(source=SYNTHETIC, eval_tokens=512),
                    optim=OptimConfig(lr=3e-3), schedule=ScheduleConfig(warmup_steps=3),
                    batch_size=8, n_steps=24, log_every=4, seed=0)
    return cfg.with_(**changes)


def make_run(root: Path, **changes) -> Path:
    return runs.init_run_dir(root, tiny_config(**changes))


def cli_env(cache_dir: Path, **extra) -> dict:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env.update({"SCALING_CACHE": str(cache_dir), "JAX_PLATFORMS": "cpu",
                "PYTHONPATH": str(REPO)}, **extra)
    return env


def scaling_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "scaling_cli", *args]


def run_cli(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(scaling_cmd(*args), env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def final_params(run_dir: Path, step: int | None = None):
    """The parameters in a run's checkpoint (latest, or at `step`) as numpy arrays."""
    import jax
    import numpy as np

    from scaling import mesh as mesh_lib
    from scaling.checkpoint import CHECKPOINT_DIR, Checkpointer
    from scaling.train_step import TrainState

    ts = TrainState(runs.load_run_config(run_dir), mesh_lib.make_mesh())
    with Checkpointer(Path(run_dir) / CHECKPOINT_DIR) as ckpt:
        got_step, state, _ = ckpt.restore(ts.abstract, step)
    return got_step, [np.asarray(x) for x in jax.tree.leaves(state["params"])]


def read_metrics(run_dir: Path) -> list[dict]:
    from scaling.fileio import read_jsonl

    return list(read_jsonl(Path(run_dir) / runs.METRICS_FILE))
