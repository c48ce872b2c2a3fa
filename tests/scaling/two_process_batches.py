"""One process of the two-process global-batch test (tests/scaling/test_global_batch.py):
joins jax.distributed from JAX_* variables, builds the global batches of a few steps over a
stream that records which windows it is asked for, and writes what it read and the gathered
global array to the JSON file named by argv[1]."""

import json
import sys

from scaling import mesh as mesh_lib

mesh_lib.initialize_distributed()

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from scaling import global_batch  # noqa: E402


class RecordingStream:
    """A token stream that remembers the first token index of every window it serves."""

    def __init__(self, ids):
        self.ids = ids
        self.shape = ids.shape
        self.starts = []

    def __getitem__(self, idx):
        self.starts.extend(np.asarray(idx)[:, 0].tolist())
        return self.ids[idx]


args = dict(first_step=5, n_steps=3, seed=7, batch_size=8, grad_accum=2, seq_len=16)
stream = RecordingStream((np.arange(4000) % 251).astype(np.uint16))
mesh = mesh_lib.make_mesh()
arr = global_batch.train_batches(stream, mesh_lib.batch_sharding(mesh, 2, 4), **args)
full = multihost_utils.process_allgather(arr, tiled=True)
with open(sys.argv[1], "w") as f:
    json.dump({"process": jax.process_index(), "n_processes": jax.process_count(),
               "starts": stream.starts, "global": np.asarray(full).tolist()}, f)
