"""`scaling predict` and `scaling check-forecast` on a fit.json written by hand, and the bad
input of the forecast options of `scaling fit`: one line, exit 2, nothing changed."""

import json
import math

import pytest

from scaling_cli.main import main

LAW = dict(A=400.0, B=1800.0, E=1.7, alpha=0.34, beta=0.30)
NOISE = dict(source="residuals", sigma=0.01, sigma_ci=[0.008, 0.012], dof=30, level=0.8)


def by_hand(n, d):
    return LAW["E"] + LAW["A"] / n ** LAW["alpha"] + LAW["B"] / d ** LAW["beta"]


@pytest.fixture
def fitted(tmp_path):
    """A runs dir of sweep 'ladder' (one finished run) and a fit.json made from it."""
    runs = tmp_path / "runs"
    run = runs / "ladder" / "r1"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"run_name": "r1", "sweep": "ladder"}))
    samples = {k: [v * f for f in (0.99, 1.0, 1.01)] for k, v in LAW.items()}
    fit = {"source": str(runs), "approach3": {**LAW, "objective": 0.0, "n_points": 30,
                                              "bootstrap": {"level": 0.8, "n": 3, "seed": 0,
                                                            "samples": samples}},
           "noise": NOISE, "sweeps": ["ladder"]}
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(fit))
    return path, runs


def cli(capsys, *argv):
    code = main([*map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_json_is_the_law_by_hand_with_ci_inside_pi(fitted, capsys):
    path, _ = fitted
    code, out, _ = cli(capsys, "predict", "--fit", path, "--params", 3e8, "--tokens", 6e9,
                       "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["loss"] == pytest.approx(by_hand(3e8, 6e9), rel=1e-12)
    assert doc["approach"] == "approach3" and doc["level"] == 0.8
    assert doc["loss_pi"][0] < doc["loss_ci"][0] <= doc["loss_ci"][1] < doc["loss_pi"][1]
    assert set(doc["approaches"]) == {"approach3"}
    code, out, _ = cli(capsys, "predict", "--fit", path, "--flops", 6 * 3e8 * 6e9, "--params",
                       3e8, "--json")
    assert json.loads(out)["loss"] == pytest.approx(by_hand(3e8, 6e9), rel=1e-12)


@pytest.mark.parametrize("args", [["--params", "-1", "--tokens", "1e9"],
                                  ["--params", "0", "--tokens", "1e9"],
                                  ["--params", "1e8"], ["--tokens", "1e9"],
                                  ["--flops", "1e18"], ["--params", "x", "--tokens", "1e9"]])
def test_predict_bad_point_is_one_line_exit_2(fitted, capsys, args):
    path, _ = fitted
    try:
        code, out, err = cli(capsys, "predict", "--fit", path, *args)
    except SystemExit as e:  # argparse's own check (not a number)
        code = e.code
        out, err = capsys.readouterr()
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1


def test_check_forecast_scores_and_writes_beside_the_run(fitted, capsys, tmp_path):
    path, runs = fitted
    run = runs / "ladder" / "r1"
    (run / "result.json").write_text(json.dumps({"eval_loss": by_hand(3e8, 6e9) * 1.005,
                                                 "n_params": 3e8, "n_tokens": 6e9}))
    code, out, _ = cli(capsys, "predict", "--fit", path, "--params", 3e8, "--tokens", 6e9,
                       "--json")
    forecast = tmp_path / "forecast.json"
    forecast.write_text(out)
    code, out, err = cli(capsys, "check-forecast", forecast, run, "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["error"] == pytest.approx(0.005, rel=1e-9) and record["inside_pi"]
    assert json.loads((run / "forecast_check.json").read_text()) == record


def test_check_forecast_against_another_sweep_is_refused(fitted, capsys, tmp_path):
    path, runs = fitted
    other = runs / "other" / "r9"
    other.mkdir(parents=True)
    (other / "config.json").write_text(json.dumps({"run_name": "r9", "sweep": "other"}))
    (other / "result.json").write_text(json.dumps({"eval_loss": 2.5}))
    code, out, _ = cli(capsys, "predict", "--fit", path, "--params", 3e8, "--tokens", 6e9,
                       "--json")
    forecast = tmp_path / "forecast.json"
    forecast.write_text(out)
    code, out, err = cli(capsys, "check-forecast", forecast, other)
    assert code == 2 and "sweep 'other'" in err and len(err.strip().splitlines()) == 1
    assert not (other / "forecast_check.json").exists()


def test_fix_E_at_or_above_the_smallest_loss_changes_nothing(tmp_path, capsys):
    csv = tmp_path / "runs.csv"
    rows = [(n, 20 * n, by_hand(n, 20 * n)) for n in (1e7, 2e7, 4e7, 8e7, 1.6e8, 3.2e8, 6.4e8)]
    csv.write_text("params,tokens,loss\n" + "\n".join(f"{n},{d},{l}" for n, d, l in rows))
    out_path = tmp_path / "runs.fit.json"
    out_path.write_text("{}")  # a previous fit: must survive
    lowest = min(l for *_, l in rows)
    for value in (lowest, lowest + 1):
        code, out, err = cli(capsys, "fit", csv, "--fix-E", value)
        assert code == 2 and "--fix-E" in err and len(err.strip().splitlines()) == 1
        assert out_path.read_text() == "{}"
    assert not math.isnan(lowest)


def test_recommend_json_carries_its_pi_and_check_forecast_uses_it(fitted, capsys, tmp_path):
    path, runs = fitted
    code, out, err = cli(capsys, "recommend", "--fit", path, "--budget", 1e19, "--json")
    assert code == 0, err
    forecast = json.loads(out)
    assert forecast["level"] == 0.8
    lo, hi = forecast["loss_pi"]
    ci = forecast["ci"]["loss"]
    assert lo < ci[0] <= forecast["loss"] <= ci[1] < hi
    run = runs / "ladder" / "r1"
    (run / "result.json").write_text(json.dumps({"eval_loss": forecast["loss"]}))
    saved = tmp_path / "forecast.json"
    saved.write_text(out)
    path.write_text("{}")  # the fit is gone: the forecast alone must be enough
    code, out, err = cli(capsys, "check-forecast", saved, run, "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["pi_from"] == "forecast" and record["loss_pi"] == [lo, hi]
    assert record["inside_pi"] and record["level"] == 0.8


def test_fit_overestimate_penalty_is_recorded_and_checked(tmp_path, capsys):
    csv = tmp_path / "runs.csv"
    rows = [(n, k * n, by_hand(n, k * n)) for n in (1e7, 4e7, 1.6e8) for k in (5, 20, 80)]
    csv.write_text("params,tokens,loss\n" + "\n".join(f"{n},{d},{l}" for n, d, l in rows))
    for bad in ("-1", "0", "nan"):
        code, out, err = cli(capsys, "fit", csv, "--approach", "3", "--overestimate-penalty",
                             bad)
        assert code == 2 and "--overestimate-penalty" in err
        assert len(err.strip().splitlines()) == 1 and not (tmp_path / "runs.fit.json").exists()
    code, out, err = cli(capsys, "fit", csv, "--approach", "3", "--overestimate-penalty", 4,
                         "--json")
    assert code == 0, err
    assert json.loads(out)["approach3"]["overestimate_penalty"] == 4.0
    written = json.loads((tmp_path / "runs.fit.json").read_text())
    assert written["approach3"]["overestimate_penalty"] == 4.0
