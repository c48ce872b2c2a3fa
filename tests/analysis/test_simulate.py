"""Study design by simulation: the generated data follow the law; spreads scale with noise."""

import numpy as np
import pytest

from analysis.approach3 import Approach3Result
from analysis.simulate import (
    EPOCH_LAW,
    generate_curves,
    generate_points,
    isoflop_design,
    simulate_study,
)
from scaling.errors import UserError

LAW = Approach3Result(A=400.0, B=1800.0, E=1.7, alpha=0.34, beta=0.30, objective=0, n_points=0)


def test_design_is_centred_on_the_frontier_and_on_budget():
    budgets = [1e18, 1e19, 1e20]
    des = isoflop_design(budgets, LAW, n_per_budget=7, span_dex=1.0)
    assert len(des) == 21
    assert np.allclose(6 * des["params"] * des["tokens"], des["budget"])
    for c, grp in des.groupby("budget"):
        log_n = np.log10(grp["params"].to_numpy())
        assert log_n.max() - log_n.min() == pytest.approx(1.0)
        assert 10 ** np.median(log_n) == pytest.approx(LAW.params_opt(c), rel=1e-9)
    with pytest.raises(UserError, match="n_per_budget"):
        isoflop_design(budgets, LAW, n_per_budget=2)
    with pytest.raises(UserError, match="budgets"):
        isoflop_design([-1.0], LAW)


def test_generated_losses_follow_the_law_with_the_stated_noise():
    des = isoflop_design(np.geomspace(1e18, 1e21, 10), LAW, n_per_budget=50)
    clean = generate_points(des, LAW)
    assert np.allclose(clean["loss"], LAW.predict(clean["params"], clean["tokens"]))
    noisy = generate_points(des, LAW, noise=0.01, rng=0)
    log_ratio = np.log(noisy["loss"] / clean["loss"])
    assert np.std(log_ratio) == pytest.approx(0.01, rel=0.1)  # 500 draws
    curves = generate_curves([1e7, 1e8], LAW, n_logged=10)
    assert len(curves) == 20
    assert np.allclose(curves["flops"], 6 * curves["params"] * curves["tokens"])
    assert (curves.groupby("run")["loss"].apply(lambda s: s.is_monotonic_decreasing)).all()


def test_study_spread_is_centred_on_truth_and_scales_with_noise():
    des = isoflop_design(np.geomspace(1e18, 1e21, 6), EPOCH_LAW, n_per_budget=7)
    kw = dict(n_sims=60, target_flops=1e23, seed=0)
    lo_noise = simulate_study(des, EPOCH_LAW, noise=0.002, **kw)
    hi_noise = simulate_study(des, EPOCH_LAW, noise=0.008, **kw)
    for rep in (lo_noise, hi_noise):
        assert set(rep.samples) >= {"approach3.a", "approach3.params_opt",
                                    "approach3.loss_opt", "approach2.a"}
        for name in ("approach3.a", "approach2.a", "approach3.loss_opt"):
            lo, hi = rep.interval(name)
            # The truth sits inside a widened interval (60 sims, small-sample slack).
            pad = 0.5 * (hi - lo)
            assert lo - pad < rep.truth[name] < hi + pad, name
    # Small noise: the fit is locally linear in the noise, so 4x the noise gives ~4x the
    # width (3x-5.5x allows for 60-sample quantile error).
    for name in ("approach3.a", "approach2.a", "approach3.loss_opt"):
        ratio = hi_noise.width(name) / lo_noise.width(name)
        assert 3.0 < ratio < 5.5, (name, ratio)
    d = lo_noise.to_dict()
    assert d["estimates"]["approach3.a"]["truth"] == pytest.approx(EPOCH_LAW.a)
    with pytest.raises(UserError, match="n_sims"):
        simulate_study(des, EPOCH_LAW, n_sims=1)


def test_study_inputs_take_the_fits_measured_noise_unless_told():
    from analysis.fitdoc import FitDocument
    from analysis.noise import NoiseEstimate
    from analysis.simulate import DEFAULT_NOISE, EPOCH_LAW, study_inputs

    law = EPOCH_LAW.__class__(A=400.0, B=1800.0, E=1.7, alpha=0.34, beta=0.3, objective=0.0,
                              n_points=30)
    noise = NoiseEstimate("replicates", 0.004, [0.003, 0.005], 12, 0.8, 6, 18, 0.006,
                          [0.005, 0.007], 25)
    fit = FitDocument(approaches={"approach3": law}, noise=noise)
    got = study_inputs(fit, "runs/s/fit.json")
    assert got.law is law and got.noise == 0.004 and "runs/s/fit.json" in got.noise_source
    assert "replicates" in got.noise_source
    assert study_inputs(fit, "f.json", noise=0.02).noise == 0.02
    bare = study_inputs(None)
    assert bare.law is EPOCH_LAW and bare.noise == DEFAULT_NOISE and "default" in bare.noise_source
