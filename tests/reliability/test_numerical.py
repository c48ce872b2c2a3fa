"""Numerical faults: a NaN injected at a chosen step (the trainer's SCALING_FAULT_NAN_AT_STEP
hook) marks that run diverged with the step and the reason, the rest of the sweep finishes,
and `scaling fit` leaves the run out and says so."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from catalogue import SPEC, spec  # noqa: E402
from reliability_helpers import cli_env, fake_study, run_cli  # noqa: E402

from scaling import runs  # noqa: E402
from scaling.fileio import read_jsonl  # noqa: E402

FAULT_STEP = 7
# The documented launcher hook (SCALING_TRAIN_CMD) with a wrapper that turns the trainer's
# fault hook on for the run with seed 1 only; RUN_DIR is the last argument.
WRAPPER = (
    "import json, os, sys\n"
    "run_dir = sys.argv[-1]\n"
    "env = dict(os.environ)\n"
    "if json.load(open(os.path.join(run_dir, 'config.json')))['seed'] == 1:\n"
    f"    env['SCALING_FAULT_NAN_AT_STEP'] = '{FAULT_STEP}'\n"
    "argv = [sys.executable, '-m', 'scaling_cli', 'train', '--quiet', *sys.argv[1:]]\n"
    "os.execve(sys.executable, argv, env)\n"
)


@pytest.fixture(scope="module")
def faulty_sweep(tmp_path_factory):
    import scaling.train

    assert scaling.train.FAULT_ENV == "SCALING_FAULT_NAN_AT_STEP"
    tmp = tmp_path_factory.mktemp("nan")
    text = spec(
        ("values = [1e9]", "values = [2e9]"),
        ("sizes = 3\nspan = 4.0\n", "params = [3000]\n"),
        ('convention = "6N"', 'convention = "6N"\nseeds = [0, 1]'),
        ("min_sizes = 3", "min_sizes = 1"),
        append="\n[train]\nlog_every = 2\n\n[launcher]\nworkers = 2\n",
    )
    assert text != SPEC
    (tmp / "spec.toml").write_text(text)
    fake_study(tmp / "runs", sweep="fake")  # enough finished runs for a fit
    env = cli_env(tmp, SCALING_TRAIN_CMD=json.dumps([sys.executable, "-c", WRAPPER]))
    r = run_cli(
        ["sweep", "spec.toml", "--runs-dir", "runs", "--json"], cwd=tmp, env=env, timeout=400
    )
    dirs = runs.list_run_dirs(tmp / "runs" / "tiny")
    by_seed = {runs.load_run_config(d).seed: d for d in dirs}
    return tmp, r, by_seed


def test_the_faulty_run_is_marked_diverged_with_step_and_reason(faulty_sweep):
    _, _, by_seed = faulty_sweep
    run_dir = by_seed[1]
    status = runs.read_status(run_dir)
    assert status["state"] == "diverged", (status, (run_dir / "train.log").read_text()[-2000:])
    assert status["step"] == FAULT_STEP
    assert "non-finite" in status["reason"] and "nan" in status["reason"].lower()
    assert runs.read_result(run_dir) is None
    for m in read_jsonl(run_dir / runs.METRICS_FILE):  # no NaN written as a number
        assert m["step"] < FAULT_STEP or m["train_loss"] is None
    log = (run_dir / "train.log").read_text().strip().splitlines()
    assert log[-1].startswith("scaling train: failed:") and "diverged" in log[-1]


def test_the_sweep_goes_on_and_reports_it(faulty_sweep):
    _, r, by_seed = faulty_sweep
    assert r.returncode == 0, r.stderr[-2000:]  # diverged counts as finished
    summary = json.loads(r.stdout)
    assert (summary["runs"], summary["done"], summary["diverged"], summary["failed"]) == (
        2,
        1,
        1,
        0,
    )
    assert summary["problems"][0]["run"] == by_seed[1].name
    assert summary["problems"][0]["state"] == "diverged"
    healthy = runs.read_result(by_seed[0])
    assert runs.read_status(by_seed[0])["state"] == "done" and healthy["eval_loss"] > 0
    assert healthy["steps"] == runs.load_run_config(by_seed[0]).n_steps


def test_status_shows_the_divergence(faulty_sweep):
    tmp, _, by_seed = faulty_sweep
    r = run_cli(["status", "runs", "--json"], cwd=tmp)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    row = next(x for x in doc["runs"] if x["run"] == by_seed[1].name)
    assert (
        row["state"] == "diverged" and row["step"] == FAULT_STEP and "non-finite" in row["reason"]
    )
    assert doc["summary"]["states"]["diverged"] == 1


def test_fit_excludes_the_diverged_run_and_says_so(faulty_sweep):
    tmp, _, by_seed = faulty_sweep
    r = run_cli(["fit", "runs", "--approach", "2"], cwd=tmp)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "excluded: 1 diverged" in r.stdout
    fit = json.loads((tmp / "runs" / "fit.json").read_text())
    assert fit["excluded"] == {"diverged": 1}
    assert fit["n_points"] == 21 + 1  # the fake study and the healthy run
    from analysis.load import load_points

    points, info = load_points(tmp / "runs")
    assert by_seed[1].name not in set(points["run"]) and by_seed[0].name in set(points["run"])
    assert info["excluded"] == {"diverged": 1}
