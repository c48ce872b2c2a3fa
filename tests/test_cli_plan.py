"""`scaling plan`: the JSON grid for 1e21 is on budget with real shapes; bad input exits 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from scaling.flops import flops_per_token, param_counts
from scaling.shapes import ModelConfig
from scaling_cli.main import main


def test_plan_1e21_json(capsys):
    assert main(["plan", "--budget", "1e21", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert len(runs) == 7
    for run in runs:
        cfg = ModelConfig(**run["config"])  # a real shape: validates every field
        assert cfg.n_heads * cfg.head_dim == cfg.d_model and cfg.d_model % 64 == 0
        assert (run["n_layers"], run["d_model"], run["n_heads"]) == \
            (cfg.n_layers, cfg.d_model, cfg.n_heads)
        counts = param_counts(cfg)
        assert run["n_params"] == counts["total"]
        assert run["n_params_non_embedding"] == counts["non_embedding"]
        flops = flops_per_token(cfg, "6N") * run["n_tokens"]
        assert abs(flops / 1e21 - 1) <= 0.01
        assert run["flops"] == pytest.approx(flops, rel=1e-12)
        assert run["rel_error"] == pytest.approx(flops / 1e21 - 1, abs=1e-12)
        assert run["budget"] == 1e21 and run["convention"] == "6N"
        assert run["tokens_per_param"] == pytest.approx(run["n_tokens"] / run["n_params"])
    assert 1e9 < runs[3]["n_params"] < 1e10  # the middle is the ~20 tokens/param size


def test_plan_table_several_budgets(capsys):
    args = ["plan", "--budget", "1e17", "--budget", "1e19", "--sizes", "3",
            "--convention", "chinchilla", "--vocab-size", "32000", "--seq-len", "1024"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["budget", "N", "non-emb", "N", "layers", "d_model", "heads",
                                "tokens", "tokens/param", "FLOPs", "error"]
    rows = lines[2:]
    assert len(rows) == 6
    assert sum(row.startswith("1.00e+17") for row in rows) == 3
    assert all(row.split()[1][-1] in "KMB" for row in rows)  # human-readable sizes


def test_plan_kaplan_json_within_budget(capsys):
    assert main(["plan", "--budget", "3e16", "--convention", "kaplan", "--json"]) == 0
    for run in json.loads(capsys.readouterr().out):
        cfg = ModelConfig(**run["config"])
        assert abs(flops_per_token(cfg, "kaplan") * run["n_tokens"] / 3e16 - 1) <= 0.01


@pytest.mark.parametrize("args,names", [
    (["--budget=-1e18"], "--budget"),
    (["--budget", "0"], "--budget"),
    (["--budget", "nan"], "--budget"),
    (["--budget", "inf"], "--budget"),
    (["--budget", "1e31"], "--budget"),
    (["--budget", "1e3"], "--budget"),  # below what the smallest model can use
    (["--budget", "lots"], "--budget"),
    (["--budget", "1e18", "--convention", "flops"], "--convention"),
    (["--budget", "1e18", "--sizes", "2"], "--sizes"),
    (["--budget", "1e18", "--sizes", "x"], "--sizes"),
    (["--budget", "1e18", "--vocab-size", "0"], "--vocab-size"),
    (["--budget", "1e18", "--span", "0.5"], "--span"),
    ([], "--budget"),
    (["spec.toml", "--budget", "1e18"], "--budget"),
])
def test_bad_input_exits_2_with_one_line(capsys, args, names):
    assert main(["plan", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"scaling plan: error: {names}: ")
    assert "expected" in lines[0] or "below" in lines[0] or "not both" in lines[0]


def test_negative_budget_as_separate_word_exits_2(capsys):
    # argparse reads "-1e18" as an option; its own error is still one line, exit 2
    with pytest.raises(SystemExit) as exc:
        main(["plan", "--budget", "-1e18"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--budget" in err


def test_spec_plan_prints_grid_and_estimate(capsys):
    """The shipped demo spec plans within 1% per run and estimates its wall time."""
    from pathlib import Path

    spec = Path(__file__).resolve().parents[1] / "examples" / "demo.toml"
    assert main(["plan", str(spec), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) >= 15 and all(abs(r["flops"] / r["budget"] - 1) <= 0.01 for r in rows)
    assert main(["plan", str(spec), "--tokens-per-second", "1e4"]) == 0
    out = capsys.readouterr().out
    tokens = sum(r["n_tokens"] for r in rows)
    assert f"{len(rows)} runs" in out and "wall time" in out
    assert f"{tokens / 1e4 / 3600:.3g} device-hours" in out
    assert main(["plan", str(spec), "--tokens-per-second", "0"]) == 2


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "scaling_cli", "plan", "--budget", "1e21",
                             "--json"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert all(abs(r["flops"] / 1e21 - 1) <= 0.01 for r in json.loads(result.stdout))
    bad = subprocess.run([sys.executable, "-m", "scaling_cli", "plan", "--budget", "-5"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_spec_plan_simulates_the_grid(capsys, tmp_path):
    """--simulate refits noisy copies of the planned grid drawn from a known law (Epoch's
    Chinchilla fit when the sweep has no fit.json): the spread must bracket that truth."""
    from pathlib import Path

    spec = Path(__file__).resolve().parents[1] / "examples" / "demo.toml"
    assert main(["plan", str(spec), "--runs-dir", str(tmp_path), "--simulate",
                 "--noise", "0.005"]) == 0
    out = capsys.readouterr().out
    assert "law: Epoch's fit of Chinchilla" in out
    line = next(x for x in out.splitlines() if x.strip().startswith("a (Approach 3)"))
    truth = 0.366 / (0.348 + 0.366)
    lo, hi = (float(v) for v in line.split("[")[1].rstrip("]").split(","))
    assert f"truth {truth:.4g}" in line and lo < truth < hi and hi - lo < 0.2
    assert main(["plan", str(spec), "--simulate", "--noise", "-1"]) == 2


def test_simulate_draws_at_the_given_fits_measured_noise(capsys, tmp_path):
    from pathlib import Path

    fit = {"approach3": {"A": 400.0, "B": 1800.0, "E": 1.7, "alpha": 0.34, "beta": 0.30,
                         "objective": 0.0, "n_points": 30},
           "noise": {"source": "replicates", "sigma": 0.004, "sigma_ci": [0.003, 0.005],
                     "dof": 12, "level": 0.8}}
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(fit))
    spec = Path(__file__).resolve().parents[1] / "examples" / "demo.toml"
    assert main(["plan", str(spec), "--runs-dir", str(tmp_path), "--simulate", "--fit",
                 str(path)]) == 0
    out = capsys.readouterr().out
    assert f"0.40% loss noise, law: {path}" in out
    assert f"noise: measured by {path} (run-to-run noise of its replicates)" in out
