"""The extrapolation (misspecification) term of the prediction interval: distance outside the
fitted range, its maximum-likelihood scale, zero for an exact law, positive for a wrong one."""

import math

import numpy as np
import pytest
from scipy.stats import t as student_t

from analysis.approach3 import Approach3Result, chinchilla_grid
from analysis.extrapolation import estimate_extrapolation, inner_splits, tau_mle
from analysis.noise import ExtrapolationError, FittedRange, NoiseEstimate
from analysis.predict import predict_loss
from analysis.simulate import generate_points, isoflop_design
from scaling.errors import UserError

LAW = Approach3Result(A=400.0, B=2000.0, E=1.7, alpha=0.34, beta=0.28, objective=math.nan,
                      n_points=0)
STARTS = chinchilla_grid()[::9]  # 500 of the 4,500 grid starts: enough on clean synthetic data


def test_distance_is_zero_inside_and_the_largest_log_excess_outside():
    rng = FittedRange.of([1e6, 1e8], [1e8, 1e10])
    assert rng.log_flops == pytest.approx([math.log(6e14), math.log(6e18)])
    assert rng.distance(1e7, 1e9) == 0.0
    assert rng.distance(1e9, 1e9) == pytest.approx(math.log(10))  # N 10x above its max
    assert rng.distance(1e7, 1e12) == pytest.approx(math.log(100))  # D 100x, C 100x / 6
    # N and D both at their maxima: only C lies outside, by 6 N D / C_max = 1 -> 0 ...
    assert rng.distance(1e8, 1e10) == pytest.approx(0.0)
    # ... and both 2x above: C is 4x above, the largest excess.
    assert rng.distance(2e8, 2e10) == pytest.approx(math.log(4))
    assert rng.distance(1e5, 1e9) == pytest.approx(math.log(10))  # below the range counts


def test_tau_mle_recovers_a_known_scale_and_zero_without_excess():
    rng = np.random.default_rng(0)
    d = rng.uniform(0.5, 3.0, 4000)
    v = np.full_like(d, 0.004**2)
    for tau in (0.01, 0.03):
        r = rng.normal(0, np.sqrt(v + tau**2 * d**2))
        assert tau_mle(r, v, d) == pytest.approx(tau, rel=0.05)
    r = rng.normal(0, np.sqrt(v))
    assert tau_mle(r, v, d) < 0.001
    assert tau_mle(r, v, np.zeros_like(d)) == 0.0  # no point outside the range: nothing known


def test_inner_origins_split_by_budget_and_keep_the_latest():
    pts = generate_points(isoflop_design([1e17, 1e18, 1e19, 1e20], LAW, 6), LAW, noise=0.0)
    splits = inner_splits(pts)
    b = pts["budget"].to_numpy()
    assert len(splits) == 2  # fit 1e17..1e18 -> 1e19, 1e20; fit 1e17..1e19 -> 1e20
    for (train, target), last in zip(splits, (1e18, 1e19), strict=True):
        assert b[train].max() == last and b[target].min() > last and not np.any(train & target)


def test_exact_law_gets_a_small_tau_a_wrong_law_a_large_one():
    budgets = [1e17, 1e18, 1e19, 1e20]
    pts = generate_points(isoflop_design(budgets, LAW, 7), LAW, noise=0.003, rng=1)
    exact = estimate_extrapolation(pts, 0.003, n_bootstrap=20, starts=STARTS)
    assert exact.n_origins == 2 and exact.n_points == 7 * 2 + 7
    # Wrong law: the truth bends away from Chinchilla's form as compute grows (2% more loss
    # per decade squared), which a fit of the early budgets cannot know.
    bend = np.exp(0.02 * np.log10(pts["flops"] / 1e17) ** 2)
    wrong = estimate_extrapolation(pts.assign(loss=pts["loss"] * bend), 0.003,
                                   n_bootstrap=20, starts=STARTS)
    assert exact.tau < 0.004 < 0.01 < wrong.tau, (exact.tau, wrong.tau)
    too_few = estimate_extrapolation(pts[pts["budget"] == 1e17], 0.003, starts=STARTS)
    assert too_few.tau == 0.0 and too_few.n_origins == 0 and "not measured" in too_few.note


def test_pi_adds_the_term_only_outside_the_fitted_range_as_student_t():
    fitted = FittedRange.of([1e7, 1e9], [1e9, 1e11])
    ext = ExtrapolationError(0.02, fitted, 3, 30)
    inside = predict_loss(LAW, 1e8, 1e10, sigma=0.0, extrapolation=ext)
    assert inside.loss_pi == pytest.approx([inside.loss] * 2)
    assert inside.extrapolation_sigma == 0.0
    n, d = 1e10, 1e12  # 10x beyond the largest N and D: C is 100x beyond
    out = predict_loss(LAW, n, d, sigma=0.0, extrapolation=ext)
    scale = 0.02 * math.log(100)
    assert out.extrapolation_sigma == pytest.approx(scale)
    q = student_t.ppf(0.9, 3)  # on the 3 origins tau was measured on
    assert out.loss_pi == pytest.approx([out.loss * math.exp(-q * scale),
                                         out.loss * math.exp(q * scale)], rel=2e-3)


def test_noise_block_round_trip_and_older_fits_without_the_term():
    ext = ExtrapolationError(0.015, FittedRange.of([1e7, 1e9], [1e9, 1e11]), 2, 14, "x")
    noise = NoiseEstimate("residuals", 0.01, [0.008, 0.012], 20, 0.8, 0, 0, 0.01,
                          [0.008, 0.012], 20, extrapolation=ext)
    again = NoiseEstimate.from_dict(noise.to_dict())
    assert again == noise
    old = noise.to_dict()
    del old["extrapolation"]
    assert NoiseEstimate.from_dict(old).extrapolation is None
    bad = noise.to_dict()
    bad["extrapolation"]["tau"] = -1
    with pytest.raises(UserError, match="noise.extrapolation.tau"):
        NoiseEstimate.from_dict(bad)
