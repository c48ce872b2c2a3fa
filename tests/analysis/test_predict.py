"""Predictions and their intervals: the law by hand, CI inside PI, PI coverage of fresh runs."""

import math

import numpy as np
import pytest

from analysis.approach3 import Approach3Result, chinchilla_grid, fit_approach3, refit_many
from analysis.bootstrap import resample_indices
from analysis.extrapolation import estimate_extrapolation
from analysis.noise import estimate_noise
from analysis.predict import (
    LawSamples,
    bootstrap_law_samples,
    predict_loss,
    resolve_point,
)
from analysis.simulate import EPOCH_LAW, generate_points, isoflop_design
from scaling.errors import UserError

LAW = Approach3Result(A=400.0, B=2000.0, E=1.7, alpha=0.34, beta=0.28, objective=math.nan,
                      n_points=0)


def test_point_prediction_is_the_law_by_hand():
    n, d = 7e8, 1.3e10
    by_hand = 1.7 + 400.0 / n**0.34 + 2000.0 / d**0.28
    p = predict_loss(LAW, n, d, sigma=0.01)
    assert p.loss == pytest.approx(by_hand, rel=1e-14)
    assert p.flops == pytest.approx(6 * n * d)
    assert p.loss_ci is None  # no bootstrap: the law is taken as exact
    # Noise only: lognormal quantiles of the point prediction.
    assert p.loss_pi == pytest.approx([by_hand * math.exp(-1.2816 * 0.01),
                                       by_hand * math.exp(1.2816 * 0.01)], rel=2e-4)
    assert predict_loss(LAW, n, d, sigma=0.0).loss_pi == pytest.approx([by_hand] * 2)


def test_resolve_point_from_flops_and_bad_input():
    assert resolve_point(1e8, None, 6e18) == pytest.approx((1e8, 1e10))
    assert resolve_point(None, 1e10, 6e18) == pytest.approx((1e8, 1e10))
    assert resolve_point(1e8, 2e9) == (1e8, 2e9)
    for bad in [dict(n_params=-1.0, n_tokens=1e9), dict(n_params=0.0, n_tokens=1e9),
                dict(n_params=1e8), dict(n_tokens=1e9), dict(flops=1e18),
                dict(n_params=1e8, n_tokens=1e9, flops=6e17),
                dict(n_params=float("nan"), n_tokens=1e9)]:
        with pytest.raises(UserError):
            resolve_point(**bad)


@pytest.fixture(scope="module")
def study():
    pts = generate_points(isoflop_design([1e18, 1e19, 1e20], n_per_budget=7), noise=0.01, rng=0)
    law = fit_approach3(pts["params"], pts["tokens"], pts["loss"])
    return pts, law


def test_ci_lies_inside_pi_and_matches_the_bootstrap(study):
    pts, law = study
    samples = bootstrap_law_samples(pts, law, n=100, seed=0)
    noise = estimate_noise(pts, law)
    for n, d in [(3e8, 6e9), (3e9, 6e10)]:  # inside the data, and 10x its largest budget
        p = predict_loss(law, n, d, sigma=noise.sigma, samples=samples, dof=noise.dof)
        assert p.loss_pi[0] < p.loss_ci[0] <= p.loss <= p.loss_ci[1] < p.loss_pi[1]
        by_hand = samples.E + samples.A / n**samples.alpha + samples.B / d**samples.beta
        assert p.loss_ci == pytest.approx(np.quantile(by_hand, [0.1, 0.9]), rel=1e-12)


@pytest.mark.slow
def test_80_percent_pi_covers_70_to_90_percent_of_fresh_runs():
    """Many studies from a known law with known noise: each is fitted, bootstrapped and asked
    for an 80% PI at the largest budget's optimum and at 4x beyond; fresh runs drawn there from
    the truth should fall inside about 80% of the time, with or without the extrapolation
    term (the law is exact here, so that term must stay small enough not to over-cover)."""
    noise, n_studies, n_boot = 0.01, 30, 60
    design = isoflop_design([1e18, 1e19, 1e20], n_per_budget=7)
    n, d = design["params"].to_numpy(float), design["tokens"].to_numpy(float)
    rng = np.random.default_rng(1)
    clean = EPOCH_LAW.predict(n, d)
    log_loss_SxP = np.log(clean) + noise * rng.standard_normal((n_studies, len(n)))
    centre = fit_approach3(n, d, np.exp(log_loss_SxP[0])).theta()
    theta_Sx5, _ = refit_many(n, d, log_loss_SxP, None, centre)
    # Every study's bootstrap in one batched refit: rows = study x resample.
    idx = resample_indices(design, n_boot, seed=2)
    weights_BxP = np.stack([np.bincount(r, minlength=len(n)) for r in idx]).astype(float)
    theta_all, _ = refit_many(n, d, np.repeat(log_loss_SxP, n_boot, axis=0),
                              np.tile(weights_BxP, (n_studies, 1)), centre)
    theta_all = theta_all.reshape(n_studies, n_boot, 5)
    targets = [(float(EPOCH_LAW.params_opt(c)), float(EPOCH_LAW.tokens_opt(c)))
               for c in (1e20, 4e20)]
    inside, inside_ext = [], []
    for s in range(n_studies):
        law = Approach3Result.from_theta(theta_Sx5[s], math.nan, len(n))
        pts = design.assign(loss=np.exp(log_loss_SxP[s]), run=[f"r{i}" for i in range(len(n))])
        est = estimate_noise(pts, law)
        t = theta_all[s]
        samples = LawSamples(np.exp(t[:, 0]), np.exp(t[:, 1]), np.exp(t[:, 2]), t[:, 3], t[:, 4])
        ext = estimate_extrapolation(pts, est.sigma, n_bootstrap=20, seed=s,
                                     starts=chinchilla_grid()[::9])
        for tn, td in targets:
            fresh = EPOCH_LAW.predict(tn, td) * np.exp(noise * rng.standard_normal(200))
            for out, term in ((inside, None), (inside_ext, ext)):
                p = predict_loss(law, tn, td, sigma=est.sigma, samples=samples, dof=est.dof,
                                 seed=s, extrapolation=term)
                out.append(np.mean((fresh >= p.loss_pi[0]) & (fresh <= p.loss_pi[1])))
    assert 0.70 <= np.mean(inside) <= 0.90, np.mean(inside)
    assert 0.70 <= np.mean(inside_ext) <= 0.90, np.mean(inside_ext)
