"""`scaling fit`: the --json contract, fit.json on disk, human table, exit 2 on bad input."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.approach3 import Approach3Result
from analysis.simulate import generate_points, isoflop_design
from scaling_cli.main import main

CHINCHILLA_CSV = Path(__file__).resolve().parents[1] / "data" / "reference" / "chinchilla_svg_extracted.csv"
APPROACH3_KEYS = {"A", "B", "E", "alpha", "beta", "objective", "a", "b", "n_points"}
LAW = Approach3Result(A=400.0, B=1800.0, E=1.7, alpha=0.34, beta=0.30, objective=0, n_points=0)


@pytest.fixture(scope="module")
def synthetic_csv(tmp_path_factory):
    pts = generate_points(isoflop_design(np.geomspace(1e17, 1e20, 5), LAW, 7, 1.5), LAW,
                          noise=0.003, rng=0)
    path = tmp_path_factory.mktemp("fit") / "runs.csv"
    pts[["params", "tokens", "loss"]].assign(flops=pts["flops"]).to_csv(path, index=False)
    return path


def run_cli(capsys, *argv):
    code = main(["fit", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_keys_on_chinchilla(tmp_path, capsys):
    raw = pd.read_csv(CHINCHILLA_CSV)
    csv = tmp_path / "chinchilla.csv"  # a converted view in tmp, not a copy in the project
    pd.DataFrame({"params": raw["Model Size"], "flops": raw["Training FLOP"],
                  "loss": raw["loss"]}).to_csv(csv, index=False)
    code, out, err = run_cli(capsys, csv, "--approach", "3", "--json", "--drop-highest", 5)
    assert code == 0, err
    doc = json.loads(out)
    assert APPROACH3_KEYS <= set(doc["approach3"])
    assert doc["approach3"]["n_points"] == 240 and doc["n_points"] == 240
    assert abs(doc["approach3"]["alpha"] - 0.348) <= 0.003
    assert abs(doc["approach3"]["beta"] - 0.366) <= 0.003
    assert "approach1" not in doc and "approach2" not in doc
    written = json.loads((tmp_path / "chinchilla.fit.json").read_text())
    assert written == doc


def test_all_approaches_with_bootstrap(synthetic_csv, tmp_path, capsys):
    out_path = tmp_path / "out" / "fit.json"
    code, out, err = run_cli(capsys, synthetic_csv, "--bootstrap", 40, "--seed", 3, "--json",
                             "-o", out_path, "--level", 0.9)
    assert code == 0, err
    doc = json.loads(out)
    assert json.loads(out_path.read_text()) == doc
    for key in ("approach1", "approach2", "approach3", "vpnls"):
        assert key in doc
    for name in ("A", "B", "E", "alpha", "beta", "a", "b"):
        lo, hi = doc["approach3"][f"{name}_ci"]
        assert lo <= hi
    assert doc["approach3"]["bootstrap"] == {**doc["approach3"]["bootstrap"], "level": 0.9,
                                             "n": 40, "seed": 3}
    assert len(doc["approach2"]["bootstrap"]["samples"]["a"]) == 40
    assert doc["approach2"]["a_ci"][0] <= doc["approach2"]["a"] <= doc["approach2"]["a_ci"][1]
    lo, hi = doc["approach3"]["a_ci"]
    assert lo - 0.01 < LAW.a < hi + 0.01


def test_human_table(synthetic_csv, capsys):
    code, out, err = run_cli(capsys, synthetic_csv, "--approach", "all")
    assert code == 0, err
    header = out.splitlines()[0].split()
    assert header == ["approach1", "approach2", "approach3", "vpnls"]
    assert any(line.startswith("alpha") for line in out.splitlines())
    assert "wrote" in out and synthetic_csv.with_name("runs.fit.json").exists()


@pytest.mark.parametrize("content, args, match", [
    ("params,loss\n1e6,3.0\n", [], "missing column 'tokens'"),
    ("params,tokens,loss\n1e6,1e7,-3.0\n", [], "'loss' must be positive"),
    ("params,tokens,loss\n" + "".join(f"{1e6 * (i + 1)},1e7,3.0\n" for i in range(4)),
     ["--approach", "3"], "at least 6"),
    ("params,tokens,loss,budget\n" + "".join(f"{1e6 * (i + 1)},1e7,{3 + i / 10},1e14\n"
                                             for i in range(6)),
     ["--approach", "2"], "at least 2 budgets"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, content, args, match):
    csv = tmp_path / "bad.csv"
    csv.write_text(content)
    code, out, err = run_cli(capsys, csv, *args)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert re.search(match, err), err


def test_missing_source_and_bad_level(tmp_path, capsys):
    code, _, err = run_cli(capsys, tmp_path / "nope.csv")
    assert code == 2 and "no such file" in err
    csv = tmp_path / "ok.csv"
    csv.write_text("params,tokens,loss\n1e6,1e7,3\n")
    code, _, err = run_cli(capsys, csv, "--bootstrap", 10, "--level", 2)
    assert code == 2 and "level" in err


def test_runs_directory_end_to_end(tmp_path, capsys):
    # Run dirs as the trainer writes them (docs/architecture.md), losses from a known law,
    # curves logged along the way, plus one diverged run that must be excluded and counted.
    from analysis.simulate import EPOCH_LAW

    design = isoflop_design(np.geomspace(1e17, 1e19, 3), EPOCH_LAW, 7, 1.2)
    for i, row in design.iterrows():
        d = tmp_path / "sweep" / f"run{i}"
        d.mkdir(parents=True)
        n, tokens, c = row["params"], row["tokens"], row["budget"]
        (d / "config.json").write_text(json.dumps({"run_name": f"run{i}", "budget": c,
                                                   "convention": "6N", "sweep": "sweep"}))
        (d / "status.json").write_text(json.dumps({"state": "done"}))
        (d / "result.json").write_text(json.dumps({
            "eval_loss": float(EPOCH_LAW.predict(n, tokens)), "n_params": n,
            "n_params_non_embedding": 0.9 * n, "n_tokens": tokens, "flops": 6 * n * tokens,
            "budget": c}))
        with open(d / "metrics.jsonl", "w") as f:
            for k, t in enumerate(tokens * np.geomspace(0.01, 1, 30)):
                f.write(json.dumps({"step": k, "tokens": t, "flops": 6 * n * t,
                                    "train_loss": float(EPOCH_LAW.predict(n, t))}) + "\n")
    bad = tmp_path / "sweep" / "diverged"
    bad.mkdir()
    (bad / "config.json").write_text("{}")
    (bad / "status.json").write_text(json.dumps({"state": "diverged"}))
    code, out, err = run_cli(capsys, tmp_path, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["excluded"] == {"diverged": 1} and doc["n_points"] == 21
    assert json.loads((tmp_path / "fit.json").read_text()) == doc
    assert doc["approach1"]["from"] == "curves"
    assert abs(doc["approach2"]["a"] - EPOCH_LAW.a) < 0.01
    assert abs(doc["approach3"]["alpha"] - EPOCH_LAW.alpha) < 0.01
    assert abs(doc["approach3"]["beta"] - EPOCH_LAW.beta) < 0.01
