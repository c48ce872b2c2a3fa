"""analysis.report: content, escaping, self-containment of the Markdown and HTML reports."""

from __future__ import annotations

import base64
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from analysis import plots, report
from analysis.approach3 import ParametricLaw
from analysis.bootstrap import Holdout
from analysis.fitdoc import FitDocument
from analysis.recommend import recommend

LAW_PARAMS = dict(A=406.4, B=410.7, E=1.69, alpha=0.34, beta=0.28)
LAW = ParametricLaw(**LAW_PARAMS)
EVIL = "<script>alert(1)</script>"
EVIL_COLUMN = "<img src=x onerror=alert(2)>"


@pytest.fixture(scope="module")
def points():
    rng = np.random.default_rng(0)
    rows = []
    for budget in (1e17, 1e18, 1e19):
        n_opt = LAW.params_opt(budget)
        for n in n_opt * np.geomspace(0.2, 5, 6):
            d = budget / (6 * n)
            rows.append({"run": f"run-{len(rows)}", "params": n, "params_non_embedding": 0.7 * n,
                         "tokens": d, "flops": budget, "budget": budget,
                         "loss": LAW.predict(n, d) * np.exp(0.003 * rng.standard_normal()),
                         EVIL_COLUMN: 1.0})
    df = pd.DataFrame(rows)
    df.loc[0, "run"] = EVIL
    df.loc[0, "loss"] *= 1.2  # the worst-fitted run, so its name is in the report
    return df


@pytest.fixture(scope="module")
def fit():
    minima = [dict(budget=b, params_opt=LAW.params_opt(b),
                   tokens_opt=LAW.tokens_opt(b), loss_opt=3.0,
                   bracketed=b != 1e19) for b in (1e17, 1e18, 1e19)]
    return FitDocument.from_dict({
        "convention": "6N", "params_kind": "total", "excluded": {"diverged": 2},
        "approach1": {"a": 0.5, "b": 0.5, "k_params": 0.09, "k_tokens": 1.85,
                      "bootstrap": _bootstrap(a=(0.48, 0.5, 0.52))},
        "approach2": {"a": 0.47, "b": 0.53, "k_params": 0.4, "k_tokens": 0.42, "minima": minima,
                      "bootstrap": _bootstrap(a=(0.44, 0.47, 0.5))},
        "approach3": dict(LAW_PARAMS, a=0.4516, b=0.5484, objective=1.0e-3, n_points=18,
                          bootstrap=_bootstrap(a=(0.43, 0.4516, 0.47))),
        "vpnls": dict(LAW_PARAMS, a=0.4516, b=0.5484)})


def _bootstrap(**intervals) -> dict:
    """A bootstrap block whose 80% percentile interval of each name is exactly (lo, hi):
    of 11 samples, the 10th and 90th percentiles are the 2nd and the 10th."""
    samples = {k: [lo, lo, *[mid] * 7, hi, hi] for k, (lo, mid, hi) in intervals.items()}
    return {"level": 0.8, "n": 11, "seed": 0, "samples": samples}


@pytest.fixture(scope="module")
def rendered(points, fit, tmp_path_factory):
    out = tmp_path_factory.mktemp("rep")
    fig_path = plots.save_figure(plots.isoflop_figure(points, fit), out / "figures" / "iso.png")
    rec = recommend(fit, 1e20, vocab_size=32_000, seq_len=2048)
    doc = report.build_document(points, fit, rec, source=f"/data/{EVIL}.csv",
                                excluded={"diverged": 2, "failed": 1},
                                figures=[(fig_path, "figures/iso.png", f"IsoFLOP {EVIL}")])
    return report.render_markdown(doc), report.render_html(doc), fig_path, rec


def test_html_escapes_every_user_string(rendered):
    _, page, _, _ = rendered
    assert EVIL not in page and EVIL_COLUMN not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # run name, source path, caption
    assert "&lt;img src=x onerror=alert(2)&gt;" in page  # column name
    assert page.count("<script") == 0


def test_html_is_self_contained(rendered):
    _, page, fig_path, _ = rendered
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", page)
    assert "<link" not in page and "@import" not in page
    data = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(data) == 1 and base64.b64decode(data[0]) == fig_path.read_bytes()


def test_markdown_has_the_sections_and_keeps_html_out(rendered):
    md, _, _, rec = rendered
    for heading in ("## Data", "## Fitted laws, all approaches", "## Recommendation for C = 1e20",
                    "## Caveats", "## Figures"):
        assert heading in md
    assert EVIL not in md and "&lt;script&gt;" in md
    assert "![IsoFLOP" in md and "(figures/iso.png)" in md
    assert plots.human_count(rec.n_params) in md


def test_fit_table_puts_all_approaches_side_by_side(fit):
    header, rows = report.fit_table(fit)
    assert header == ["quantity", "Approach 1", "Approach 2", "Approach 3", "VPNLS"]
    a_row = next(r for r in rows if r[0].startswith("a "))
    assert a_row[1] == "0.5 [0.48, 0.52]"
    assert a_row[3].startswith("0.4516 [0.43, 0.47]")
    alpha = next(r for r in rows if r[0] == "alpha")
    assert alpha[1] == "-" and alpha[3] == "0.34"


def test_caveats_name_the_problems(points, fit, rendered):
    md, _, _, _ = rendered
    assert "Minimum NOT bracketed" in md and "1e19" in md
    assert "1.0 decades of FLOPs beyond" in md  # 1e20 target vs 1e19 most compute
    assert "Embeddings are 30% to 30%" in md  # non-embedding counts are in the data
    assert "diverged: 2, failed: 1" in md
    rec = recommend(fit, 1e18, vocab_size=None)
    inside = report.caveats(points, fit, rec, [])
    assert any("inside the range" in c for c in inside)
    assert any("bracketed by the sizes" in c for c in inside)


def test_worst_fitted_runs_are_listed(points, fit):
    rows = report.worst_fit_rows(points, fit, "params", k=3)
    assert rows[0][0] == EVIL
    assert float(rows[0][-1]) == pytest.approx(np.log(1.2), abs=0.02)


@pytest.mark.parametrize("value,text", [(None, "-"), (float("nan"), "-"), (0.4516, "0.4516"),
                                        (406.4, "406.4"), (2.5e9, "2.5e+09"), (18, "18")])
def test_fmt_num(value, text):
    assert report.fmt_num(value) == text


def test_holdout_table_from_the_holdout_record():
    holdout = Holdout(
        budget=1e19, n_train=40, n_heldout=9, observed_params_opt=2.0e8, observed_loss_opt=2.98,
        observed_bracketed=True,
        predicted={"approach3": {"params_opt": 2.2e8, "loss_opt": 2.99,
                                 "params_opt_log_error": float(np.log(1.1)),
                                 "points_loss_mean_abs_rel_error": 0.0048},
                   "approach2": {"params_opt": 1.8e8, "params_opt_log_error": float(np.log(0.9))}})
    rows = report.holdout_rows(holdout)
    assert rows[0][:4] == ["Approach 2", "180M", "200M", "-10.0%"]
    assert rows[1] == ["Approach 3", "220M", "200M", "+10.0%", "2.99", "2.98", "0.48%"]
    assert report.holdout_rows(replace(holdout, predicted={})) == []
