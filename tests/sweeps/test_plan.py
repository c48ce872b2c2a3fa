"""Wall-time estimates and re-centring on finished budgets, against synthetic truths."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from scaling import runs
from sweeps.plan import estimate_wall_time, plan_sweep
from sweeps.sweep import fit_centers, prepare

sys.path.insert(0, str(Path(__file__).parent))  # importlib mode: helpers are not on the path
from spec_helpers import BASE, load_text  # noqa: E402


def test_wall_time_with_an_override(tmp_path):
    plan = plan_sweep(load_text(tmp_path))
    est = estimate_wall_time(plan, tokens_per_second=1000.0, workers=2)
    expected = [r.config.n_tokens / 1000.0 for r in plan.runs]
    assert est["per_run_s"] == pytest.approx(expected)
    assert est["total_s"] == pytest.approx(sum(expected))
    assert est["wall_s"] == pytest.approx(sum(expected) / 2)
    assert est["device_hours"] == pytest.approx(sum(expected) / 3600)
    assert est["source"] == "override"
    with pytest.raises(runs.UserError, match="--tokens-per-second"):
        estimate_wall_time(plan, tokens_per_second=-1.0)


def test_wall_time_of_wsd_branches_counts_only_the_cooldown(tmp_path):
    text = BASE.replace("sizes = 3\nspan = 4.0", "params = [8000, 16000]") + \
        "[schedule]\nkind = \"wsd\"\n"
    plan = plan_sweep(load_text(tmp_path, text))
    est = estimate_wall_time(plan, tokens_per_second=1.0)
    for r, seconds in zip(plan.runs, est["per_run_s"], strict=True):
        trained_steps = r.config.n_steps - (r.branch_step or 0)
        assert seconds == pytest.approx(trained_steps * r.config.batch_size * 16)


def test_wall_time_from_measured_runs(tmp_path):
    s = load_text(tmp_path)
    plan, dirs = prepare(s, tmp_path / "runs")
    # the device runs at a constant 2e9 FLOP/s: tokens/s = 2e9 / flops_per_token
    for d in dirs[:2]:
        fpt = runs.read_config_json(d)["flops_per_token"]["6N"]
        runs.write_result(d, {"eval_loss": 1.0, "tokens_per_s": 2e9 / fpt})
    est = estimate_wall_time(plan, runs_dir=tmp_path / "runs")
    for r, seconds in zip(plan.runs, est["per_run_s"], strict=True):
        assert seconds == pytest.approx(r.flops / 2e9, rel=1e-6)
    assert est["source"] == "measured (2 finished runs)"
    assert estimate_wall_time(plan, runs_dir=tmp_path / "empty")["total_s"] is None


def test_fit_centers_recover_a_known_frontier(tmp_path):
    # synthetic truth: loss = 2 + (ln N - ln N*(C))^2 with N*(C) = 0.05 C^0.6
    text = BASE.replace("[1e10, 3e10]", "[1e10, 3e10, 1e11]").replace(
        "sizes = 3\nspan = 4.0", "sizes = 5\nspan = 8.0")
    s = load_text(tmp_path, text)
    plan, dirs = prepare(s, tmp_path / "runs")
    truth = lambda c: 0.05 * c ** 0.6  # noqa: E731
    for r, d in zip(plan.runs, dirs, strict=True):
        if r.config.budget == 1e11:
            continue  # not finished yet
        n = runs.read_config_json(d)["param_counts"]["total"]
        loss = 2 + (math.log(n) - math.log(truth(r.config.budget))) ** 2
        runs.write_result(d, {"eval_loss": loss})
    centers = fit_centers(s, tmp_path / "runs")
    assert set(centers) == {1e11}
    assert centers[1e11] == pytest.approx(truth(1e11), rel=1e-6)
    # the re-centred plan is centred there, and the bracket check uses the prediction
    new = plan_sweep(s, centers=centers)
    sizes = [r.planned.n_params for r in new.runs if r.config.budget == 1e11]
    assert min(sizes) < truth(1e11) < max(sizes)
    assert all(abs(r.flops / r.config.budget - 1) <= 0.01 for r in new.runs)
