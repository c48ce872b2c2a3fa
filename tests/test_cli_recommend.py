"""`scaling recommend`: reads a saved fit, prints a readable plan or JSON, exits 2 on bad input."""

from __future__ import annotations

import json

import pytest

from analysis.fitdoc import read_fit
from analysis.recommend import recommend
from scaling.fileio import atomic_write_json
from scaling.flops import param_counts
from scaling.model_config import ModelConfig
from scaling.shapes import LadderRecipe
from scaling_cli.main import main

LAW = dict(A=406.4, B=410.7, E=1.69, alpha=0.34, beta=0.28)


@pytest.fixture()
def fit_path(tmp_path):
    fit = {"convention": "6N", "params_kind": "total", "approach3": dict(LAW),
           "approach1": {"a": 0.5, "b": 0.5, "k_params": 0.09, "k_tokens": 1.85}}
    path = tmp_path / "fit.json"
    atomic_write_json(path, fit)
    return path


def _run(capsys, *argv):
    code = main(["recommend", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_readable_output(capsys, fit_path):
    code, out, _ = _run(capsys, "--budget", "1e21", "--fit", fit_path)
    assert code == 0
    expect = recommend(read_fit(fit_path), 1e21)
    from analysis.plots import human_count

    assert human_count(expect.n_params) in out
    assert "tokens per parameter" in out and "predicted loss" in out
    assert "n_layers=" in out and "d_model=" in out


def test_json_matches_the_library(capsys, fit_path):
    code, out, _ = _run(capsys, "--budget", "1e21", "--fit", fit_path, "--json",
                        "--vocab-size", "256", "--seq-len", "128")
    assert code == 0
    got = json.loads(out)
    expect = recommend(read_fit(fit_path), 1e21, vocab_size=256, seq_len=128)
    assert got["n_params"] == pytest.approx(expect.n_params)
    assert got["shape"]["vocab_size"] == 256 and got["shape"]["seq_len"] == 128
    assert got["fit_path"] == str(fit_path)


def test_modes(capsys, fit_path):
    code, out, _ = _run(capsys, "--budget", "1e21", "--fit", fit_path, "--inference-tokens",
                        "1e12")
    assert code == 0 and "inference-aware" in out and "saves" in out
    code, out, _ = _run(capsys, "--budget", "1e21", "--fit", fit_path, "--unique-tokens", "1e10",
                        "--json")
    got = json.loads(out)
    assert code == 0 and got["mode"] == "data_constrained"
    assert got["data_constrained"]["epochs"] > 1
    code, out, _ = _run(capsys, "--budget", "1e21", "--fit", fit_path, "--approach", "1")
    assert code == 0 and "approach1" in out


def test_runs_dir_and_csv_use_the_saved_fit(capsys, tmp_path, fit_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    code, _, err = _run(capsys, "--budget", "1e21", "--fit", runs)
    assert code == 2 and "scaling fit" in err and len(err.strip().splitlines()) == 1
    (runs / "fit.json").write_text(fit_path.read_text())
    assert _run(capsys, "--budget", "1e21", "--fit", runs)[0] == 0
    csv = tmp_path / "mine.csv"
    csv.write_text("params,tokens,loss\n1,2,3\n")
    code, _, err = _run(capsys, "--budget", "1e21", "--fit", csv)
    assert code == 2 and "mine.fit.json" in err
    (tmp_path / "mine.fit.json").write_text(fit_path.read_text())
    assert _run(capsys, "--budget", "1e21", "--fit", csv)[0] == 0


def test_shape_dims_come_from_the_runs(capsys, tmp_path, fit_path):
    run = tmp_path / "runs" / "sweep" / "r1"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": {"vocab_size": 256, "seq_len": 64}}))
    (tmp_path / "runs" / "fit.json").write_text(fit_path.read_text())
    code, out, _ = _run(capsys, "--budget", "1e14", "--fit", tmp_path / "runs", "--json")
    assert code == 0
    shape = json.loads(out)["shape"]
    assert (shape["vocab_size"], shape["seq_len"]) == (256, 64)


def _runs_with(tmp_path, fit_path, config: dict):
    run = tmp_path / "runs" / "sweep" / "r1"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config))
    (tmp_path / "runs" / "fit.json").write_text(fit_path.read_text())
    return tmp_path / "runs"


def test_the_shape_follows_the_runs_recipe_mlp_and_embeddings(capsys, tmp_path, fit_path):
    model = {"vocab_size": 256, "seq_len": 64, "mlp": "gelu", "tie_embeddings": False}
    runs = _runs_with(tmp_path, fit_path, {"model": model, "shape_recipe": "depth-ladder-a16-v1"})
    code, out, _ = _run(capsys, "--budget", "1e16", "--fit", runs, "--json")
    assert code == 0
    got = json.loads(out)
    shape = got["shape"]
    assert got["shape_recipe"] == "depth-ladder-a16-v1"
    assert (shape["mlp"], shape["tie_embeddings"]) == ("gelu", False)
    assert shape["d_model"] == LadderRecipe(ladder_aspect=16.0).width_for_depth(shape["n_layers"])
    # the ladder's own count, untied embeddings counted twice
    assert got["shape_params"] == param_counts(ModelConfig(**shape))["total"]
    code, out, _ = _run(capsys, "--budget", "1e16", "--fit", runs)
    assert "shape (nearest under recipe depth-ladder-a16-v1)" in out and "mlp=gelu" in out


def test_an_unknown_recorded_recipe_exits_2_with_one_line(capsys, tmp_path, fit_path):
    config = {"model": {"vocab_size": 256, "seq_len": 64}, "shape_recipe": "cube-v9"}
    code, _, err = _run(capsys, "--budget", "1e16", "--fit", _runs_with(tmp_path, fit_path, config))
    assert code == 2 and "shape_recipe: unknown recipe 'cube-v9'" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv,needle", [
    (["--budget", "0"], "budget"),
    (["--budget=-3e20"], "budget"),
    (["--budget", "1e21", "--inference-tokens", "-1"], "inference_tokens"),
    (["--budget", "1e21", "--unique-tokens", "0"], "unique_tokens"),
    (["--budget", "1e21", "--approach", "vpnls"], "vpnls"),
])
def test_bad_input_exits_2_with_one_line(capsys, fit_path, argv, needle):
    code, _, err = _run(capsys, *argv, "--fit", fit_path)
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1


