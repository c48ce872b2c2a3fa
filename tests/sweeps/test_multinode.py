"""Several JAX processes per run: the Slurm launcher's task path through submitit's local
executor (the real-cluster version is in test_slurm.py), and `nodes`/`tasks_per_node`
refused without the Slurm launcher."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from scaling import runs
from scaling.train import train_run
from scaling_cli.main import main
from sweeps.launch import slurm
from sweeps.spec import LauncherSpec, parse_spec

sys.path.insert(0, str(Path(__file__).parents[1] / "scaling"))  # importlib mode
from train_helpers import make_run, read_metrics  # noqa: E402

SPEC = """
name = "multi"
budgets = [1e9]
[data]
source = "synthetic:tokens=20000,vocab=32,seed=1"
seq_len = 32
[launcher]
kind = "{kind}"
{field} = 2
"""


@pytest.mark.slow
def test_two_tasks_through_the_local_executor_train_one_curve(tmp_path, monkeypatch):
    """Two processes started by submitit for one run, coordinator passed explicitly: the
    curve is one process's to float32 reduction-order noise (2e-5 nats, as in
    tests/scaling/test_multiprocess.py); only process 0 writes metrics."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SCALING_CACHE", str(cache))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    run = dict(n_steps=12, log_every=2, checkpoint_every=6)
    ref = make_run(tmp_path / "one", **run)
    train_run(ref, progress=False, cache_dir=cache)
    multi = make_run(tmp_path / "two", **run)
    launcher = LauncherSpec(kind="slurm", time_min=5, tasks_per_node=2)
    states = slurm.run_slurm([multi], launcher, tmp_path / "two" / "t", poll_s=0.5,
                             cluster="local")
    assert states[multi.resolve()] == "done", (multi / "train.log").read_text()[-3000:]
    assert "Rank 1 is connected" in (multi / "train.rank1.log").read_text()  # two processes
    got, want = read_metrics(multi), read_metrics(ref)
    assert [r["step"] for r in got] == [r["step"] for r in want]
    np.testing.assert_allclose([r["train_loss"] for r in got], [r["train_loss"] for r in want],
                               rtol=0, atol=2e-5)
    assert runs.read_result(multi)["eval_loss"] == pytest.approx(
        runs.read_result(ref)["eval_loss"], abs=2e-5)


def test_executor_asks_slurm_for_every_process():
    launcher = LauncherSpec(kind="slurm", nodes=2, tasks_per_node=4, gpus_per_task=1)
    executor = slurm.make_executor("/tmp/unused", launcher, "x", cluster="debug")
    params = executor._executor.parameters
    assert params["tasks_per_node"] == 4 and params["gpus_per_node"] == 4
    assert parse_spec({"name": "m", "budgets": [1e9],
                       "launcher": {"kind": "slurm", "nodes": 2}}).launcher.nodes == 2


@pytest.mark.parametrize("field", ["nodes", "tasks_per_node"])
def test_processes_per_run_without_slurm_exit_2_runs_dir_unchanged(tmp_path, capsys, field):
    runs_dir = tmp_path / "runs"
    (runs_dir / "keep").mkdir(parents=True)
    (runs_dir / "keep" / "x.txt").write_text("mine")
    local_spec = tmp_path / "local.toml"
    local_spec.write_text(SPEC.format(kind="local", field=field))
    slurm_spec = tmp_path / "slurm.toml"
    slurm_spec.write_text(SPEC.format(kind="slurm", field=field))
    for argv in (["sweep", str(local_spec), "--runs-dir", str(runs_dir)],
                 ["sweep", str(slurm_spec), "--runs-dir", str(runs_dir), "--launcher", "local"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"launcher.{field}" in err and "Slurm" in err
        assert sorted(p.relative_to(runs_dir) for p in runs_dir.rglob("*")) == \
            [Path("keep"), Path("keep/x.txt")]
