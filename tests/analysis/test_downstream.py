"""The two-step downstream forecast (analysis.downstream): synthetic runs drawn from a known
task-loss law and a known accuracy sigmoid are recovered, with intervals through both steps."""

import json

import numpy as np
import pytest

from analysis.approach3 import Approach3Result
from analysis.downstream import (
    SigmoidLaw,
    TaskFit,
    fit_sigmoid,
    fit_task_points,
    predict_task,
    read_task_fit,
    write_task_fit,
)
from analysis.simulate import generate_points, isoflop_design
from scaling.errors import UserError

STEP1 = Approach3Result(A=400.0, B=1800.0, E=1.7, alpha=0.34, beta=0.30)
STEP2 = SigmoidLaw(chance=0.25, ceiling=0.85, k=3.0, L0=3.5)
ACC_NOISE = 0.01


BUDGETS = np.geomspace(1e17, 1e21, 5)


def synthetic_points(seed: int = 0):
    """IsoFLOP runs whose task loss follows STEP1 (log-normal noise 0.3%) and whose
    accuracy follows STEP2 of the true mean loss (plus item-sampling-like noise)."""
    rng = np.random.default_rng(seed)
    pts = generate_points(isoflop_design(BUDGETS, STEP1, 7, 1.5), STEP1, noise=0.003, rng=seed)
    mean_loss = STEP1.predict(pts["params"], pts["tokens"])
    acc = STEP2.predict(mean_loss) + ACC_NOISE * rng.standard_normal(len(pts))
    return pts.assign(**{"task/t/accuracy": np.clip(acc, 0, 1), "task/t/chance": 0.25})


def test_sigmoid_fit_recovers_a_known_curve():
    loss = np.linspace(2.0, 6.0, 40)
    acc = STEP2.predict(loss) + 0.005 * np.random.default_rng(1).standard_normal(40)
    ceiling, k, L0, rss = fit_sigmoid(loss, acc, 0.25)
    assert ceiling == pytest.approx(0.85, abs=0.02)
    assert k == pytest.approx(3.0, rel=0.1)
    assert L0 == pytest.approx(3.5, abs=0.05)
    assert rss == pytest.approx(40 * 0.005**2, rel=0.6)
    # the floor is chance: far above L0 the curve sits at chance, never below it
    assert SigmoidLaw(0.25, ceiling, k, L0).predict(50.0) == pytest.approx(0.25, abs=1e-9)