def test_unparseable_budget_and_broken_fit(capsys, tmp_path, fit_path):
    with pytest.raises(SystemExit) as exc:
        main(["recommend", "--budget", "lots", "--fit", str(fit_path)])
    assert exc.value.code == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = _run(capsys, "--budget", "1e21", "--fit", bad)
    assert code == 2 and "bad.json" in err


@pytest.mark.parametrize("key,value", [("A", float("nan")), ("alpha", -0.3), ("E", -1.0)])
def test_out_of_domain_fit_is_refused_and_nothing_changes(capsys, tmp_path, fit_path, key,
                                                          value):
    raw = json.loads(fit_path.read_text())
    raw["approach3"][key] = value
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw))  # json writes NaN as the bare literal
    before = sorted(p.name for p in tmp_path.iterdir()), bad.read_bytes()
    code, out, err = _run(capsys, "--budget", "1e21", "--fit", bad)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and f"fit.approach3.{key}: expected" in err
    csv = tmp_path / "study.csv"
    csv.write_text("params,tokens,loss\n1e6,1e7,3\n")
    code = main(["report", str(csv), "--fit", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and f"fit.approach3.{key}" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "study_report").exists()
    assert (sorted(p.name for p in tmp_path.iterdir() if p.name != "study.csv"),
            bad.read_bytes()) == before
