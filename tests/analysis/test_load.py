"""Loading runs directories and CSVs into the points table."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.load import (
    assign_budgets,
    chinchilla_csv_to_points,
    flops_levels,
    load_curves,
    load_points,
)
from scaling.errors import UserError

CHINCHILLA_CSV = Path(__file__).resolve().parents[2] / "data" / "reference" / "chinchilla_svg_extracted.csv"


def write_csv(path, **cols):
    pd.DataFrame(cols).to_csv(path, index=False)
    return path


def test_csv_with_tokens_and_extra_columns(tmp_path):
    p = write_csv(tmp_path / "r.csv", params=[1e6, 2e6, 4e6], tokens=[4e7, 2e7, 1e7],
                  loss=[3.1, 3.0, 3.2], lr=[1e-3] * 3)
    df, info = load_points(p)
    assert list(df.columns[:7]) == ["run", "params", "params_non_embedding", "tokens", "flops",
                                    "budget", "loss"]
    assert "lr" in df.columns
    assert np.allclose(df["flops"], 6 * df["params"] * df["tokens"])
    # All three runs share one budget (2.4e14), inferred from their FLOPs.
    assert np.allclose(df["budget"], 2.4e14) and info.budgets_inferred
    assert info["excluded"] == {}


def test_csv_with_flops_instead_of_tokens_and_drop_highest(tmp_path):
    p = write_csv(tmp_path / "r.csv", params=[1e6, 2e6, 4e6, 8e6], flops=[6e14] * 4,
                  loss=[3.1, 3.0, 3.2, 3.5], budget=[6e14] * 4)
    df, info = load_points(p, drop_highest=1)
    assert np.allclose(df["tokens"], 6e14 / (6 * df["params"]))
    assert sorted(df["loss"]) == [3.0, 3.1, 3.2] and info.dropped_highest == 1
    assert not info.budgets_inferred


@pytest.mark.parametrize("cols, match", [
    (dict(params=[1e6], loss=[3.0]), "missing column 'tokens'"),
    (dict(tokens=[1e6], loss=[3.0]), "missing column 'params'"),
    (dict(params=[1e6], tokens=[1e7]), "missing column 'loss'"),
    (dict(params=[1e6, -1], tokens=[1e7, 1e7], loss=[3.0, 3.0]), "'params' must be positive"),
    (dict(params=[1e6, 1e6], tokens=[1e7, 0], loss=[3.0, 3.0]), "'tokens' must be positive"),
    (dict(params=[1e6, 1e6], tokens=[1e7, 1e7], loss=[3.0, np.nan]), "'loss'.*row 2"),
    (dict(params=[1e6, 1e6], tokens=[1e7, 1e7], loss=[3.0, np.inf]), "'loss'"),
    (dict(params=[1e6, "big"], tokens=[1e7, 1e7], loss=[3.0, 3.0]), "'params'"),
])
def test_bad_csv_is_one_line_user_error(tmp_path, cols, match):
    p = write_csv(tmp_path / "bad.csv", **cols)
    with pytest.raises(UserError, match=match) as e:
        load_points(p)
    assert "\n" not in str(e.value) and "bad.csv" in str(e.value)


def test_missing_file_and_too_many_dropped(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_points(tmp_path / "nope.csv")
    p = write_csv(tmp_path / "r.csv", params=[1e6, 2e6], tokens=[1e7, 1e7], loss=[3.0, 3.1])
    with pytest.raises(UserError, match="drop_highest"):
        load_points(p, drop_highest=2)


def test_flops_levels_recover_a_jittered_grid():
    rng = np.random.default_rng(0)
    budgets = np.array([1e18, 3e18, 1e19, 3e19, 1e20])
    flops = np.repeat(budgets, 8) * np.exp(rng.uniform(-0.05, 0.05, 40))  # +-5% jitter
    flops = np.r_[flops, 5.5e18]  # a lone run between levels
    levels = flops_levels(flops)
    assert len(levels) == 5 and np.allclose(levels, budgets, rtol=0.06)
    assigned = assign_budgets(flops)
    assert np.isnan(assigned[-1])
    assert np.allclose(assigned[:-1], np.repeat(levels, 8))


def test_chinchilla_levels_include_its_isoflop_budgets():
    df = chinchilla_csv_to_points(CHINCHILLA_CSV)
    levels = flops_levels(df["flops"].to_numpy())
    # Hoffmann et al.'s IsoFLOP budgets (their Figure 3): each is found within 15%.
    for c in (6e18, 1e19, 3e19, 6e19, 1e20, 3e20, 6e20, 1e21, 3e21):
        assert np.min(np.abs(np.log(levels / c))) < np.log(1.15), c


def _write_run(root, name, state, loss=None, n_params=1e6, n_tokens=2e7, budget=1.2e14,
               metrics=()):
    d = root / "sweep" / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"run_name": name, "budget": budget,
                                               "convention": "6N", "sweep": "sweep"}))
    (d / "status.json").write_text(json.dumps({"state": state}))
    if loss is not None:
        (d / "result.json").write_text(json.dumps({
            "eval_loss": loss, "eval_bpb": loss / 0.69, "n_params": n_params,
            "n_params_non_embedding": n_params * 0.8, "n_tokens": n_tokens,
            "flops": 6 * n_params * n_tokens, "budget": budget,
            "flops_by_convention": {"6N": 6 * n_params * n_tokens,
                                    "kaplan": 5 * n_params * n_tokens}}))
    with open(d / "metrics.jsonl", "w") as f:
        for step, tokens, train_loss in metrics:
            f.write(json.dumps({"step": step, "tokens": tokens,
                                "flops": 6 * n_params * tokens, "train_loss": train_loss}) + "\n")
        f.write('{"step": 99, "tok')  # a crash mid-write: the reader skips the cut line
    return d


def test_runs_dir_excludes_and_counts_unfinished(tmp_path):
    _write_run(tmp_path, "a", "done", 3.0, n_params=1e6, metrics=[(1, 1e6, 5.0), (2, 2e6, 4.0)])
    _write_run(tmp_path, "b", "done", 2.9, n_params=2e6, n_tokens=1e7)
    _write_run(tmp_path, "c", "diverged", 9.0)
    _write_run(tmp_path, "d", "failed")
    _write_run(tmp_path, "e", "running")
    _write_run(tmp_path, "f", "pending")
    df, info = load_points(tmp_path)
    assert sorted(df["run"]) == ["a", "b"]
    assert info["excluded"] == {"diverged": 1, "failed": 1, "unfinished": 2}
    row = df.set_index("run").loc["a"]
    assert row["params"] == 1e6 and row["params_non_embedding"] == 8e5
    assert row["flops"] == 6 * 1e6 * 2e7 and row["budget"] == 1.2e14 and row["loss"] == 3.0
    df_k, info_k = load_points(tmp_path, convention="kaplan")
    assert df_k.set_index("run").loc["a", "flops"] == 5 * 1e6 * 2e7
    with pytest.raises(UserError, match="convention 'deepseek'"):
        load_points(tmp_path, convention="deepseek")
    curves = load_curves(tmp_path)
    a = curves[curves["run"] == "a"]
    assert list(a["step"]) == [1, 2] and list(a["loss"]) == [5.0, 4.0]
    assert set(curves["run"]) == {"a"}  # b logged nothing


def test_runs_root_leaves_out_a_tune_blocks_runs(tmp_path):
    _write_run(tmp_path, "a", "done", 3.0)
    _write_run(tmp_path, "b", "done", 2.9, n_params=2e6, n_tokens=1e7)
    tuned = _write_run(tmp_path, "lr-x4", "done", 2.5)
    (tuned.parent.parent / "sweep-tune").mkdir()
    tuned.rename(tmp_path / "sweep-tune" / "lr-x4")
    config = json.loads((tmp_path / "sweep-tune" / "lr-x4" / "config.json").read_text())
    (tmp_path / "sweep-tune" / "lr-x4" / "config.json").write_text(
        json.dumps({**config, "sweep": "sweep-tune"}))
    df, info = load_points(tmp_path)
    assert sorted(df["run"]) == ["a", "b"] and info["excluded"] == {"tuning": 1}


def test_runs_dir_with_nothing_finished(tmp_path):
    _write_run(tmp_path, "c", "diverged", 9.0)
    with pytest.raises(UserError, match="no finished runs.*1 diverged"):
        load_points(tmp_path)
