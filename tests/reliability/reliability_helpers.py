"""Shared by the reliability tests and bench/bookkeeping.py: fake finished runs written to
the run-directory contract (docs/architecture.md), CLI subprocesses, and directory snapshots.

Fake runs are real run directories (created by `scaling.runs.init_run_dir`, so config.json
carries the derived keys a trainer would see) whose result.json and metrics.jsonl come from
a known loss law L(N, D) = E + A / N^alpha + B / D^beta instead of training. With A = B and
alpha = beta the compute-optimal size is N*(C) = sqrt(C / 6), so the budgets below put the
optimum inside each IsoFLOP grid of tiny shapes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from scaling import runs
from scaling.config import DataConfig, RunConfig
from scaling.flops import param_counts
from scaling.shapes import ModelConfig

REPO = Path(__file__).resolve().parents[2]
SYNTHETIC = "synthetic:tokens=20000,vocab=32,seed=1"
LAW = {"E": 1.8, "A": 300.0, "B": 300.0, "alpha": 0.34, "beta": 0.34}
BUDGETS = (1e9, 3e9, 1e10)
WIDTHS = (8, 12, 16, 24, 32, 48, 64)
SEQ_LEN = 16
BATCH = 4


def law_loss(n_params: float, n_tokens: float) -> float:
    return LAW["E"] + LAW["A"] / n_params ** LAW["alpha"] + LAW["B"] / n_tokens ** LAW["beta"]


def tiny_model(d_model: int, n_layers: int = 2) -> ModelConfig:
    return ModelConfig(
        vocab_size=32,
        seq_len=SEQ_LEN,
        n_layers=n_layers,
        d_model=d_model,
        n_heads=2,
        head_dim=max(1, d_model // 2),
        d_ff=4 * d_model,
    )


def study_configs(
    budgets=BUDGETS, widths=WIDTHS, seeds=(0,), sweep: str = "fake"
) -> list[RunConfig]:
    """One RunConfig per (budget, width, seed): tokens chosen so 6 N D is the budget."""
    out = []
    for budget in budgets:
        for d_model in widths:
            model = tiny_model(d_model)
            n_params = param_counts(model)["total"]
            n_steps = max(1, round(budget / (6 * n_params) / (BATCH * SEQ_LEN)))
            for seed in seeds:
                out.append(
                    RunConfig(
                        model=model,
                        data=DataConfig(source=SYNTHETIC, eval_tokens=256),
                        batch_size=BATCH,
                        n_steps=n_steps,
                        seed=seed,
                        sweep=sweep,
                        budget=float(budget),
                        convention="6N",
                        log_every=max(1, n_steps // 4),
                    )
                )
    return out


def result_for(cfg: RunConfig, noise: float = 0.0) -> dict:
    counts = param_counts(cfg.model)
    derived = runs.derived_config_fields(cfg)
    loss = law_loss(counts["total"], cfg.n_tokens) * (1.0 + noise)
    return {
        "eval_loss": loss,
        "eval_bpb": loss / math.log(2),
        "n_params": counts["total"],
        "n_params_non_embedding": counts["non_embedding"],
        "n_tokens": cfg.n_tokens,
        "flops": derived["flops"][cfg.convention],
        "flops_by_convention": derived["flops"],
        "budget": cfg.budget,
        "steps": cfg.n_steps,
        "epochs": 1.0,
        "wall_time_s": 1.0,
        "tokens_per_s": 1000.0,
    }


def metrics_lines(cfg: RunConfig, n_lines: int = 4) -> list[dict]:
    n_params = param_counts(cfg.model)["total"]
    lines = []
    for i in range(1, n_lines + 1):
        step = max(1, cfg.n_steps * i // n_lines)
        tokens = step * cfg.batch_size * cfg.model.seq_len
        lines.append(
            {
                "step": step,
                "tokens": tokens,
                "flops": 6.0 * n_params * tokens,
                "train_loss": law_loss(n_params, tokens),
                "lr": 1e-3,
                "grad_norm": 1.0,
                "tokens_per_s": 1000.0,
                "mfu": None,
            }
        )
    lines[-1].update(eval_loss=law_loss(n_params, cfg.n_tokens), eval_bpb=1.0)
    return lines


def write_finished_run(
    runs_dir: Path,
    cfg: RunConfig,
    *,
    state: str = "done",
    reason: str | None = None,
    step: int | None = None,
    fast: bool = False,
    noise: float = 0.0,
) -> Path:
    """A run directory as a finished trainer leaves it (state done, diverged or failed).

    fast=True writes the same files with plain writes (no fsync), for generating thousands.
    """
    if fast:
        run_dir = runs.run_dir_for(runs_dir, cfg)
        run_dir.mkdir(parents=True, exist_ok=True)
        write = lambda p, obj: (run_dir / p).write_text(json.dumps(obj))  # noqa: E731
        write(runs.CONFIG_FILE, {**cfg.to_dict(), **runs.derived_config_fields(cfg)})
    else:
        run_dir = runs.init_run_dir(runs_dir, cfg)
        write = lambda p, obj: runs.atomic_write_json(run_dir / p, obj)  # noqa: E731
    now = time.time()
    last = cfg.n_steps if state == "done" else (step or 1)
    write(
        runs.STATUS_FILE,
        {
            "state": state,
            "pid": None,
            "host": None,
            "heartbeat": now,
            "step": last,
            "reason": reason,
            "updated": now,
        },
    )
    lines = [m for m in metrics_lines(cfg) if m["step"] <= last]
    with open(run_dir / runs.METRICS_FILE, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(m) + "\n" for m in lines)
    if state == "done":
        write(runs.RESULT_FILE, result_for(cfg, noise))
    return run_dir


def fake_study(runs_dir: Path, sweep: str = "fake", **kwargs) -> list[Path]:
    return [write_finished_run(runs_dir, cfg) for cfg in study_configs(sweep=sweep, **kwargs)]


def study_csv(path: Path, **kwargs) -> Path:
    """The same study as a CSV for `scaling fit` (params, tokens, loss, budget, run)."""
    rows = ["run,params,tokens,loss,budget"]
    for i, cfg in enumerate(study_configs(**kwargs)):
        n = param_counts(cfg.model)["total"]
        rows.append(f"r{i},{n},{cfg.n_tokens},{law_loss(n, cfg.n_tokens):.6f},{cfg.budget:g}")
    path.write_text("\n".join(rows) + "\n")
    return path


# ----------------------------------------------------------------------------- processes


def cli_env(tmp: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALING_")}
    env.pop("XLA_FLAGS", None)
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "JAX_PLATFORMS": "cpu",
            "SCALING_CACHE": str(tmp / ".cache"),
            "PYTHONDONTWRITEBYTECODE": "1",
            "COLUMNS": "200",
        }
    )
    env.update(extra)
    return env


def scaling_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "scaling_cli", *args]


def run_cli(
    args, cwd: Path, env: dict | None = None, timeout: float = 180, **popen
) -> subprocess.CompletedProcess:
    return subprocess.run(
        scaling_cmd(*args),
        cwd=cwd,
        env=env or cli_env(cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


# ----------------------------------------------------------------------------- snapshots


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every file (bytes), symlink (target) and directory ('<dir>') under root, by relative path."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "<dir>"
            else:
                out[rel] = p.read_bytes()
    return out


def changes(before: dict, after: dict, allow_new=(".lock", ".lock.owner")) -> list[str]:
    """What differs: changed or removed entries, and new ones other than lock files."""
    diff = [f"changed {k}" for k in before if k in after and before[k] != after[k]]
    diff += [f"removed {k}" for k in before if k not in after]
    diff += [f"new {k}" for k in after if k not in before and Path(k).name not in allow_new]
    return sorted(diff)
