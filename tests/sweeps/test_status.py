"""`scaling sweep` and `scaling status` end to end: bad input, foreign runs dirs, resume
after SIGKILLs with the real trainer, divergence, and the status table."""

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

from scaling import runs

ROOT = Path(__file__).resolve().parents[2]
FAKE = [sys.executable, str(Path(__file__).with_name("fake_trainer.py"))]

SPEC = """
name = "{name}"
[data]
seq_len = 16
eval_tokens = 512
[budgets]
values = [{budget}]
[grid]
params = {params}
[optim]
recipe = "tiny-bytes"
{optim}
[train]
checkpoint_every = 10
log_every = 10
[checks]
min_steps = 10
min_sizes = 1
"""


def spec_file(tmp_path: Path, name="s", budget="2e8", params="[3000, 12000]", optim="") -> Path:
    p = tmp_path / f"{name}.toml"
    p.write_text(SPEC.format(name=name, budget=budget, params=params, optim=optim))
    return p


def scaling(*args, fake=False, env=None, **kw) -> subprocess.CompletedProcess:
    e = {**os.environ, **(env or {})}
    if fake:
        e["SCALING_TRAIN_CMD"] = json.dumps(FAKE)
    return subprocess.run([sys.executable, "-m", "scaling_cli", *args], capture_output=True,
                          text=True, env=e, cwd=ROOT, timeout=600, **kw)


def snapshot(root: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_sweep_then_status_with_a_fake_trainer(tmp_path):
    runs_dir = tmp_path / "runs"
    r = scaling("sweep", str(spec_file(tmp_path)), "--runs-dir", str(runs_dir), "--workers", "2",
                "--json", fake=True)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["runs"] == 2 and summary["done"] == 2 and summary["problems"] == []
    st = scaling("status", str(runs_dir), "--json")
    data = json.loads(st.stdout)
    assert data["summary"]["states"] == {"done": 2}
    assert data["summary"]["flops_done"] == pytest.approx(data["summary"]["flops_total"])
    assert {row["budget"] for row in data["runs"]} == {2e8}
    table = scaling("status", str(runs_dir))
    assert table.returncode == 0 and "2 done" in table.stdout
    # a second sweep trains nothing: every result file stays byte-identical
    before = snapshot(runs_dir / "s")
    again = scaling("sweep", str(spec_file(tmp_path)), "--runs-dir", str(runs_dir), fake=True)
    assert again.returncode == 0
    after = snapshot(runs_dir / "s")
    assert {p: b for p, b in after.items() if p.name == "result.json"} == \
        {p: b for p, b in before.items() if p.name == "result.json"}


def test_foreign_runs_dir_is_refused_unless_forced(tmp_path):
    runs_dir = tmp_path / "runs"
    assert scaling("sweep", str(spec_file(tmp_path)), "--runs-dir", str(runs_dir),
                   fake=True).returncode == 0
    before = snapshot(runs_dir)
    other = spec_file(tmp_path, params="[3000, 6000]")
    r = scaling("sweep", str(other), "--runs-dir", str(runs_dir), fake=True)
    assert r.returncode == 2
    assert "belongs to another spec" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert snapshot(runs_dir) == before
    forced = scaling("sweep", str(other), "--runs-dir", str(runs_dir), "--force", fake=True)
    assert forced.returncode == 0
    for path, data in before.items():  # nothing finished is lost
        if path.name == "result.json":
            assert path.read_bytes() == data


@pytest.mark.parametrize("text, field", [
    ("name = 'x'\nbudgets = [1e12\n", "malformed TOML"),
    ("name = 'x'\nbudgets = [1e12]\nbogus = 1\n", "bogus: unknown key"),
    ("name = 'x'\n[budgets]\nmin = 1e10\nmax = 1e12\ncount = 'x'\n", "budgets.count"),
    ("name = 'x'\nbudgets = [10.0]\n", "budgets"),
])
def test_bad_specs_exit_2_with_one_line(tmp_path, text, field):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    r = scaling("sweep", str(p), "--runs-dir", str(tmp_path / "runs"))
    assert r.returncode == 2
    assert field in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr


def test_bad_flags_and_dirs(tmp_path):
    spec = spec_file(tmp_path)
    r = scaling("sweep", str(spec), "--workers", "0", "--runs-dir", str(tmp_path / "r"))
    assert r.returncode == 2 and "--workers" in r.stderr
    r = scaling("status", str(tmp_path / "missing"))
    assert r.returncode == 2 and "not a directory" in r.stderr
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = scaling("sweep", str(spec), "--runs-dir", str(blocker / "runs"))
    assert r.returncode == 2 and "cannot" in r.stderr


def test_read_only_runs_dir_is_a_clear_error(tmp_path):
    import shutil
    import tempfile

    # root ignores permissions, so as root the sweep runs as user nobody; the files live in
    # a world-readable directory (pytest's tmp_path is private to root)
    base = Path(tempfile.mkdtemp(prefix="ro-"))
    try:
        base.chmod(0o755)
        runs_dir = base / "runs"
        assert scaling("sweep", str(spec_file(base)), "--runs-dir", str(runs_dir),
                       fake=True).returncode == 0
        before = snapshot(runs_dir)
        other = spec_file(base, name="other")
        other.chmod(0o644)
        if os.geteuid() == 0:
            cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                   sys.executable, "-m", "scaling_cli", "sweep", str(other), "--runs-dir",
                   str(runs_dir)]
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                               env={**os.environ, "HOME": str(base)}, timeout=120)
        else:
            runs_dir.chmod(0o555)
            try:
                r = scaling("sweep", str(other), "--runs-dir", str(runs_dir))
            finally:
                runs_dir.chmod(0o755)
        assert r.returncode == 2, r.stderr
        assert "cannot write" in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert snapshot(runs_dir) == before
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_real_trainer_sweep_survives_sigkills_bit_identically(tmp_path):
    spec = spec_file(tmp_path, name="rel", budget="6e8")
    ref = scaling("sweep", str(spec), "--runs-dir", str(tmp_path / "ref"), "--workers", "2")
    assert ref.returncode == 0, ref.stderr
    runs_dir = tmp_path / "killed"
    rng = random.Random(1)
    kills = 0

    def logged_since(t0: float) -> bool:  # a trainer of this launch has logged a step
        return runs_dir.exists() and any(
            (d / "metrics.jsonl").exists() and (d / "metrics.jsonl").stat().st_mtime > t0
            for d in runs.list_run_dirs(runs_dir))

    for _ in range(5):
        t0 = time.time()
        proc = subprocess.Popen([sys.executable, "-m", "scaling_cli", "sweep", str(spec),
                                 "--runs-dir", str(runs_dir), "--workers", "2"], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        # kill at a random moment once training is under way (past JAX start-up)
        deadline = time.time() + 120
        while proc.poll() is None and not logged_since(t0) and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.5))
        if proc.poll() is not None:
            break
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher, its workers and the trainers
        proc.wait()
        kills += 1
    assert kills >= 5, f"only {kills} kills before the sweep finished"
    final = scaling("sweep", str(spec), "--runs-dir", str(runs_dir), "--workers", "2")
    assert final.returncode == 0, final.stderr
    ref_dirs = runs.list_run_dirs(tmp_path / "ref")
    got_dirs = runs.list_run_dirs(runs_dir)
    assert [d.name for d in got_dirs] == [d.name for d in ref_dirs]  # each run exactly once
    keys = ("eval_loss", "eval_bpb", "n_tokens", "steps", "flops")
    for a, b in zip(ref_dirs, got_dirs, strict=True):
        ra, rb = runs.read_result(a), runs.read_result(b)
        assert {k: ra[k] for k in keys} == {k: rb[k] for k in keys}
        assert runs.read_status(b)["state"] == "done"


