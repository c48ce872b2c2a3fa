"""Approaches 1 and 2 on synthetic IsoFLOP grids, and the fits.py facade."""

import json
import math
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from analysis.approach1 import envelope_matrix, fit_approach1, fit_approach1_points
from analysis.approach2 import FitWarning, PowerLawResult, fit_approach2, isoflop_minima
from analysis.approach3 import Approach3Result
from analysis.bootstrap import Holdout, bootstrap
from analysis.fitdoc import ApproachError, FitDocument, read_fit, write_fit
from analysis.fits import fit_all
from analysis.simulate import generate_curves, generate_points, isoflop_design
from scaling.errors import UserError

LAW = Approach3Result(A=406.4, B=410.7, E=1.69, alpha=0.34, beta=0.28, objective=0, n_points=0)
BUDGETS = np.geomspace(1e18, 1e21, 7)


@pytest.fixture(scope="module")
def clean_points():
    return generate_points(isoflop_design(BUDGETS, LAW, n_per_budget=9, span_dex=1.2), LAW)


def test_approach2_recovers_a_and_minima_of_a_noiseless_law(clean_points):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FitWarning)  # every minimum is bracketed and convex
        r = fit_approach2(clean_points)
    assert r.a == pytest.approx(LAW.a, abs=0.003)
    assert r.b == pytest.approx(LAW.b, abs=0.003)
    for m in r.minima:
        assert m.bracketed and m.curvature_positive
        assert math.log(m.params_opt / LAW.params_opt(m.budget)) == pytest.approx(0, abs=0.02)
        assert m.tokens_opt * m.params_opt * 6 == pytest.approx(m.budget, rel=0.05)
    assert r.params_opt(1e22) == pytest.approx(LAW.params_opt(1e22), rel=0.05)


def test_approach2_with_noise_stays_close(clean_points):
    pts = generate_points(isoflop_design(BUDGETS, LAW, 9, 1.2), LAW, noise=0.003, rng=3)
    r = fit_approach2(pts)
    assert r.a == pytest.approx(LAW.a, abs=0.03)  # simulate_study: sd(a) ~ 0.006 here


def test_approach2_flags_unbracketed_and_concave_minima():
    # Sizes all below the optimum: the minimum lies beyond the largest size tried.
    design = isoflop_design(BUDGETS[:3], LAW, n_per_budget=7, span_dex=0.6)
    design["params"] = design["params"] / 30
    design["tokens"] = design["budget"] / (6 * design["params"])
    pts = generate_points(design, LAW)
    with pytest.warns(FitWarning, match="not bracketed"):
        minima = isoflop_minima(pts)
    assert not any(m.bracketed for m in minima)
    concave = pd.DataFrame({"params": [1e8, 2e8, 4e8, 8e8], "tokens": [1e9] * 4,
                            "loss": [3.0, 3.2, 3.21, 3.0], "budget": [1e18] * 4})
    with pytest.warns(FitWarning) as record:
        (m,) = isoflop_minima(concave)
    assert any("not convex" in str(w.message) for w in record)
    assert not m.curvature_positive and m.loss_opt == 3.0
    assert m.params_opt == pytest.approx(1e8) or m.params_opt == pytest.approx(8e8)


def test_approach2_needs_two_budgets(clean_points):
    one = clean_points[clean_points["budget"] == BUDGETS[0]]
    with pytest.raises(UserError, match="at least 2 budgets"):
        fit_approach2(one)


def test_approach1_recovers_a_from_training_curves():
    curves = generate_curves(np.geomspace(1e7, 1e10, 31), LAW, max_tokens_per_param=200)
    em = envelope_matrix(curves)
    levels, winners = em.winners()
    assert len(levels) > 50
    r = fit_approach1(curves)
    # The envelope picks from a grid of sizes 10^(3/30) apart: quantisation ~0.05 in ln N*,
    # spread over two decades of C, so the slope is good to ~0.01.
    assert r.a == pytest.approx(LAW.a, abs=0.01)
    assert r.b == pytest.approx(LAW.b, abs=0.01)
    # Envelope optima lie near the law's frontier.
    err = np.log(em.sizes[winners] / LAW.params_opt(np.exp(em.log_levels[levels])))
    assert np.abs(err).max() < 0.15


def test_approach1_from_final_points(clean_points):
    r = fit_approach1_points(clean_points)
    assert r.extra["from"] == "final_points"
    # Sizes 10^0.15 apart: the per-budget winner is within 0.17 in ln N of N*.
    assert r.a == pytest.approx(LAW.a, abs=0.04)


