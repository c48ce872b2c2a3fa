"""How a run's steps are cut into dispatches of the jitted step: k steps per dispatch, more
for tiny models so a dispatch hides the Python overhead; k is a function of the config and
the backend, and chunks end at global step numbers, so a resumed run cuts its steps into
exactly the same chunks as an uninterrupted one."""

from __future__ import annotations

import math

import numpy as np

from scaling import data as data_lib
from scaling.config import RunConfig

# Work per dispatch (FLOPs) below which several steps are scanned into one dispatch:
# about 0.5 s of CPU matmul time, 20 ms of accelerator time. Measured on 2 CPU cores, a
# 123K-parameter model at batch 16x256 ran 1.9x faster with 7 steps per dispatch than 1.
TARGET_DISPATCH_FLOPS = {"cpu": 5e10, "gpu": 4e12, "tpu": 4e12}
MAX_STEPS_PER_DISPATCH = 32


def auto_steps_per_dispatch(flops_per_step: float, backend: str) -> int:
    target = TARGET_DISPATCH_FLOPS.get(backend, TARGET_DISPATCH_FLOPS["gpu"])
    return int(max(1, min(MAX_STEPS_PER_DISPATCH, round(target / max(flops_per_step, 1.0)))))


def aligned_steps_per_dispatch(k: int, periods: tuple[int, ...]) -> int:
    """The largest divisor of the logging/eval/checkpoint periods' gcd that is <= k.

    With k dividing every period, dispatches are k steps long except near the stop, a mark
    or an unaligned resume (see `chunk_end`); the step function runs any number up to k with
    one compilation, so this only keeps logging, evals and checkpoints on chunk ends.
    """
    g = 0
    for p in periods:
        if p > 0:
            g = math.gcd(g, p)
    if g == 0:
        return k
    return max(d for d in range(1, min(k, g) + 1) if g % d == 0)


def chunk_end(s: int, stop: int, k: int, periods: tuple[int, ...], marks: tuple[int, ...]) -> int:
    """End of the dispatch starting at step s: the next multiple of k or of any period,
    any mark, or stop, whichever comes first (aligned to global steps, so resumes agree).
    With k aligned to the periods, only marks, the stop and an unaligned resume cut a
    chunk short; a cut chunk runs in the same k-step program as the others (its step count
    is an argument), so WSD branches and resumes stay bit-identical to uninterrupted runs."""
    end = min(stop, (s // k + 1) * k)
    for p in periods:
        if p > 0:
            end = min(end, (s // p + 1) * p)
    for m in marks:
        if s < m < end:
            end = m
    return end


def chunk_batches(train_tokens: np.ndarray, cfg: RunConfig, s0: int, s1: int) -> np.ndarray:
    """int32 [s1 - s0, grad_accum, micro-batch, seq_len + 1]: the batches of steps s0..s1-1,
    each a pure function of (seed, step)."""
    arr = np.stack([data_lib.train_batch(train_tokens, seed=cfg.seed, step=s,
                                         batch_size=cfg.batch_size, seq_len=cfg.model.seq_len)
                    for s in range(s0, s1)])
    return arr.astype(np.int32).reshape(
        s1 - s0, cfg.grad_accum, cfg.batch_size // cfg.grad_accum, cfg.model.seq_len + 1)