@pytest.mark.slow
def test_real_diverging_run_is_marked_and_the_sweep_finishes(tmp_path):
    spec = spec_file(tmp_path, name="div", params="[3000]", optim="lr = 1e4")
    r = scaling("sweep", str(spec), "--runs-dir", str(tmp_path / "runs"), "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["diverged"] == 1 and summary["problems"][0]["reason"]
    st = json.loads(scaling("status", str(tmp_path / "runs"), "--json").stdout)
    assert st["runs"][0]["state"] == "diverged" and st["runs"][0]["reason"]


@pytest.mark.slow
def test_wsd_branches_share_the_stable_run_and_match_training_from_scratch(tmp_path):
    wsd = "[schedule]\nkind = \"wsd\"\nwarmup_steps = 5\ndecay_frac = 0.2\nshare_stable = {}\n"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shared = spec_file(tmp_path / "a", name="w", budget="1e8, 2e8", params="[3000]")
    shared.write_text(shared.read_text() + wsd.format("true"))
    alone = spec_file(tmp_path / "b", name="w", budget="1e8, 2e8", params="[3000]")
    alone.write_text(alone.read_text() + wsd.format("false"))
    plan = scaling("plan", str(shared))
    assert plan.returncode == 0, plan.stderr
    r = scaling("sweep", str(shared), "--runs-dir", str(tmp_path / "shared"), "--json")
    assert r.returncode == 0, r.stderr
    r2 = scaling("sweep", str(alone), "--runs-dir", str(tmp_path / "alone"), "--json")
    assert r2.returncode == 0, r2.stderr
    got = {runs.read_config_json(d)["budget"]: (d, runs.read_result(d))
           for d in runs.list_run_dirs(tmp_path / "shared")}
    ref = {runs.read_config_json(d)["budget"]: runs.read_result(d)
           for d in runs.list_run_dirs(tmp_path / "alone")}
    branch_dir = got[1e8][0]
    wsd_info = runs.read_config_json(branch_dir)["wsd"]
    assert wsd_info["branch_of"] == got[2e8][0].name
    assert runs.read_config_json(got[2e8][0])["wsd"]["keep_steps"] == [wsd_info["branch_step"]]
    for budget in (1e8, 2e8):  # the branch continues the stable run bit for bit
        assert got[budget][1]["eval_loss"] == ref[budget]["eval_loss"]
