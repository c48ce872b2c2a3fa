"""Marin's three public IsoFLOP ladders (data/reference): Approach 3 reaches an independently
computed optimum, and the rolling-origin validation runs on each.

Reference optima, computed once (2026-12-01) with plain scipy, not with this package: the
summed Huber objective (delta 1e-3) of LSE(a - alpha log N, b - beta log D, e) - log L in raw
(a, b, e, alpha, beta), analytic gradient, scipy.optimize.minimize(method="L-BFGS-B", default
tolerances) from each of Chinchilla's 4,500 grid starts plus 500 uniform random starts
(a, b in [0, 30], e in [-1, 1.5], alpha, beta in [0, 2.5], numpy default_rng(0)); the best
optimum then polished with ftol 1e-15, gtol 1e-12. All points of each CSV, params as given.
"""

from pathlib import Path

import pandas as pd
import pytest

from analysis.approach3 import fit_approach3
from analysis.rollout import rollout

DATA = Path(__file__).resolve().parents[2] / "data" / "reference"
REFERENCE = {
    "dclm": dict(objective=0.0005358371774, E=2.58796, A=347112, B=4082.59, alpha=0.685817,
                 beta=0.404815),
    "comma": dict(objective=0.0005255634093, E=2.70093, A=216049, B=1393.19, alpha=0.665784,
                  beta=0.349912),
    "nemotron": dict(objective=0.0005537317765, E=2.52024, A=143091, B=3798.31,
                     alpha=0.639257, beta=0.400374),
}


@pytest.fixture(scope="module", params=sorted(REFERENCE))
def ladder(request):
    return request.param, pd.read_csv(DATA / f"marin_{request.param}.csv").assign(
        run=lambda df: [f"row{i + 1}" for i in range(len(df))])


def test_approach3_reaches_the_reference_optimum(ladder):
    name, pts = ladder
    ref = REFERENCE[name]
    fit = fit_approach3(pts["params"], pts["tokens"], pts["loss"])
    assert fit.objective <= ref["objective"] * (1 + 1e-7)
    assert fit.objective == pytest.approx(ref["objective"], rel=1e-5)
    for key in ("E", "alpha", "beta"):
        assert getattr(fit, key) == pytest.approx(ref[key], rel=2e-3), key


@pytest.mark.slow
def test_rollout_runs_on_the_ladder(ladder):
    name, pts = ladder
    roll = rollout(pts, n_bootstrap=20)
    assert roll.mode == "budgets"
    # Every budget after the second is predicted once enough runs precede it.
    assert pts["budget"].nunique() - 3 <= len(roll.steps) <= pts["budget"].nunique() - 2
    summary = roll.summary()
    # A working law on a real ladder predicts the next budget's runs to within a few percent.
    assert summary["points_loss_mean_abs_rel_error"] < 0.05
