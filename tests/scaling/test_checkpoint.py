import sys
from pathlib import Path

import jax
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # importlib mode: helpers are not on the path
from train_helpers import tiny_config  # noqa: E402

from scaling import mesh as mesh_lib
from scaling.checkpoint import Checkpointer
from scaling.train_step import TrainState


@pytest.fixture(scope="module")
def train_state():
    return TrainState(tiny_config(), mesh_lib.make_mesh())


def _perturbed(state, offset):
    """A state whose every parameter differs by `offset` (so checkpoints are distinguishable)."""
    return {**state, "params": jax.tree.map(lambda x: x + offset, state["params"])}


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_round_trip_is_exact_and_laid_out_like_a_fresh_state(tmp_path, train_state):
    state = train_state.init()
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(7, state, {"step": 7, "note": "x"})
        step, restored, meta = ckpt.restore(train_state.abstract)
    assert step == 7 and meta["note"] == "x"
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for a, b in zip(_leaves(state), _leaves(restored), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored), strict=True):
        assert a.sharding.is_equivalent_to(b.sharding, a.ndim)


def test_keeps_the_last_three_and_the_kept_steps(tmp_path, train_state):
    state = train_state.init()
    with Checkpointer(tmp_path, max_to_keep=3, keep_steps=(2,)) as ckpt:
        for s in range(1, 7):
            ckpt.save(s, _perturbed(state, float(s)), {"step": s})
        assert ckpt.steps() == [2, 4, 5, 6]
        assert ckpt.restore(train_state.abstract)[0] == 6


def test_damaged_latest_falls_back_to_the_previous_with_a_warning(tmp_path, train_state):
    state = train_state.init()
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, _perturbed(state, 1.0), {"step": 1})
        ckpt.save(2, _perturbed(state, 2.0), {"step": 2})
    # damage every array file of the newest checkpoint (as a half-synced disk would)
    damaged = 0
    for path in (tmp_path / "2" / "state").rglob("*"):
        if path.is_file() and path.stat().st_size > 0 and "metadata" not in path.name:
            path.write_bytes(b"\0garbage")
            damaged += 1
    assert damaged
    with Checkpointer(tmp_path) as ckpt, pytest.warns(UserWarning, match="falling back"):
        step, restored, _ = ckpt.restore(train_state.abstract)
    assert step == 1
    for a, b in zip(_leaves(_perturbed(state, 1.0)["params"]), _leaves(restored["params"]), strict=True):
        np.testing.assert_array_equal(a, b)


def test_unfinished_save_is_ignored(tmp_path, train_state):
    state = train_state.init()
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(3, state, {"step": 3})
    # what a kill during a save leaves behind: a temporary directory, never renamed
    (tmp_path / "4.orbax-checkpoint-tmp-123").mkdir()
    (tmp_path / "4.orbax-checkpoint-tmp-123" / "junk").write_text("partial")
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.steps() == [3]
        assert ckpt.restore(train_state.abstract)[0] == 3


def test_no_checkpoint_restores_none(tmp_path, train_state):
    with Checkpointer(tmp_path / "empty") as ckpt:
        assert ckpt.restore(train_state.abstract) is None
