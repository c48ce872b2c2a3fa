"""Issue 15's "done when" for the [tune] block, with the real trainer at tiny scale and the
CLI: a spec's [tune] block trains, fits and saves an lr law (`scaling sweep` prints it); a
second spec plans with it from --runs-dir, trains with it (config.json records the recipe),
and status shows the tuning. (The report's tuning section is tested on saved laws in
tests/analysis/test_tune_plots.py: a 3-run sweep is too few points for the report's fit.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.lr_law import read_law
from scaling import runs

TUNER = """
name = "tuner"
budgets = [1e10]
[data]
source = "synthetic"
seq_len = 32
eval_tokens = 2048
[grid]
params = [3e3]
[optim]
recipe = "tiny-bytes"
[checks]
min_steps = 20
min_sizes = 1
[launcher]
workers = 2
[tune]
cells = [[3e3, 30]]
lr_multipliers = [0.01, 1, 100]
bootstrap = 20
"""

USER = TUNER.split("[tune]")[0].replace('name = "tuner"', 'name = "user"').replace(
    'recipe = "tiny-bytes"', 'recipe = "fitted:tuner"')


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scaling_cli", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_a_tune_block_fits_a_law_that_a_second_spec_trains_with(tmp_path):
    (tmp_path / "tuner.toml").write_text(TUNER)
    (tmp_path / "user.toml").write_text(USER)
    # before the tuner ran: the user spec cannot plan, and says where it looked
    early = _cli(tmp_path, "plan", "user.toml", "--runs-dir", "elsewhere")
    assert early.returncode == 2
    assert "optim.recipe: no fitted lr law for sweep 'tuner' at elsewhere/tuner-tune/lr_law.json" \
        in early.stderr
    assert not (tmp_path / "elsewhere").exists()

    tuned = _cli(tmp_path, "sweep", "tuner.toml", "--runs-dir", "runs", "--json")
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    law_file = tmp_path / "runs" / "tuner-tune" / "lr_law.json"
    summary = json.loads(tuned.stdout)
    assert summary["tune"]["law"] == "runs/tuner-tune/lr_law.json"
    law = read_law(law_file)
    (cell,) = law.cells
    # lr 1e-4 barely trains in these steps and lr 1 is far too high: the optimum is inside
    assert cell.bracketed and 1e-4 < law.lr(3e3, 1e5) < 1.0
    tune_runs = sorted((tmp_path / "runs" / "tuner-tune").glob("*/config.json"))
    assert {json.loads(p.read_text())["recipe"] for p in tune_runs} == {
        "tiny-bytes[tune lr x0.01]", "tiny-bytes[tune lr x1]", "tiny-bytes[tune lr x100]"}

    plan = _cli(tmp_path, "plan", "user.toml", "--runs-dir", "runs")
    assert plan.returncode == 0, plan.stderr
    assert "recipe fitted:tuner: lr = " in plan.stdout and str(Path("runs/tuner-tune")) in plan.stdout

    used = _cli(tmp_path, "sweep", "user.toml", "--runs-dir", "runs")
    assert used.returncode == 0, used.stderr[-3000:]
    configs = [runs.read_config_json(p.parent)
               for p in sorted((tmp_path / "runs" / "user").glob("*/config.json"))]
    assert len(configs) == 1
    for cfg in configs:
        assert cfg["recipe"] == "fitted:tuner"
        n, d = cfg["param_counts"]["total"], cfg["n_tokens"]
        assert cfg["optim"]["lr"] == pytest.approx(min(law.lr(n, d), 3e-2), rel=1e-9)

    status = _cli(tmp_path, "status", "runs")
    assert status.returncode == 0, status.stderr
    assert "tune tuner-tune: 3/3 runs finished; law runs/tuner-tune/lr_law.json" in status.stdout
