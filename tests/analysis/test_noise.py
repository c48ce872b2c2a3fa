"""Measured noise against simulated studies whose noise is known."""

import numpy as np
import pandas as pd
import pytest

from analysis.noise import (
    estimate_noise,
    exclude_runs,
    flag_outliers,
    replicate_groups,
    replicate_noise,
    sigma_interval,
)
from analysis.simulate import EPOCH_LAW, generate_points, isoflop_design
from scaling.errors import UserError

TRUE_SIGMA = 0.01


def replicated(n_reps: int, seed: int) -> pd.DataFrame:
    design = isoflop_design([1e18, 1e19, 1e20], n_per_budget=5)
    reps = pd.concat([design] * n_reps, ignore_index=True)
    return generate_points(reps, noise=TRUE_SIGMA, rng=seed)


def test_replicates_are_grouped_by_grid_point():
    pts = replicated(3, 0)
    group = replicate_groups(pts)
    assert len(np.unique(group)) == 15
    assert np.all(np.bincount(group) == 3)


def test_pooled_noise_interval_covers_the_truth_at_its_level():
    # The 80% interval of the pooled sigma should contain the true sigma in ~80% of studies.
    inside = []
    for seed in range(300):
        sigma, dof, *_ = replicate_noise(replicated(2, seed))
        lo, hi = sigma_interval(sigma, dof, 0.8)
        inside.append(lo <= TRUE_SIGMA <= hi)
    assert 0.72 <= np.mean(inside) <= 0.88


def test_estimate_uses_replicates_and_reports_each_size():
    pts = replicated(4, 1)
    est = estimate_noise(pts, EPOCH_LAW, level=0.95)
    assert est.source == "replicates"
    assert est.dof == 15 * 3 and est.n_groups == 15 and est.n_replicated_runs == 60
    assert est.sigma_ci[0] <= TRUE_SIGMA <= est.sigma_ci[1]
    assert len(est.per_size) == 15 and all(s.n_replicates == 4 for s in est.per_size)
    # The law is the truth here, so the residual scatter measures the same noise.
    assert est.residual_sigma_ci[0] <= TRUE_SIGMA <= est.residual_sigma_ci[1]


def test_without_replicates_the_residual_scatter_is_used_and_said():
    pts = generate_points(isoflop_design([1e18, 1e19, 1e20], n_per_budget=9), noise=TRUE_SIGMA,
                          rng=3)
    est = estimate_noise(pts, EPOCH_LAW, level=0.95, n_fitted=0)
    assert est.source == "residuals" and est.n_groups == 0
    assert "no (N, D) point was run twice" in est.note
    assert est.sigma_ci[0] <= TRUE_SIGMA <= est.sigma_ci[1]
    with pytest.raises(UserError):
        estimate_noise(pts)


def test_outlier_is_flagged_and_can_be_excluded_by_name():
    pts = generate_points(isoflop_design([1e18, 1e19, 1e20], n_per_budget=9), noise=0.005,
                          rng=4)
    pts.loc[7, "loss"] *= 1.08  # a broken run: 8% above the law, ~15 sigma
    flagged = flag_outliers(pts, EPOCH_LAW, sigma=0.005, k=3)
    assert [o.run for o in flagged] == ["sim7"] and flagged[0].z > 10
    kept = exclude_runs(pts, ["sim7"])
    assert len(kept) == len(pts) - 1 and "sim7" not in set(kept["run"])
    assert flag_outliers(kept, EPOCH_LAW, sigma=0.005, k=4) == []
    with pytest.raises(UserError, match="no run named 'nope'"):
        exclude_runs(pts, ["nope"])