def test_weights_are_multiplicities():
    loss = np.array([2.0, 2.5, 3.0, 3.5, 4.0, 5.0])
    acc = STEP2.predict(loss) + np.array([0.01, -0.02, 0.015, -0.01, 0.02, -0.005])
    w = np.array([1, 3, 0, 2, 1, 1])
    repeated = fit_sigmoid(np.repeat(loss, w), np.repeat(acc, w), 0.25)
    weighted = fit_sigmoid(loss, acc, 0.25, weights=w)
    np.testing.assert_allclose(weighted[:3], repeated[:3], rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def task_fit():
    return fit_task_points(synthetic_points(), {"source": "synthetic"}, "t", n_bootstrap=40,
                           level=0.95, seed=0)


@pytest.mark.slow  # the shared fixture fits step 1 (JAX compile) with 40 resamples
def test_both_steps_recover_their_laws(task_fit):
    law = task_fit.law
    assert law.E == pytest.approx(1.7, rel=0.05)
    assert law.alpha == pytest.approx(0.34, abs=0.03)
    assert law.beta == pytest.approx(0.30, abs=0.03)
    assert task_fit.step2.chance == 0.25
    assert task_fit.step2.ceiling == pytest.approx(0.85, abs=0.03)
    assert task_fit.step2.k == pytest.approx(3.0, rel=0.15)
    assert task_fit.step2.L0 == pytest.approx(3.5, abs=0.1)
    boot = task_fit.step2_bootstrap
    for key, truth in (("ceiling", 0.85), ("k", 3.0), ("L0", 3.5)):
        lo, hi = boot.interval(key)
        assert lo <= truth <= hi, (key, lo, hi)
    assert task_fit.step1.metric == "task/t/loss"
    assert task_fit.step1.bootstrap["approach3"].n == boot.n == 40


@pytest.mark.slow  # the shared fixture fits step 1 (JAX compile) with 40 resamples
def test_held_out_accuracy_inside_its_interval(task_fit):
    # a budget 10x beyond the largest fitted one, at its compute-optimal size
    flops = 1e22
    n, d = float(STEP1.params_opt(flops)), float(STEP1.tokens_opt(flops))
    truth = float(STEP2.predict(STEP1.predict(n, d)))
    out = predict_task(task_fit, n, d, level=0.95)
    lo, hi = out["accuracy_ci"]
    assert lo <= truth <= hi, (truth, lo, hi)
    assert abs(out["accuracy"] - truth) < 0.02
    assert hi - lo < 0.1  # the interval says something
    assert out["task_loss_ci"][0] <= float(STEP1.predict(n, d)) <= out["task_loss_ci"][1]
    assert out["task_loss_pi"][0] <= out["task_loss_ci"][0]  # one run scatters more
    assert out["n_bootstrap"] >= 38 and out["extrapolated"] is True


@pytest.mark.slow  # the shared fixture fits step 1 (JAX compile) with 40 resamples
def test_step1_uncertainty_reaches_step2(task_fit):
    """With step 2's samples held at the full-data fit, the accuracy interval is only step
    1's; the paired one is at least as wide as that (both steps vary)."""
    n, d = 1e10, 2e11
    law_S, sig_S = task_fit.paired_samples()
    only_step1 = task_fit.step2.predict(law_S.predict(n, d))
    both = sig_S.predict(law_S.predict(n, d))
    assert np.nanstd(only_step1) > 0
    assert np.nanstd(both) >= 0.9 * np.nanstd(only_step1)


@pytest.mark.slow  # the shared fixture fits step 1 (JAX compile) with 40 resamples
def test_document_round_trip(task_fit, tmp_path):
    path = write_task_fit(tmp_path / "fit.downstream.t.json", task_fit)
    again = read_task_fit(path, "t")
    assert again.to_dict() == json.loads(path.read_text())
    np.testing.assert_array_equal(again.step2_bootstrap.samples["k"],
                                  task_fit.step2_bootstrap.samples["k"])
    assert predict_task(again, 1e9, 2e10) == predict_task(task_fit, 1e9, 2e10)


@pytest.mark.slow
@pytest.mark.parametrize("change, field", [
    (lambda d: d["step2"].update(ceiling=0.1), "step2.ceiling"),
    (lambda d: d["step2"].update(k=-1.0), "step2.k"),
    (lambda d: d["step2"]["bootstrap"].update(seed=7), "step2.bootstrap"),
    (lambda d: d.update(kind="fit"), "task fit"),
    (lambda d: d["step1"].update(metric="task/t/accuracy"), "step1.metric"),
])
def test_bad_document_names_the_key(task_fit, change, field):
    d = json.loads(json.dumps(task_fit.to_dict()))
    change(d)
    with pytest.raises(UserError, match=field.replace(".", r"\.")):
        TaskFit.from_dict(d)


def test_bad_points_are_refused():
    pts = synthetic_points()
    with pytest.raises(UserError, match="task/u/accuracy"):
        fit_task_points(pts, {"source": "x.csv"}, "u", n_bootstrap=0)
    mixed = pts.assign(**{"task/t/chance": np.where(np.arange(len(pts)) % 2, 0.25, 0.5)})
    with pytest.raises(UserError, match="task/t/chance"):
        fit_task_points(mixed, {"source": "x.csv"}, "t", n_bootstrap=0)
    bad = pts.assign(**{"task/t/accuracy": 1.5})
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        fit_task_points(bad, {"source": "x.csv"}, "t", n_bootstrap=0)
