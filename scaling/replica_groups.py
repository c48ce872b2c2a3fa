"""Which runs may train together as one replica group (no JAX here: the launcher uses it).

Runs group when their resolved configs agree on everything but the scalar hyper-parameters
of `SCALAR_HPARAMS` (the optimizer's scalars and the seed): same shape, data, seq_len,
batch, steps and schedule shape, so one vmapped step trains them all (scaling.replicas).
Clipping on or off changes the optimizer's structure, so it stays in the key. WSD stable
runs and branches never group (their checkpoints are seeded and kept by the worker).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from scaling import runs
from scaling.config import RunConfig
from scaling.errors import UserError

OPTIM_SCALARS = ("lr", "weight_decay", "beta1", "beta2", "eps", "grad_clip")  # = train_step's
SCALAR_HPARAMS = tuple(f"optim.{n}" for n in OPTIM_SCALARS) + ("seed",)


def group_key(cfg: RunConfig) -> str:
    """Hash of the config with the scalar hyper-parameters taken out."""
    d = cfg.to_dict()
    d["optim"]["clipped"] = cfg.optim.grad_clip > 0
    for name in OPTIM_SCALARS:
        d["optim"].pop(name)
    d.pop("seed")
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_group_key(run_dir: str | os.PathLike) -> str | None:
    """The run's group key, or None for a run that trains alone (WSD, unreadable config)."""
    try:
        if runs.read_config_json(run_dir).get("wsd"):
            return None
        return group_key(runs.load_run_config(run_dir))
    except UserError:
        return None  # the trainer reports it, alone


def group_runs(run_dirs: Sequence[str | os.PathLike], *, min_groups: int = 1,
               max_size: int = 32) -> list[tuple[Path, ...]]:
    """The runs cut into groups of one key, in first-seen order, each at most `max_size`;
    the largest groups are halved until there are `min_groups` (so W worker slots stay busy)."""
    by_key: dict[object, list[Path]] = {}
    for i, d in enumerate(run_dirs):
        key = run_group_key(d)
        by_key.setdefault(key if key is not None else ("alone", i), []).append(Path(d))
    groups = [tuple(g[j:j + max_size]) for g in by_key.values() for j in range(0, len(g), max_size)]
    while len(groups) < min_groups:
        largest = max(range(len(groups)), key=lambda i: len(groups[i]), default=None)
        if largest is None or len(groups[largest]) < 2:
            break
        g = groups.pop(largest)
        half = (len(g) + 1) // 2
        groups[largest:largest] = [g[:half], g[half:]]
    return groups
