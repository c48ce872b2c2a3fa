"""Orbax checkpoints of a run's training state, for exact resume.

A checkpoint at step s holds the parameters, the optimiser state and the RNG key data as
arrays ("state"), and JSON metadata ("meta": step, config digest, elapsed wall time...).
The data stream needs nothing: the batch at step k is a pure function of (seed, k).

Restores go into an abstract target (shapes, dtypes, shardings) built by the same code
path as training (`scaling.train_step`), so a restored tree is laid out exactly like a fresh
one. Saves are synchronous: a checkpoint step that `steps()` lists is complete (orbax
writes into a temporary directory and renames it at the end, so a kill mid-save leaves
only a temporary directory that is never listed). A listed checkpoint that still fails to
restore (files lost or truncated afterwards) is skipped with a warning in favour of the
previous one; the last `max_to_keep` are kept, plus any `keep_steps` (WSD branch points).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

# orbax logs every save at INFO/WARNING through absl; keep the trainer's stderr readable.
logging.getLogger("absl").setLevel(logging.ERROR)

CHECKPOINT_DIR = "checkpoints"


class Checkpointer:
    """`save(step, state, meta)`, `restore(abstract_state)`, `steps()`; a context manager."""

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 3,
                 keep_steps: Iterable[int] = ()) -> None:
        self.directory = Path(directory).absolute()
        keep = [policies.LatestN(n=max_to_keep)]
        keep_steps = sorted({int(s) for s in keep_steps})
        if keep_steps:
            keep.append(policies.CustomSteps(steps=keep_steps))
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=False,
            preservation_policy=policies.AnyPreservationPolicy(keep),
            cleanup_tmp_directories=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_names=("state", "meta"))

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state, meta: dict) -> None:
        if step in self._manager.all_steps():
            return  # already there (e.g. a final save right after a periodic one)
        self._manager.save(int(step), args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
        self._manager.wait_until_finished()

    def restore(self, abstract_state, step: int | None = None):
        """(step, state, meta) from `step`, or from the newest checkpoint that restores;
        None when there is none. A damaged newest checkpoint falls back with a warning."""
        candidates = [step] if step is not None else sorted(self._manager.all_steps(), reverse=True)
        for s in candidates:
            try:
                out = self._manager.restore(s, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
                state = out["state"]
                jax.block_until_ready(state)
                return s, state, dict(out["meta"])
            except Exception as e:  # noqa: BLE001 - any failure means "this one is unusable"
                if step is not None:
                    raise
                warnings.warn(f"{self.directory}/{s}: checkpoint unreadable ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else ''}); "
                              "falling back to the previous one", stacklevel=2)
        return None

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def abstract_like(tree, shardings=None):
    """ShapeDtypeStructs (with shardings when given) for a tree of arrays or abstract arrays."""
    if shardings is None:
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                           sharding=getattr(x, "sharding", None)), tree)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
