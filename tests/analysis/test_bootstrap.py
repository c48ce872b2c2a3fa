"""Bootstrap intervals and leave-largest-budget-out validation on known laws."""

import math

import numpy as np
import pytest

from analysis.approach3 import Approach3Result, fit_approach3
from analysis.bootstrap import (
    bootstrap,
    check_level,
    holdout_largest_budget,
    percentile_interval,
    resample_indices,
)
from analysis.fitdoc import FitDocument
from analysis.fits import fit_all
from analysis.simulate import generate_curves, generate_points, isoflop_design
from scaling.errors import UserError

LAW = Approach3Result(A=400.0, B=1800.0, E=1.7, alpha=0.34, beta=0.30, objective=0, n_points=0)
BUDGETS = np.geomspace(1e17, 1e21, 9)


@pytest.fixture(scope="module")
def noisy():
    pts = generate_points(isoflop_design(BUDGETS, LAW, 9, 1.5), LAW, noise=0.005, rng=7)
    base = fit_all(pts, approaches=("2", "3"), vpnls=False)
    return pts, base


@pytest.fixture(scope="module")
def boot(noisy):
    pts, base = noisy
    return bootstrap(pts, base, n=300, seed=1, level=0.8)


def test_resampling_keeps_each_budget_and_is_seeded(noisy):
    pts, _ = noisy
    idx = resample_indices(pts, 50, seed=3)
    assert idx.shape == (50, len(pts))
    budgets = pts["budget"].to_numpy()
    assert (budgets[idx] == budgets[None, :]).all()  # within-budget draws
    assert len(np.unique(idx[0])) < len(pts)  # with replacement
    assert (resample_indices(pts, 50, seed=3) == idx).all()
    assert not (resample_indices(pts, 50, seed=4) == idx).all()


def test_intervals_cover_the_truth_and_match_the_sampling_spread(noisy, boot):
    pts, base = noisy
    a3 = boot["approach3"].samples
    assert set(a3) == {"A", "B", "E", "alpha", "beta", "a", "b", "G"}
    for name, truth in (("alpha", LAW.alpha), ("beta", LAW.beta), ("a", LAW.a),
                        ("E", LAW.E)):
        lo, hi = boot["approach3"].interval(name, level=0.99)
        assert lo < truth < hi, name
        lo8, hi8 = boot["approach3"].interval(name)
        assert lo <= lo8 < hi8 <= hi
    # Bootstrap spread of alpha is the estimator's own: simulate_study on this design at
    # 0.5% noise gives an 80% width of ~0.009 (sd 0.0035); allow a factor 2 either way.
    w = np.subtract(*boot["approach3"].interval("alpha")[::-1])
    assert 0.004 < w < 0.02
    # The batched refit agrees with a full 4,500-start fit of the same resample.
    row = resample_indices(pts, 300, seed=1)[0]
    full = fit_approach3(pts["params"].to_numpy()[row], pts["tokens"].to_numpy()[row],
                         pts["loss"].to_numpy()[row])
    assert a3["alpha"][0] == pytest.approx(full.alpha, abs=2e-4)
    assert a3["beta"][0] == pytest.approx(full.beta, abs=2e-4)
    lo, hi = boot["approach2"].interval("a", level=0.99)
    assert lo < LAW.a < hi


def test_fit_json_has_cis_and_samples(noisy, boot):
    pts, base = noisy
    doc = FitDocument(n_points=len(pts), approaches=base, bootstrap=boot).to_dict()
    a3 = doc["approach3"]
    for name in ("A", "B", "E", "alpha", "beta", "a", "b", "G"):
        lo, hi = a3[f"{name}_ci"]
        assert lo <= a3[name] <= hi or name in ("A", "B", "G")  # skewed ones may sit outside
    assert a3["bootstrap"]["n"] == 300 and a3["bootstrap"]["level"] == 0.8
    assert len(a3["bootstrap"]["samples"]["alpha"]) == 300
    assert "a_ci" in doc["approach2"]


def test_approach1_bootstrap_from_curves():
    # This law wants ~100-1000 tokens per parameter: curves must run that long.
    curves = generate_curves(np.geomspace(1e6, 1e9, 25), LAW, max_tokens_per_param=3000,
                             noise=0.002, rng=0)
    pts = generate_points(isoflop_design(BUDGETS[:4], LAW, 5, 1.0), LAW)
    base = fit_all(pts, curves, approaches=("1",))
    b = bootstrap(pts, base, curves=curves, n=100, seed=0)
    lo, hi = b["approach1"].interval("a", level=0.98)
    assert lo <= base["approach1"].a <= hi
    assert hi - lo < 0.1


def test_holdout_predicts_the_largest_budget():
    pts = generate_points(isoflop_design(BUDGETS, LAW, 9, 1.5), LAW, noise=0.0)
    h = holdout_largest_budget(pts)
    assert h.budget == pytest.approx(BUDGETS[-1])
    # Noiseless data from the model family: extrapolation is exact up to the parabola's
    # approximation of the IsoFLOP curve.
    a3, a2 = h.predicted["approach3"], h.predicted["approach2"]
    assert abs(a3["params_opt_log_error"]) < 0.03
    assert abs(a3["loss_opt_error"]) < 1e-3
    assert a3["points_loss_mean_abs_rel_error"] < 1e-4
    assert abs(a2["params_opt_log_error"]) < 0.05
    with pytest.raises(UserError, match="at least 3 budgets"):
        holdout_largest_budget(pts[pts["budget"] < BUDGETS[2]])


def test_level_and_size_checks():
    with pytest.raises(UserError, match="level"):
        check_level(1.5)
    assert percentile_interval(np.arange(101.0), 0.8) == pytest.approx([10.0, 90.0])
    assert all(math.isnan(v) for v in percentile_interval(np.array([np.nan]), 0.8))
