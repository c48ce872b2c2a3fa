"""`scaling report`: figures plus Markdown and HTML reports from a CSV (or runs dir) and its fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analysis.approach3 import ParametricLaw
from scaling.fileio import atomic_write_json
from scaling_cli.main import main

LAW_PARAMS = dict(A=406.4, B=410.7, E=1.69, alpha=0.34, beta=0.28)
LAW = ParametricLaw(**LAW_PARAMS)
EVIL = "<script>alert(1)</script>"
EVIL_DIR = "<img src=x onerror=alert(1)>"  # no "/", so it can name a directory
CHINCHILLA_CSV = Path(__file__).resolve().parents[1] / "data" / "reference" / "chinchilla_svg_extracted.csv"
FIGURES = {"isoflop.png", "frontier.png", "landscape.png", "residuals.png"}


def _write_csv(path: Path) -> None:
    rng = np.random.default_rng(0)
    lines = ["run,params,tokens,budget,loss"]
    for budget in (1e17, 1e18, 1e19):
        n_opt = LAW.params_opt(budget)
        for i, n in enumerate(n_opt * np.geomspace(0.2, 5, 6)):
            d = budget / (6 * n)
            loss = LAW.predict(n, d) * np.exp(0.003 * rng.standard_normal())
            name = EVIL if (budget, i) == (1e17, 0) else f"r{budget:.0e}-{i}"
            if name == EVIL:
                loss *= 1.2  # the worst-fitted run, so the report lists its name
            lines.append(f'"{name}",{n:.6g},{d:.6g},{budget:g},{loss:.6f}')
    path.write_text("\n".join(lines) + "\n")


def _hand_fit() -> dict:
    # Deliberately distinctive numbers, so the report visibly uses this saved fit.
    return {"convention": "6N", "params_kind": "total",
            "approach3": dict(LAW_PARAMS, a=0.4516, b=0.5484, objective=1.234e-3, n_points=18)}


def test_report_from_a_csv_with_a_saved_fit(tmp_path, capsys):
    csv = tmp_path / "study.csv"
    _write_csv(csv)
    atomic_write_json(tmp_path / "study.fit.json", _hand_fit())
    code = main(["report", str(csv), "--json"])
    assert code == 0, capsys.readouterr().err
    paths = json.loads(capsys.readouterr().out)
    out = tmp_path / "study_report"  # the default: <stem>_report beside the CSV
    assert Path(paths["out_dir"]) == out
    assert {p.name for p in (out / "figures").iterdir()} == FIGURES
    for png in (out / "figures").iterdir():
        assert png.read_bytes()[:4] == b"\x89PNG"
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    assert "0.001234" in md  # the saved fit's objective, not a refit
    assert "Recommendation for C = 1e20" in md  # default budget: 10x the largest
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("data:image/png;base64,") == len(FIGURES)
    assert "http://" not in page and "https://" not in page


def test_report_output_dir_and_explicit_fit(tmp_path, capsys):
    csv = tmp_path / "study.csv"
    _write_csv(csv)
    fit = tmp_path / "elsewhere.json"
    atomic_write_json(fit, _hand_fit())
    out = tmp_path / "custom"
    assert main(["report", str(csv), "--fit", str(fit), "-o", str(out), "--budget", "1e21"]) == 0
    assert "report.html" in capsys.readouterr().out
    assert "Recommendation for C = 1e21" in (out / "report.md").read_text()


@pytest.mark.parametrize("argv,needle", [
    (["report", "/nonexistent/runs"], "/nonexistent/runs"),
])
def test_bad_source_exits_2(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_report_on_the_chinchilla_data_fits_once_and_saves(tmp_path):
    # The vendored CSV is read in place (never copied). Its columns are Epoch's
    # ("Model Size", "Training FLOP"), which `chinchilla_csv_to_points` maps; the computed
    # fit goes to tmp_path so nothing is written beside the reference data.
    from analysis.load import chinchilla_csv_to_points, drop_highest_loss
    from analysis.report import build_report

    points = drop_highest_loss(chinchilla_csv_to_points(CHINCHILLA_CSV), 5)  # as Epoch did
    info = {"source": str(CHINCHILLA_CSV), "kind": "csv", "excluded": {}, "dropped_highest": 5}
    saved = tmp_path / "chinchilla.fit.json"
    out = tmp_path / "rep"
    paths = build_report(CHINCHILLA_CSV, fit_path=saved, out_dir=out, points=points, info=info)
    assert saved.is_file()  # the fit ran once and was saved for the next time
    fit = json.loads(saved.read_text())
    # Epoch's optimum on these 240 points (data/reference/README.md): alpha 0.348, beta 0.366.
    assert fit["approach3"]["alpha"] == pytest.approx(0.348, abs=0.01)
    assert fit["approach3"]["beta"] == pytest.approx(0.366, abs=0.01)
    assert {p.name for p in paths.figures} == FIGURES
    md = paths.markdown.read_text()
    assert "240 finished runs used" in md and "Approach 3" in md and "VPNLS" in md
    assert paths.html.read_text().count("data:image/png;base64,") == len(FIGURES)
    mtime = saved.stat().st_mtime_ns
    build_report(CHINCHILLA_CSV, fit_path=saved, out_dir=out, points=points, info=info)
    assert saved.stat().st_mtime_ns == mtime  # the second run reads the saved fit


def _write_runs(runs: Path) -> None:
    """A runs directory per the run-store contract: 3 budgets x 5 sizes, one diverged run."""
    rng = np.random.default_rng(2)
    for budget in (1e15, 1e16, 1e17):
        n_opt = LAW.params_opt(budget)
        for i, n in enumerate(n_opt * np.geomspace(0.25, 4, 5)):
            name = EVIL if (budget, i) == (1e15, 2) else f"b{budget:.0e}-n{i}"
            run = runs / EVIL_DIR / f"run{budget:.0e}-{i}"
            run.mkdir(parents=True)
            tokens = budget / (6 * n)
            loss = LAW.predict(n, tokens) * np.exp(0.003 * rng.standard_normal())
            if name == EVIL:
                loss *= 1.2  # the worst-fitted run, so the report lists its name
            config = {"run_name": name, "sweep": EVIL_DIR, "budget": budget,
                      "convention": "6N", "model": {"vocab_size": 256, "seq_len": 64}}
            (run / "config.json").write_text(json.dumps(config))
            (run / "status.json").write_text(json.dumps({"state": "done"}))
            (run / "result.json").write_text(json.dumps({
                "eval_loss": loss, "n_params": n, "n_params_non_embedding": 0.6 * n,
                "n_tokens": tokens, "flops": budget, "budget": budget}))
            steps = [{"step": s, "tokens": tokens * s / 10, "flops": budget * s / 10,
                      "train_loss": loss + 2.0 / s} for s in range(1, 11)]
            (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in steps))
    bad = runs / "other" / "boom"
    bad.mkdir(parents=True)
    (bad / "config.json").write_text(json.dumps({"run_name": "boom"}))
    (bad / "status.json").write_text(json.dumps({"state": "diverged"}))


def test_report_from_a_runs_dir_fits_once_and_escapes(tmp_path, capsys):
    runs = tmp_path / "runs"
    _write_runs(runs)
    assert main(["report", str(runs)]) == 0, capsys.readouterr().err
    out = runs / "report"  # the default: <RUNS_DIR>/report
    assert (runs / "fit.json").is_file()  # fitted once, saved where `scaling fit` puts it
    assert {p.name for p in (out / "figures").iterdir()} == FIGURES | {"curves.png"}
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    assert "Excluded runs: diverged: 1." in md
    assert "Embeddings are 40% to 40%" in md  # total and non-embedding N both shown
    assert "| 256 | 64 |" in md  # the shape uses the runs' own vocabulary and context
    assert EVIL not in page and page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 1
    assert EVIL_DIR not in page and "&lt;img src=x onerror=alert(1)&gt;" in page  # sweep name
    assert "<script" not in page and "<img src=x" not in page
