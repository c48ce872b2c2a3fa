"""Global training batches built shard by shard: each process reads only its own rows.

The batch at step k is a pure function of (seed, k) and the token stream
(scaling.data.train_batch), so no process needs another's data: every addressable shard
of the global [steps, grad_accum, micro_batch, seq_len + 1] array is computed from the
window starts of its own rows. The global batch is therefore identical to what one
process would build in full, whatever the number of processes or devices, while a
process of an n-process run touches about 1/n of the tokens.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Sharding

from scaling import data as data_lib


def shape(n_steps: int, *, batch_size: int, grad_accum: int, seq_len: int) -> tuple[int, ...]:
    return (n_steps, grad_accum, batch_size // grad_accum, seq_len + 1)


def host_rows(tokens_1d, index: tuple, *, first_step: int, n_steps: int, seed: int,
              batch_size: int, grad_accum: int, seq_len: int) -> np.ndarray:
    """The int32 block `index` (a tuple of slices) of the global batch array, computed
    from only the windows it contains."""
    full = shape(n_steps, batch_size=batch_size, grad_accum=grad_accum, seq_len=seq_len)
    index = tuple(index) + (slice(None),) * (len(full) - len(index))
    steps, accums, rows, cols = (range(n)[i] for n, i in zip(full, index, strict=True))
    micro = full[2]
    out = np.empty((len(steps), len(accums), len(rows), len(cols)), np.int32)
    rows_R = np.asarray(rows, dtype=np.int64)
    for i, k in enumerate(steps):
        for j, a in enumerate(accums):
            # row r of micro-batch a is row a * micro + r of the step's batch
            block = data_lib.train_batch(tokens_1d, seed=seed, step=first_step + k,
                                         batch_size=batch_size, seq_len=seq_len,
                                         rows=a * micro + rows_R)
            out[i, j] = block[:, cols.start:cols.stop:cols.step]
    return out


def train_batches(tokens_1d, sharding: Sharding, *, first_step: int, n_steps: int, seed: int,
                  batch_size: int, grad_accum: int, seq_len: int) -> jax.Array:
    """Steps [first_step, first_step + n_steps) as one global array laid out by `sharding`;
    this process computes only its addressable shards."""
    full = shape(n_steps, batch_size=batch_size, grad_accum=grad_accum, seq_len=seq_len)

    def shard(index):
        return host_rows(tokens_1d, index, first_step=first_step, n_steps=n_steps, seed=seed,
                         batch_size=batch_size, grad_accum=grad_accum, seq_len=seq_len)

    return jax.make_array_from_callback(full, sharding, shard)
