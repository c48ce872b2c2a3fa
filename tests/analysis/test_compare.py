"""Effective compute multiplier, crossover and wall-clock multiplier (analysis.compare), the
joint fit (analysis.joint) and labelled sources (analysis.labels), against known truths.

Known multiplier: B's law is A's with B-coefficient B_B = B_A 2^-beta, so L_B(N, D) =
L_A(N, 2D) and B's compute-optimal loss at C is A's at 2C: the multiplier is exactly 2 at
every C (and A over B is exactly 1/2).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize_scalar

from analysis.approach3 import Approach3Result, ParametricLaw, fit_approach3
from analysis.compare import (
    Contender,
    compare_all,
    compare_pair,
    compute_for_loss,
    crossovers,
    fit_throughput,
    multiplier,
)
from analysis.joint import fit_joint
from analysis.labels import contenders, split_labels
from analysis.simulate import generate_points, isoflop_design
from scaling.errors import UserError

DATA = Path(__file__).resolve().parents[2] / "data" / "reference"
LAW_A = ParametricLaw(A=400.0, B=1800.0, E=1.7, alpha=0.34, beta=0.30)
LAW_B = ParametricLaw(A=400.0, B=1800.0 * 2 ** -0.30, E=1.7, alpha=0.34, beta=0.30)
BUDGETS = np.geomspace(1e17, 1e20, 5)


def _result(law: ParametricLaw) -> Approach3Result:
    return Approach3Result(A=law.A, B=law.B, E=law.E, alpha=law.alpha, beta=law.beta)


def _ladder(law: ParametricLaw, label: str, noise: float, seed: int) -> pd.DataFrame:
    design = isoflop_design(BUDGETS, _result(law), 7, 1.5)
    return generate_points(design, _result(law), noise=noise, rng=seed).assign(label=label)


def test_loss_opt_inverts_and_agrees_with_a_numerical_minimum():
    flops = np.geomspace(1e15, 1e25, 11)
    # Independent reference: minimise L(N, C / 6N) over log N numerically at each C.
    for c in flops:
        res = minimize_scalar(lambda x, c=c: float(LAW_A.predict(math.exp(x), c / 6 / math.exp(x))),
                              bounds=(0, 60), method="bounded", options=dict(xatol=1e-10))
        assert float(LAW_A.loss_opt(c)) == pytest.approx(res.fun, rel=1e-9)
    assert compute_for_loss(LAW_A, LAW_A.loss_opt(flops)) == pytest.approx(flops, rel=1e-9)
    assert np.isinf(compute_for_loss(LAW_A, LAW_A.E))  # the irreducible loss is never reached


def test_known_multiplier_is_exact_on_the_laws():
    flops = np.geomspace(1e15, 1e25, 21)
    assert multiplier(LAW_A, LAW_B, flops) == pytest.approx(2.0, rel=1e-9)
    assert multiplier(LAW_B, LAW_A, flops) == pytest.approx(0.5, rel=1e-9)
    assert multiplier(LAW_A, LAW_A, flops) == pytest.approx(1.0, rel=1e-12)
    # B with a lower E than A: beyond some C, A can never reach B's loss.
    lower_e = ParametricLaw(A=400.0, B=1800.0, E=1.6, alpha=0.34, beta=0.30)
    assert np.isinf(multiplier(LAW_A, lower_e, 1e30))


def test_crossover_of_frontiers_that_cross():
    # B: better at small C (smaller A, B coefficients), worse at large C (higher E).
    b = ParametricLaw(A=200.0, B=900.0, E=1.8, alpha=0.34, beta=0.30)
    found = crossovers(LAW_A, b, 1e10, 1e30)
    assert len(found) == 1
    c = found[0]
    assert float(LAW_A.loss_opt(c)) == pytest.approx(float(b.loss_opt(c)), rel=1e-10)
    assert float(multiplier(LAW_A, b, c)) == pytest.approx(1.0, rel=1e-6)
    assert multiplier(LAW_A, b, c / 10) > 1 > multiplier(LAW_A, b, c * 10)
    assert crossovers(LAW_A, LAW_B, 1e10, 1e30) == []  # parallel frontiers never cross
    # Bootstrap laws that all equal the point laws cross where the point laws do.
    rep = lambda law: ParametricLaw(*(np.full(5, getattr(law, k))  # noqa: E731
                                      for k in ("A", "B", "E", "alpha", "beta")))
    pair = compare_pair(Contender("a", LAW_A, rep(LAW_A), (1e18,)),
                        Contender("b", b, rep(b), (1e18,)), crossover_range=(1e10, 1e30))
    assert pair.crossover_fraction == 1.0
    assert pair.crossover_ci == pytest.approx([c, c], rel=1e-6)


def test_wallclock_multiplier_from_measured_rates():
    # A device of R FLOP/s trains tokens/s = R / 6N: a power law of slope -1 in N.
    n = np.geomspace(1e6, 1e9, 7)
    rate_a = fit_throughput(n, 1e12 / (6 * n))
    rate_b = fit_throughput(n, 3e12 / (6 * n))  # B runs 3x the FLOP/s
    assert rate_a.slope == pytest.approx(-1.0, abs=1e-9)
    assert fit_throughput(n, np.full(7, np.nan)) is None
    pair = compare_pair(Contender("a", LAW_A, throughput=rate_a, budgets=(1e18, 1e19)),
                        Contender("b", LAW_B, throughput=rate_b, budgets=(1e18, 1e19)),
                        target_flops=1e22)
    for row in (*pair.budgets, pair.target):
        assert row.multiplier == pytest.approx(2.0, rel=1e-9)
        # time = C / R: A needs 2C at R, B needs C at 3R.
        assert row.wallclock_multiplier == pytest.approx(6.0, rel=1e-9)
        assert row.multiplier_ci is None  # no bootstrap laws: no interval


@pytest.mark.slow
def test_known_multiplier_recovered_inside_its_interval(tmp_path):
    csv = tmp_path / "ab.csv"
    pd.concat([_ladder(LAW_A, "A", 0.004, 1), _ladder(LAW_B, "B", 0.004, 2)]).to_csv(csv,
                                                                                    index=False)
    sides = contenders([csv], n_bootstrap=40, seed=0, level=0.9)
    assert [s.name for s in sides] == ["A", "B"]
    (pair,) = compare_all(sides, target_flops=1e21, level=0.9)
    assert [r.flops for r in pair.budgets] == pytest.approx(BUDGETS)
    for row in (*pair.budgets, pair.target):
        lo, hi = row.multiplier_ci
        assert lo < 2.0 < hi, row
        assert row.multiplier == pytest.approx(2.0, rel=0.15)
        assert hi / lo < 2.0  # an interval that says something
    assert pair.n_samples >= 30


@pytest.mark.slow
def test_joint_fit_recovers_a_shared_E():
    a = ParametricLaw(A=400.0, B=1800.0, E=1.8, alpha=0.34, beta=0.30)
    b = ParametricLaw(A=250.0, B=900.0, E=1.8, alpha=0.30, beta=0.26)
    pa, pb = _ladder(a, "a", 0.002, 3), _ladder(b, "b", 0.002, 4)
    groups = {k: (p["params"], p["tokens"], p["loss"]) for k, p in (("a", pa), ("b", pb))}
    independent = {k: fit_approach3(*g) for k, g in groups.items()}  # shared by both fits
    joint = fit_joint(groups, "shared-E", independent=independent)
    assert joint.laws["a"].E == joint.laws["b"].E == joint.shared["E"]
    assert joint.shared["E"] == pytest.approx(1.8, rel=0.02)
    # Sharing is a constraint: it can only cost objective, never gain.
    assert joint.objective >= joint.independent_objective * (1 - 1e-6)
    assert joint.laws["b"].alpha == pytest.approx(0.30, rel=0.1)
    shared = fit_joint(groups, "shared-exponents", independent=independent)
    assert shared.laws["a"].alpha == shared.laws["b"].alpha
    assert shared.objective >= joint.objective * (1 - 1e-6)  # fewer free parameters still
    assert set(shared.to_dict()["labels"]) == {"a", "b"}


def test_labels_split_and_bad_labels():
    pts = pd.DataFrame({"label": ["x", "y", "x"], "loss": [1.0, 2.0, 3.0]})
    groups = split_labels(pts)
    assert list(groups) == ["x", "y"] and list(groups["x"]["loss"]) == [1.0, 3.0]
    assert list(split_labels(pts.drop(columns="label"))) == [""]
    with pytest.raises(UserError, match="row 2 has no label"):
        split_labels(pts.assign(label=["x", None, "y"]))
    with pytest.raises(UserError, match="label: expected"):
        split_labels(pts.assign(label=["x", "a b", "y"]))
    with pytest.raises(UserError, match="expected at least 2 ladders"):
        compare_all([Contender("a", LAW_A)])


def test_a_label_with_too_few_points_is_named(tmp_path):
    csv = tmp_path / "few.csv"
    pd.concat([_ladder(LAW_A, "A", 0.0, 1), _ladder(LAW_B, "B", 0.0, 2).head(4)]).to_csv(
        csv, index=False)
    with pytest.raises(UserError, match=r"label 'B': points: expected at least 6"):
        contenders([csv], n_bootstrap=0)


@pytest.mark.slow
def test_marin_ladders_give_finite_multipliers_with_intervals():
    """One model ladder, three data sets (data/reference/marin_*.csv; Paloma loss, the same
    evaluation for all three). Measured 2026-12-02 with this code (Approach 3 per ladder,
    50 resamples; the point values do not depend on the bootstrap): the compute multiplier of
    Nemotron-CC over DCLM is 1.118 at 3e18 rising to 1.549 at 3e20; of DCLM over Comma 0.657
    at 3e18 falling to 0.242 at 3e20; of Nemotron-CC over Comma 1.906 at 3e18 to 15.9 at 3e20.
    So at every swept budget Nemotron-CC > DCLM > Comma, and the gaps widen with compute."""
    sides = contenders([DATA / f"marin_{k}.csv" for k in ("dclm", "comma", "nemotron")],
                       n_bootstrap=16, seed=0, level=0.8)
    pairs = {(p.a, p.b): p for p in compare_all(sides, level=0.8)}
    dclm_nemo = pairs["marin_dclm", "marin_nemotron"]
    dclm_comma = pairs["marin_dclm", "marin_comma"]
    comma_nemo = pairs["marin_comma", "marin_nemotron"]
    for pair in (dclm_nemo, dclm_comma, comma_nemo):
        for row in pair.budgets:
            assert math.isfinite(row.multiplier) and all(map(math.isfinite, row.multiplier_ci))
            assert row.multiplier_ci[0] <= row.multiplier <= row.multiplier_ci[1]
    at = lambda pair, c: next(r for r in pair.budgets if r.flops == c)  # noqa: E731
    assert at(dclm_nemo, 3e18).multiplier == pytest.approx(1.118, abs=2e-3)
    assert at(dclm_nemo, 3e20).multiplier == pytest.approx(1.549, abs=5e-3)
    assert at(dclm_comma, 3e18).multiplier == pytest.approx(0.657, abs=2e-3)
    assert at(comma_nemo, 3e20).multiplier == pytest.approx(15.9, rel=1e-2)
    # The ordering holds inside the intervals at every budget the three share.
    for c in (3e18, 9e18, 1.8e19, 3e19, 9e19, 1.8e20, 3e20):
        assert at(dclm_nemo, c).multiplier_ci[0] > 1
        assert at(dclm_comma, c).multiplier_ci[1] < 1
        assert at(comma_nemo, c).multiplier_ci[0] > 1
    # Nemotron-CC's advantage over DCLM grows with compute.
    m = [r.multiplier for r in dclm_nemo.budgets]
    assert m == sorted(m)
