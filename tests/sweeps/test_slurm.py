"""The Slurm launcher against a real single-node cluster (fixture in conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from scaling import runs
from scaling.train import train_run
from sweeps.launch import local, slurm
from sweeps.spec import LauncherSpec

from .test_launch_local import FAKE, make_runs

sys.path.insert(0, str(Path(__file__).parents[1] / "scaling"))  # importlib mode
from train_helpers import make_run, read_metrics  # noqa: E402

pytestmark = pytest.mark.slurm


def test_job_array_with_a_requeue_resumes_from_checkpoint(slurm_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_STEP_S", "0.05")
    ref = make_runs(tmp_path / "ref", [1, 2, 3], n_steps=80)
    local.run_local(ref, workers=2, train_cmd=FAKE)
    dirs = make_runs(tmp_path / "slurm", [1, 2, 3], n_steps=80)
    crash = make_runs(tmp_path / "slurm", [666], n_steps=80)[0]
    launcher = LauncherSpec(kind="slurm", time_min=10, cpus_per_task=1)
    out: dict = {}

    def launch():
        out["states"] = slurm.run_slurm([*dirs, crash], launcher, tmp_path / "slurm" / "t",
                                        train_cmd=FAKE, poll_s=0.5)

    thread = threading.Thread(target=launch)
    thread.start()
    target = dirs[0]
    deadline = time.time() + 90
    while time.time() < deadline and thread.is_alive():
        ckpt = target / "fake_ckpt.json"
        if ckpt.exists() and json.loads(ckpt.read_text())["step"] >= 10:
            break
        time.sleep(0.2)
    else:
        thread.join(timeout=5)
        pytest.fail("the first array task never reached step 10")
    job_id = (target / "starts.log").read_text().split()[0]
    assert job_id != "-"
    subprocess.run(["scontrol", "requeue", job_id], check=True, env=slurm_cluster.env)
    thread.join(timeout=150)
    assert not thread.is_alive()
    states = out["states"]
    assert [states[d.resolve()] for d in dirs] == ["done"] * 3
    assert states[crash.resolve()] == "failed"
    assert "simulated crash" in runs.read_status(crash)["reason"]
    starts = [line.split() for line in (target / "starts.log").read_text().splitlines()]
    assert len(starts) >= 2 and starts[0][0] == starts[1][0] == job_id  # requeued, same job
    assert int(starts[-1][1]) >= 10  # resumed from its checkpoint, not from step 0
    assert [runs.read_result(d) for d in dirs] == [runs.read_result(d) for d in ref]
    assert all(len((d / "completions.log").read_text().split()) == 1 for d in dirs)


def test_submitit_local_executor_runs_the_same_task(tmp_path, monkeypatch):
    """The array path without Slurm (submitit's local executor): catches pickling and
    parameter mistakes on machines where the real cluster test skips."""
    monkeypatch.setenv("FAKE_STEP_S", "0.001")
    dirs = make_runs(tmp_path, [1, 2], n_steps=10)
    launcher = LauncherSpec(kind="slurm", time_min=5)
    states = slurm.run_slurm(dirs, launcher, tmp_path / "t", train_cmd=FAKE, poll_s=0.2,
                             cluster="local")
    assert [states[d.resolve()] for d in dirs] == ["done", "done"]
    assert sys.executable and Path(dirs[0] / "completions.log").exists()


def _train_reference(run_dir: Path, cache: Path) -> None:
    train_run(run_dir, progress=False, cache_dir=cache)


def test_two_tasks_train_the_same_curve_and_resume_after_a_requeue(slurm_cluster, tmp_path,
                                                                   monkeypatch):
    """tasks_per_node = 2: two JAX processes in one srun step, jax.distributed from Slurm's
    environment. Their curve equals one process's to float32 reduction-order noise (2e-5
    nats on losses near 3.4, as in tests/scaling/test_multiprocess.py), also across a
    `scontrol requeue` in the middle."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SCALING_CACHE", str(cache))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    run = dict(n_steps=120, log_every=2, checkpoint_every=20)
    ref = make_run(tmp_path / "one", **run)
    _train_reference(ref, cache)
    multi = make_run(tmp_path / "two", **run)
    sweep = tmp_path / "two" / "t"
    launcher = LauncherSpec(kind="slurm", time_min=10, cpus_per_task=1, tasks_per_node=2)
    train_cmd = [sys.executable, "-m", "scaling_cli", "train"]  # not --quiet: the log says
    out: dict = {}                                               # where it resumed

    def launch():
        out["states"] = slurm.run_slurm([multi], launcher, sweep, train_cmd=train_cmd,
                                        poll_s=0.5)

    thread = threading.Thread(target=launch)
    thread.start()
    deadline = time.time() + 180
    while time.time() < deadline and thread.is_alive():
        steps = [r["step"] for r in read_metrics(multi)] if (multi / runs.METRICS_FILE).exists() else []
        if steps and steps[-1] >= 30:
            break
        time.sleep(0.2)
    else:
        thread.join(timeout=5)
        pytest.fail(f"the two-task run never reached step 30; log:\n"
                    f"{(multi / 'train.log').read_text()[-3000:] if (multi / 'train.log').exists() else ''}")
    # the job's folder (.slurm/%j); submitit also keeps its .submission_file_*.sh there
    job_id = next(p.name for p in (sweep / ".slurm").iterdir() if p.name[0].isdigit())
    subprocess.run(["scontrol", "requeue", job_id], check=True, env=slurm_cluster.env)
    thread.join(timeout=300)
    assert not thread.is_alive()
    log = (multi / "train.log").read_text()
    assert out["states"][multi.resolve()] == "done", log[-3000:]
    assert log.count(" worker ") >= 2  # two attempts of process 0's worker
    resumed = [int(line.split()[-1]) for line in log.splitlines()
               if line.startswith("resuming from step")]
    assert resumed and resumed[0] >= 30  # from the checkpoint saved on SIGTERM, not step 0
    assert (multi / "train.rank1.log").exists()  # the second process trained too
    got, want = read_metrics(multi), read_metrics(ref)
    assert [r["step"] for r in got] == [r["step"] for r in want]  # one writer, no duplicates
    np.testing.assert_allclose([r["train_loss"] for r in got], [r["train_loss"] for r in want],
                               rtol=0, atol=2e-5)
    assert runs.read_result(multi)["eval_loss"] == pytest.approx(
        runs.read_result(ref)["eval_loss"], abs=2e-5)