def test_fit_all_and_the_fit_document_round_trip(clean_points, tmp_path):
    small_grid = np.array([[6.0, 6.0, 0.5, 0.34, 0.28], [5.0, 5.0, 0.0, 0.5, 0.5]])
    with pytest.warns(FitWarning) as record:
        res = fit_all(clean_points.assign(budget=np.nan), approaches="all",
                      starts=small_grid)
    assert any("approach2 skipped" in str(w.message) for w in record)
    assert isinstance(res["approach2"], ApproachError)
    assert isinstance(res["approach3"], Approach3Result)
    res = fit_all(clean_points, approaches="all", starts=small_grid)
    doc = FitDocument(source="x.csv", kind="csv", n_points=len(clean_points), approaches=res,
                      bootstrap=bootstrap(clean_points, res, n=20))
    doc = replace(doc, validation={"holdout": Holdout(
        budget=1e21, n_train=54, n_heldout=9, observed_params_opt=2e9, observed_loss_opt=2.1,
        observed_bracketed=True, predicted={"approach3": {"params_opt": 2.2e9}}, notes=("x",))})
    d = doc.to_dict()
    assert d["n_points"] == len(clean_points) and d["params_kind"] == "total"
    assert set(d["approach3"]) >= {"A", "B", "E", "alpha", "beta", "objective", "a", "b",
                                   "G", "n_points", "a_ci", "bootstrap"}
    assert {"budget", "params_opt", "tokens_opt", "loss_opt", "bracketed", "coeffs"} <= set(
        d["approach2"]["minima"][0])
    back = read_fit(write_fit(tmp_path / "fit.json", doc))
    assert back.to_dict() == json.loads((tmp_path / "fit.json").read_text())
    assert back.approaches["approach3"].params == pytest.approx(doc.approaches["approach3"].params)
    assert isinstance(back.approaches["approach2"], PowerLawResult)
    assert back.approaches["approach2"].minima == doc.approaches["approach2"].minima
    assert back.interval("approach3", "alpha") == doc.interval("approach3", "alpha")
    assert back.validation == doc.validation
    assert doc.approaches["approach3"].alpha == pytest.approx(LAW.alpha, abs=1e-3)
    with pytest.raises(UserError, match="approach: expected"):
        fit_all(clean_points, approaches="4")


def test_saved_parabolas_are_the_least_squares_fit_in_log10_n(clean_points):
    for m in fit_approach2(clean_points).minima:
        group = clean_points[clean_points["budget"] == m.budget]
        expect = np.polyfit(np.log10(group["params"]), group["loss"], 2)
        assert np.allclose(m.coeffs, expect, rtol=1e-8, atol=1e-10)
        assert m.loss(m.params_opt) == pytest.approx(m.loss_opt, rel=1e-9)  # vertex on it


GOOD = {"approach3": {"A": 400.0, "B": 1800.0, "E": 1.7, "alpha": 0.34, "beta": 0.3},
        "approach2": {"a": 0.47, "b": 0.53, "k_params": 0.4, "k_tokens": 0.42}}


@pytest.mark.parametrize("approach,key,value", [
    ("approach3", "A", -1.0), ("approach3", "E", float("nan")), ("approach3", "alpha", 0.0),
    ("approach3", "beta", float("inf")), ("approach3", "B", "x"), ("approach2", "a", 1.2),
    ("approach2", "b", 0.0), ("approach2", "k_params", -0.4),
])
def test_reading_refuses_out_of_domain_values_naming_the_key(tmp_path, approach, key, value):
    raw = json.loads(json.dumps(GOOD))
    raw[approach][key] = value
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(raw))  # NaN / Infinity as Python's json writes them
    assert isinstance(FitDocument.from_dict(GOOD), FitDocument)
    with pytest.raises(UserError, match=rf"fit\.{approach}\.{key}: expected") as err:
        read_fit(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_reading_refuses_bad_samples_and_minima():
    raw = json.loads(json.dumps(GOOD))
    raw["approach3"]["bootstrap"] = {"level": 0.8, "n": 2, "seed": 0,
                                     "samples": {"A": [1.0, "2"]}}
    with pytest.raises(UserError, match="approach3.bootstrap.samples.A"):
        FitDocument.from_dict(raw)
    raw = json.loads(json.dumps(GOOD))
    raw["approach2"]["minima"] = [{"budget": 1e18, "params_opt": -5.0, "tokens_opt": 1.0,
                                   "loss_opt": 3.0}]
    with pytest.raises(UserError, match=r"approach2.minima\[0\].params_opt"):
        FitDocument.from_dict(raw)
