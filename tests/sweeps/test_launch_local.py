"""Local launcher with a fake trainer: skipping, resuming, failures, concurrency, SIGKILLs."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scaling import host_env, runs
from scaling.config import OptimConfig, RunConfig
from scaling.fileio import read_json
from scaling.shapes import ModelConfig
from sweeps.launch import local

FAKE = [sys.executable, str(Path(__file__).with_name("fake_trainer.py"))]
ROOT = Path(__file__).resolve().parents[2]


def make_runs(runs_dir: Path, seeds, n_steps=20, lr=1e-3) -> list[Path]:
    model = ModelConfig(vocab_size=256, seq_len=16, n_layers=1, d_model=16, n_heads=2,
                        head_dim=8, d_ff=32)
    out = []
    for seed in seeds:
        cfg = RunConfig(model=model, optim=OptimConfig(lr=lr), n_steps=n_steps, batch_size=2,
                        seed=seed, sweep="t", budget=1e9)
        out.append(runs.init_run_dir(runs_dir, cfg))
    return out


def completions(run_dir: Path) -> int:
    try:
        return len((run_dir / "completions.log").read_text().split())
    except FileNotFoundError:
        return 0


def test_cpu_slots_split_the_cores():
    slots = local.cpu_slots(2)
    n = len(os.sched_getaffinity(0))
    assert all(len(s) == max(1, n // 2) for s in slots)
    if n >= 2:
        assert not set(slots[0]) & set(slots[1])
    assert len(local.cpu_slots(3, threads_per_worker=1)) == 3
    env = local.worker_env(0, [0], [])
    assert env["OMP_NUM_THREADS"] == "1" and "--xla_cpu_multi_thread_eigen=false" in env["XLA_FLAGS"]
    assert local.worker_env(1, [0, 1], ["0", "1"])["CUDA_VISIBLE_DEVICES"] == "1"


def test_runs_all_skips_done_and_reports_failures(tmp_path):
    ok = make_runs(tmp_path, [1, 2, 3])
    crash = make_runs(tmp_path, [666])[0]
    diverge = make_runs(tmp_path, [4], lr=10.0)[0]
    seen = []
    progress = local.run_local([*ok, crash, diverge], workers=2, train_cmd=FAKE,
                               on_update=lambda p: seen.append(dict(p.states)))
    assert [progress.states[d] for d in ok] == ["done"] * 3
    assert progress.states[crash] == "failed" and progress.states[diverge] == "diverged"
    assert "simulated crash" in runs.read_status(crash)["reason"]
    assert runs.read_status(diverge)["reason"] == "loss is nan at step 3"
    assert all(completions(d) == 1 for d in ok)
    assert seen and seen[-1] == progress.states
    results = {d: runs.read_result(d) for d in ok}
    # second launch: nothing is trained again; the diverged run stays diverged
    progress = local.run_local([*ok, diverge], workers=2, train_cmd=FAKE)
    assert all(completions(d) == 1 for d in ok)
    assert {d: runs.read_result(d) for d in ok} == results
    assert progress.states[diverge] == "diverged"


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path):
    run = make_runs(tmp_path, [7], n_steps=40)[0]
    ref_dir = tmp_path / "ref"
    ref = make_runs(ref_dir, [7], n_steps=40)[0]
    local.run_local([ref], train_cmd=FAKE)
    env = {**os.environ, "FAKE_STEP_S": "0.02"}
    proc = subprocess.Popen([*FAKE, str(run)], env=env)
    deadline = time.time() + 30
    while not (run / "fake_ckpt.json").exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    step = json.loads((run / "fake_ckpt.json").read_text())["step"]
    assert 0 < step < 40
    assert runs.effective_state(run) == "interrupted"
    local.run_local([run], train_cmd=FAKE)
    assert runs.read_status(run)["state"] == "done"
    assert runs.read_result(run) == runs.read_result(ref)


def _launcher(run_dirs, workers=2, step_s="0.01") -> subprocess.Popen:
    code = ("import sys, json; from sweeps.launch.local import run_local; "
            "run_local(json.loads(sys.argv[1]), workers=int(sys.argv[2]), "
            "train_cmd=json.loads(sys.argv[3]))")
    env = {**os.environ, "FAKE_STEP_S": step_s, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, json.dumps([str(d) for d in run_dirs]),
                             str(workers), json.dumps(FAKE)], env=env, cwd=ROOT,
                            start_new_session=True)


def test_two_launchers_train_each_run_once(tmp_path):
    dirs = make_runs(tmp_path, range(6), n_steps=15)
    a, b = _launcher(dirs), _launcher(list(reversed(dirs)))
    assert a.wait(timeout=120) == 0 and b.wait(timeout=120) == 0
    assert [completions(d) for d in dirs] == [1] * 6
    assert all(runs.read_status(d)["state"] == "done" for d in dirs)


@pytest.mark.slow
def test_sigkill_launcher_and_workers_at_random_moments(tmp_path):
    seeds = range(6)
    ref_dirs = make_runs(tmp_path / "ref", seeds, n_steps=60)
    local.run_local(ref_dirs, workers=2, train_cmd=FAKE)
    expected = [runs.read_result(d) for d in ref_dirs]
    dirs = make_runs(tmp_path / "killed", seeds, n_steps=60)
    rng = random.Random(0)
    kills = 0

    def progress() -> int:
        return sum(runs.read_status(d)["step"] or 0 for d in dirs)

    for _ in range(8):
        before = progress()
        proc = _launcher(dirs, step_s="0.02")
        deadline = time.time() + 60
        # a random moment after some progress, so every kill lands mid-sweep
        while proc.poll() is None and progress() <= before and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is not None:
            break
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher, its workers and their trainers
        proc.wait()
        kills += 1
    assert kills >= 5
    proc = _launcher(dirs)
    assert proc.wait(timeout=120) == 0
    assert [runs.read_result(d) for d in dirs] == expected
    assert [completions(d) for d in dirs] == [1] * len(dirs)
    assert all(runs.read_status(d)["state"] == "done" for d in dirs)


def test_trainers_start_with_the_cpu_tuning(tmp_path, monkeypatch):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    (run,) = make_runs(tmp_path, [1], n_steps=2)
    local.run_local([run], train_cmd=FAKE)
    env = read_json(run / "trainer_env.json")
    want = "glibc.malloc.hugetlb=1" if host_env.hugepages_help() else None
    assert env["GLIBC_TUNABLES"] == want
