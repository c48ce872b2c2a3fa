"""`scaling compare` and the labelled `scaling fit`: the --json contract, a known multiplier
recovered from labelled sweeps (spec `label` recorded in each run, measured tokens/s in
metrics.jsonl), the report, and exit 2 on bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.approach3 import Approach3Result
from analysis.fitdoc import read_fit
from analysis.load import load_points
from analysis.simulate import generate_points, isoflop_design
from scaling import runs
from scaling_cli.main import main
from sweeps import spec
from sweeps.sweep import prepare

LAW_A = Approach3Result(A=400.0, B=1800.0, E=1.7, alpha=0.34, beta=0.30)
# B = A with twice the compute: L_B(N, D) = L_A(N, 2D), so the multiplier is exactly 2.
LAW_B = Approach3Result(A=400.0, B=1800.0 * 2 ** -0.30, E=1.7, alpha=0.34, beta=0.30)
SPEC = """
name = "{name}"
label = "{label}"
[data]
seq_len = 16
[budgets]
values = [1e10, 3e10, 1e11]
[grid]
sizes = 5
span = 8.0
[optim]
recipe = "tiny-bytes"
[checks]
min_steps = 10
min_sizes = 3
"""


def run_cli(capsys, *argv):
    code = main([*map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def labelled_csv(tmp_path_factory):
    budgets = np.geomspace(1e17, 1e20, 5)
    frames = [generate_points(isoflop_design(budgets, law, 6, 1.5), law, noise=0.003,
                              rng=seed).assign(variant=name)
              for name, law, seed in (("base", LAW_A, 1), ("better", LAW_B, 2))]
    path = tmp_path_factory.mktemp("cmp") / "ladders.csv"
    pd.concat(frames)[["params", "tokens", "budget", "loss", "variant"]].to_csv(path, index=False)
    return path


def _finished_sweep(root, name, label, law, flops_per_s):
    s = spec.load_spec(_write(root / f"{name}.toml", SPEC.format(name=name, label=label)))
    assert s.label == label
    _, dirs = prepare(s, root / name)
    for d in dirs:
        config = runs.read_config_json(d)
        n, tokens = config["param_counts"]["total"], config["n_tokens"]
        runs.write_result(d, {"eval_loss": float(law.predict(n, tokens)), "n_params": n,
                              "n_tokens": tokens})
        with open(d / runs.METRICS_FILE, "w") as f:  # a device of `flops_per_s`: tokens/s = R/6N
            for step in (10, 20, 30):
                f.write(json.dumps({"step": step, "tokens_per_s": flops_per_s / (6 * n)}) + "\n")
    return root / name


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.slow
def test_labelled_sweeps_recover_the_multiplier_and_wallclock(tmp_path, capsys):
    a = _finished_sweep(tmp_path, "base", "base", LAW_A, 1e9)
    b = _finished_sweep(tmp_path, "better", "better", LAW_B, 2e9)
    points, _ = load_points(a)
    assert set(points["label"]) == {"base"}  # the spec's label, recorded in every run
    code, out, err = run_cli(capsys, "compare", a, b, "--bootstrap", 8, "--json",
                             "--target-flops", 1e13)
    assert code == 0, err
    doc = json.loads(out)
    (pair,) = doc["pairs"]
    assert (pair["a"], pair["b"]) == ("base", "better")
    for row in pair["budgets"] + [pair["target"]]:
        assert row["multiplier"] == pytest.approx(2.0, rel=1e-3)  # noiseless: the law itself
        assert row["multiplier_ci"][0] <= 2.0 * 1.001 and row["multiplier_ci"][1] >= 2.0 / 1.001
        # time = C / R for any law: A needs 2C at R, B needs C at 2R.
        assert row["wallclock_multiplier"] == pytest.approx(2 * row["multiplier"], rel=1e-6)
    assert [r["flops"] for r in pair["budgets"]] == [1e10, 3e10, 1e11]
    assert pair["crossover"]["flops"] == []
    assert doc["ladders"]["better"]["throughput"]["slope"] == pytest.approx(-1.0, abs=1e-6)


@pytest.mark.slow
def test_one_csv_with_labels_json_report_and_text(labelled_csv, tmp_path, capsys):
    report = tmp_path / "report"
    code, out, err = run_cli(capsys, "compare", labelled_csv, "--label-column", "variant",
                             "--bootstrap", 12, "--json", "--report", report,
                             "--target-flops", "1e21", "--crossover-range", "1e15", "1e25")
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) == {"level", "n_bootstrap", "ladders", "pairs"}
    (pair,) = doc["pairs"]
    assert set(pair) == {"a", "b", "level", "n_samples", "budgets", "target", "crossover"}
    assert set(pair["budgets"][0]) == {"flops", "multiplier", "multiplier_ci", "loss_opt_a",
                                       "loss_opt_b", "wallclock_multiplier",
                                       "wallclock_multiplier_ci"}
    assert pair["crossover"]["range"] == [1e15, 1e25]
    lo, hi = pair["target"]["multiplier_ci"]
    assert lo < 2.0 < hi
    assert pair["budgets"][0]["wallclock_multiplier"] is None  # a CSV without tokens/s
    assert {p.name for p in report.iterdir()} == {"compare.md", "compare.html",
                                                  "compare_base_vs_better.png"}
    assert "multiplier" in (report / "compare.md").read_text()
    code, out, err = run_cli(capsys, "compare", labelled_csv, "--label-column", "variant",
                             "--bootstrap", 0)
    assert code == 0, err
    assert "A = base, B = better" in out and "1e17" in out


@pytest.mark.parametrize("src, options, match", [
    ("plain", [], "SRC: expected at least 2 ladders"),
    ("labelled", ["--label-column", "nope"], "--label-column: no column 'nope'"),
    ("labelled", ["--label-column", "variant", "--target-flops", "-1"], "--target-flops"),
    ("labelled", ["--label-column", "variant", "--bootstrap", "1"], "--bootstrap"),
    ("few", ["--label-column", "variant"], "label 'better': points: expected at least 6"),
])
def test_bad_input_is_one_line_exit_2(labelled_csv, tmp_path, capsys, src, options, match):
    df = pd.read_csv(labelled_csv)
    paths = {"labelled": labelled_csv, "plain": tmp_path / "plain.csv",
             "few": tmp_path / "few.csv"}
    df[df.variant == "base"].drop(columns="variant").to_csv(paths["plain"], index=False)
    pd.concat([df[df.variant == "base"], df[df.variant == "better"].head(3)]).to_csv(
        paths["few"], index=False)
    bootstrap = [] if "--bootstrap" in options else ["--bootstrap", "0"]
    code, out, err = run_cli(capsys, "compare", paths[src], *options, *bootstrap)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and match in err, err


def test_fit_per_label_and_joint(labelled_csv, tmp_path, capsys):
    out_path = tmp_path / "fit.json"
    code, out, err = run_cli(capsys, "fit", labelled_csv, "--label-column", "variant",
                             "--approach", "3", "--joint", "shared-E", "-o", out_path)
    assert code == 0, err
    assert "joint fit (shared-E)" in out
    index = json.loads((tmp_path / "fit.labels.json").read_text())
    assert set(index["labels"]) == {"base", "better"}
    joint = index["joint"]
    assert joint["labels"]["base"]["E"] == joint["labels"]["better"]["E"] == joint["shared"]["E"]
    assert joint["shared"]["E"] == pytest.approx(1.7, rel=0.05)
    for label in ("base", "better"):  # each label's document is a fit.json of its own
        doc = read_fit(tmp_path / f"fit.{label}.json")
        assert doc.n_points == 30 and doc.result("approach3").E > 0
    assert not out_path.exists()
    code, _, err = run_cli(capsys, "fit", labelled_csv, "--joint", "shared-E")
    assert code == 2 and "--joint: expected at least 2 labels" in err


def test_labelled_fit_refuses_fix_e_above_a_labels_losses(labelled_csv, tmp_path, capsys):
    code, _, err = run_cli(capsys, "fit", labelled_csv, "--label-column", "variant",
                           "--fix-E", "100", "-o", tmp_path / "fit.json")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--fix-E: expected a value in [0, " in err and err.startswith("scaling fit: error: label")
    assert not list(tmp_path.glob("fit*.json"))


def test_spec_label_is_checked(tmp_path):
    with pytest.raises(spec.UserError, match="label: expected letters"):
        spec.parse_spec({"name": "x", "label": "a b", "budgets": [1e10]})
    s = spec.parse_spec({"name": "x", "label": "dclm", "budgets": [1e10]})
    unlabelled = spec.parse_spec({"name": "x", "budgets": [1e10]})
    assert s.label == "dclm" and unlabelled.label is None
    assert s.digest() == unlabelled.digest()  # naming a ladder does not change what it trains
