"""sweeps.wsd: a WSD branch seeded from its stable run continues it bit for bit."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "scaling"))  # the trainer's run helpers
from train_helpers import final_params, make_run, read_metrics  # noqa: E402

from scaling.config import ScheduleConfig
from scaling.errors import UserError
from scaling.schedules import branch_schedule
from scaling.train import train_run
from sweeps.wsd import start_from


@pytest.fixture
def cache(tmp_path_factory, monkeypatch):
    path = tmp_path_factory.getbasetemp() / "token-cache"
    monkeypatch.setenv("SCALING_CACHE", str(path))
    return path


def test_wsd_branch_from_a_stable_run_equals_training_the_branch(tmp_path, cache):
    stable_sched = ScheduleConfig(kind="constant", warmup_steps=3, decay_frac=0.2)
    source = make_run(tmp_path / "s", n_steps=16, schedule=stable_sched)
    train_run(source, progress=False, keep_steps=(16,))
    branch_cfg = dict(n_steps=20, schedule=branch_schedule(stable_sched, n_steps=20))
    assert branch_cfg["schedule"].stable_steps == 16
    branch = make_run(tmp_path / "b", **branch_cfg)
    scratch = make_run(tmp_path / "c", **branch_cfg)
    start_from(branch, source, 16)
    train_run(branch, progress=False)
    train_run(scratch, progress=False)
    for a, b in zip(final_params(branch)[1], final_params(scratch)[1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert [r["step"] for r in read_metrics(branch)] == [4, 8, 12, 16, 20]
    # a branch whose learning rate differs before the branch point is refused
    other = make_run(tmp_path / "d", n_steps=20, schedule=ScheduleConfig(kind="cosine"))
    with pytest.raises(UserError, match="schedule"):
        start_from(other, source, 16)
