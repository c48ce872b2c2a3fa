"""scaling.global_batch: shards of the global batch equal slices of the full batch, and in a
real two-process jax.distributed run (CPU, gloo) each process reads only its rows while the
gathered global batch is the one a single process builds."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # importlib mode: helpers are not on the path
from train_helpers import REPO, cli_env  # noqa: E402

from scaling import global_batch
from scaling.data import _window_starts, train_batch

ARGS = dict(first_step=5, n_steps=3, seed=7, batch_size=8, grad_accum=2, seq_len=16)
STREAM = (np.arange(4000) % 251).astype(np.uint16)


def single_process_batches() -> np.ndarray:
    """What the trainer fed before sharding: whole batches per step, reshaped."""
    a = ARGS
    arr = np.stack([train_batch(STREAM, seed=a["seed"], step=s, batch_size=a["batch_size"],
                                seq_len=a["seq_len"])
                    for s in range(a["first_step"], a["first_step"] + a["n_steps"])])
    return arr.reshape(a["n_steps"], a["grad_accum"], a["batch_size"] // a["grad_accum"],
                       a["seq_len"] + 1)


@pytest.mark.parametrize("index", [
    (slice(None),) * 4,
    (slice(None), slice(None), slice(0, 2), slice(None)),
    (slice(1, 3), slice(1, 2), slice(2, 4), slice(None)),
    (slice(None), slice(None), slice(1, 3), slice(0, 5)),
])
def test_a_shard_is_the_slice_of_the_whole_batch(index):
    got = global_batch.host_rows(STREAM, index, **ARGS)
    np.testing.assert_array_equal(got, single_process_batches()[index])
    assert got.dtype == np.int32


def test_train_batch_rows_reads_only_those_windows():
    starts = _window_starts(STREAM.shape[0], seed=7, step=5, batch_size=8, seq_len=16)
    part = train_batch(STREAM, seed=7, step=5, batch_size=8, seq_len=16, rows=slice(2, 5))
    np.testing.assert_array_equal(part[:, 0], STREAM[starts[2:5]])
    assert part.shape == (3, 17)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_each_read_half_and_see_the_single_process_batch(tmp_path):
    port = _free_port()
    procs = []
    for i in range(2):
        env = cli_env(tmp_path / "cache", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                      JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i))
        procs.append(subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "two_process_batches.py"),
             str(tmp_path / f"p{i}.json")], env=env, cwd=REPO, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    for p in procs:
        try:
            _, err = p.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("two-process batch building did not finish")
        assert p.returncode == 0, err[-3000:]

    whole = single_process_batches()
    micro = ARGS["batch_size"] // ARGS["grad_accum"]
    for i in range(2):
        out = json.loads((tmp_path / f"p{i}.json").read_text())
        assert out["n_processes"] == 2 and out["process"] == i
        np.testing.assert_array_equal(np.array(out["global"]), whole)
        # process i holds rows [i * micro/2, (i+1) * micro/2) of every micro-batch: exactly
        # those windows were read, half of all of them
        rows = range(i * micro // 2, (i + 1) * micro // 2)
        expected = []
        for k in range(ARGS["n_steps"]):
            starts = _window_starts(STREAM.shape[0], seed=ARGS["seed"],
                                    step=ARGS["first_step"] + k,
                                    batch_size=ARGS["batch_size"], seq_len=ARGS["seq_len"])
            for a in range(ARGS["grad_accum"]):
                expected.extend(int(starts[a * micro + r]) for r in rows)
        assert sorted(out["starts"]) == sorted(expected)
        assert len(out["starts"]) == ARGS["n_steps"] * ARGS["batch_size"] // 2
