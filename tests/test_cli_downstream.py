"""`scaling fit --metric`, `scaling fit --task` and `scaling predict --task` on a synthetic CSV
whose extra columns follow known laws."""

import json

import numpy as np
import pytest

from analysis.approach3 import Approach3Result
from analysis.downstream import SigmoidLaw
from analysis.simulate import generate_points, isoflop_design
from scaling_cli.main import main

HELDOUT = Approach3Result(A=400.0, B=1800.0, E=1.7, alpha=0.34, beta=0.30)
PROSE = Approach3Result(A=250.0, B=900.0, E=2.2, alpha=0.28, beta=0.36)  # eval/prose/loss
TASK = Approach3Result(A=500.0, B=2500.0, E=1.9, alpha=0.32, beta=0.31)  # task/t/loss
SIGMOID = SigmoidLaw(chance=0.25, ceiling=0.9, k=2.5, L0=4.0)


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    rng = np.random.default_rng(0)
    design = isoflop_design(np.geomspace(1e17, 1e21, 5), HELDOUT, 7, 1.5)
    pts = generate_points(design, HELDOUT, noise=0.003, rng=0)
    n, d = pts["params"].to_numpy(), pts["tokens"].to_numpy()

    def noisy(law):
        return law.predict(n, d) * np.exp(0.003 * rng.standard_normal(len(n)))

    task_loss = noisy(TASK)
    acc = SIGMOID.predict(TASK.predict(n, d)) + 0.01 * rng.standard_normal(len(n))
    path = tmp_path_factory.mktemp("downstream") / "study.csv"
    pts[["params", "tokens", "budget", "loss"]].assign(**{
        "eval/prose/loss": noisy(PROSE), "task/t/loss": task_loss,
        "task/t/accuracy": np.clip(acc, 0, 1), "task/t/chance": 0.25}).to_csv(path, index=False)
    return path


def cli(capsys, *argv):
    code = main([*map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_fit_metric_recovers_the_metrics_law_and_keeps_the_main_fit(csv, capsys):
    main_fit = csv.with_name("study.fit.json")
    main_fit.write_text('{"sentinel": true}')
    code, out, err = cli(capsys, "fit", csv, "--metric", "eval/prose/loss", "--approach", "3",
                         "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["metric"] == "eval/prose/loss"
    a3 = doc["approach3"]
    assert a3["E"] == pytest.approx(PROSE.E, rel=0.03)
    assert a3["alpha"] == pytest.approx(PROSE.alpha, abs=0.03)
    assert a3["beta"] == pytest.approx(PROSE.beta, abs=0.03)
    assert json.loads(csv.with_name("study.fit.eval.prose.loss.json").read_text()) == doc
    assert main_fit.read_text() == '{"sentinel": true}'


@pytest.mark.parametrize("metric, expected", [
    ("eval/nope/loss", ["--metric", "'eval/nope/loss'", "not a column", "eval/prose/loss",
                        "task/t/loss"]),
    ("task/t/accuracy", ["--metric", "accuracy-like", "scaling predict --task t"]),
    ("task/t/chance", ["--metric", "accuracy-like"]),
])
def test_fit_metric_refuses_what_it_cannot_fit(csv, capsys, metric, expected):
    code, out, err = cli(capsys, "fit", csv, "--metric", metric)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1
    for text in expected:
        assert text in lines[0], (text, lines[0])


@pytest.mark.slow
def test_fit_task_then_predict_task(csv, capsys):
    code, out, err = cli(capsys, "fit", csv, "--task", "t", "--bootstrap", 12)
    assert code == 0, err
    saved = csv.with_name("study.fit.downstream.t.json")
    assert saved.is_file() and "step 2" in out and str(saved) in out
    flops = 1e21
    n = float(TASK.params_opt(flops))
    code, out, err = cli(capsys, "predict", "--task", "t", "--fit", csv, "--flops", flops,
                         "--params", n, "--json")
    assert code == 0, err
    p = json.loads(out)
    keys = {"task", "accuracy", "accuracy_ci", "task_loss", "task_loss_ci", "task_loss_pi",
            "chance", "ceiling", "k", "L0", "level", "n_params", "n_tokens", "flops",
            "n_bootstrap", "task_loss_range", "extrapolated", "sigma", "noise_source",
            "fit_path"}
    assert keys <= set(p)
    d = flops / (6 * n)
    truth = float(SIGMOID.predict(TASK.predict(n, d)))
    assert abs(p["accuracy"] - truth) < 0.03
    assert p["accuracy_ci"][0] <= p["accuracy"] <= p["accuracy_ci"][1]
    assert p["task_loss"] == pytest.approx(float(TASK.predict(n, d)), rel=0.02)
    assert p["fit_path"] == str(saved) and p["n_bootstrap"] >= 10
    code, out, err = cli(capsys, "predict", "--task", "t", "--fit", saved, "--params", n,
                         "--tokens", d)
    assert code == 0, err
    assert "accuracy" in out and "CI [" in out and "task loss" in out


def test_predict_task_without_a_saved_fit(csv, tmp_path, capsys):
    code, out, err = cli(capsys, "predict", "--task", "other", "--fit", csv, "--params", 1e9,
                         "--tokens", 2e10)
    assert code == 2
    assert "scaling fit" in err and "--task other" in err and len(err.strip().splitlines()) == 1


def test_fit_task_needs_the_tasks_columns(csv, capsys):
    code, out, err = cli(capsys, "fit", csv, "--task", "u")
    assert code == 2
    assert "task/u/loss" in err and len(err.strip().splitlines()) == 1


def test_fit_task_refuses_options_it_does_not_use(csv, capsys):
    code, out, err = cli(capsys, "fit", csv, "--task", "t", "--rollout")
    assert code == 2 and "--rollout does not apply" in err


def test_metric_rows_without_it_are_counted_and_bad_values_refused(tmp_path):
    from analysis.load import load_points
    from scaling.errors import UserError

    path = tmp_path / "m.csv"
    path.write_text("params,tokens,loss,eval/x/loss,task/t/accuracy\n"
                    "1e6,2e7,3.0,3.5,0.3\n2e6,4e7,2.8,,0.4\n4e6,8e7,2.6,3.1,0.5\n")
    points, info = load_points(path, metric="eval/x/loss")
    assert points["loss"].tolist() == [3.5, 3.1] and info.excluded == {"no_metric": 1}
    path.write_text("params,tokens,loss,eval/x/loss\n1e6,2e7,3.0,3.5\n2e6,4e7,2.8,-1\n")
    with pytest.raises(UserError, match=r"--metric: 'eval/x/loss' must be positive .* row2"):
        load_points(path, metric="eval/x/loss")
    with pytest.raises(UserError, match=r"loss-like metrics: eval/x/loss, loss\)"):
        load_points(path, metric="eval/y/loss")
