"""Runs or a CSV into one tidy DataFrame of points (one row per finished run).

`load_points(src)` reads either a runs directory (every run's record, through
`scaling.runs.iter_runs`; docs/architecture.md) or a CSV with columns `params`, `tokens` (or `flops`, then
tokens = flops / (6 params)) and `loss`. Runs that diverged, failed, have not finished
or cannot be read are left out and counted by reason in `info["excluded"]`.

Budgets. A run directory records the nominal budget each run was sized for. A CSV may
give a `budget` column; otherwise runs are grouped by FLOPs: `flops_levels` finds the
levels as the modes of a Gaussian kernel density of log10 FLOPs (bandwidth 0.02 decades),
each point is assigned the nearest level in log10, and only points within 0.05 decades
(+-12%) of a level supported by at least 3 points get that level as `budget` (the rest get
NaN: they still count for Approach 3, which needs no budgets).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.lr_law import TUNE_SUFFIX
from scaling.errors import UserError
from scaling.evals import METRIC_PREFIXES, extra_metrics
from scaling.fileio import read_jsonl
from scaling.runs import (
    METRICS_FILE,
    RunRecord,
    RunResult,
    iter_runs,
    read_config_json,
    read_result,
)

POINT_COLUMNS = ["run", "params", "params_non_embedding", "tokens", "flops", "budget", "loss"]
LEVEL_BANDWIDTH_DEX = 0.02
LEVEL_TOLERANCE_DEX = 0.05
LEVEL_MIN_POINTS = 3


@dataclass
class LoadInfo:
    """Where the points came from and what was left out."""

    source: str
    kind: str  # "runs" | "csv"
    excluded: dict[str, int] = field(default_factory=dict)
    dropped_highest: int = 0
    convention: str = "6N"
    budgets_inferred: bool = False

    def to_dict(self) -> dict:
        return {"source": self.source, "kind": self.kind, "excluded": dict(self.excluded),
                "dropped_highest": self.dropped_highest, "convention": self.convention,
                "budgets_inferred": self.budgets_inferred}

    def __getitem__(self, key: str) -> Any:  # info["excluded"] as in the contract
        return self.to_dict()[key]


EPOCH_COLUMNS = {"Model Size": "params", "Training FLOP": "flops"}


def load_points(src: str | Path, drop_highest: int = 0, *, convention: str | None = None,
                min_points: int = 1, metric: str | None = None,
                label_column: str | None = None) -> tuple[pd.DataFrame, LoadInfo]:
    """Points DataFrame (columns POINT_COLUMNS plus any other CSV columns) and LoadInfo.

    drop_highest: remove the k highest-loss points (Epoch drop 5 from Chinchilla's data).
    convention: for a runs dir, which FLOP convention fills `flops` (default: each run's own).
    metric: fit this loss-like metric instead of the held-out loss (`select_metric`).
    label_column: the CSV column whose values label the points (copied to `label`; a CSV's
    own `label` column is used without it; a runs dir's labels come from its specs).
    """
    path = Path(src)
    if not path.exists():
        raise UserError(f"{src}: no such file or directory")
    if path.is_dir():
        df, info = _load_runs(path, convention)
    else:
        df, info = _load_csv(path)
    if metric is not None and metric != "loss":
        df = select_metric(df, metric, info)
    if label_column is not None:
        if label_column not in df.columns:
            raise UserError(f"--label-column: no column {label_column!r} in {src}")
        df["label"] = df[label_column]
    if "label" in df.columns:
        df["label"] = [None if pd.isna(x) else str(x) for x in df["label"]]
    if drop_highest < 0:
        raise UserError(f"drop_highest: expected >= 0, got {drop_highest}")
    if drop_highest:
        if drop_highest >= len(df):
            raise UserError(f"drop_highest: {drop_highest} would drop all {len(df)} points")
        df = df.sort_values("loss", kind="stable").iloc[:-drop_highest]
        info.dropped_highest = drop_highest
    df = df.reset_index(drop=True)
    if len(df) < min_points:
        raise UserError(f"{src}: expected at least {min_points} finished runs, got {len(df)}")
    return df, info


ACCURACY_LIKE = ("accuracy", "acc", "chance")  # last part of a saturating metric's name


def loss_like_metrics(df: pd.DataFrame) -> list[str]:
    """The columns `--metric` can name: numeric, not N/D/C/budget, not accuracy-like."""
    skip = set(POINT_COLUMNS) - {"loss"}
    return sorted(c for c in df.columns if c not in skip and c not in ("run_dir", "sweep")
                  and pd.api.types.is_numeric_dtype(df[c]) and not is_accuracy_like(c))


def is_accuracy_like(metric: str) -> bool:
    return metric.rsplit("/", 1)[-1].lower() in ACCURACY_LIKE


def select_metric(df: pd.DataFrame, metric: str, info: LoadInfo) -> pd.DataFrame:
    """The points with `metric` as their `loss` (what every fit reads); rows without it are
    left out and counted as `no_metric`. A metric that is not there, or that saturates
    (accuracy: it does not follow E + A/N^a + B/D^b), is refused naming what is there."""
    where = "runs" if info.kind == "runs" else "columns"
    if is_accuracy_like(metric):
        task = metric.split("/")[1] if metric.startswith("task/") and metric.count("/") == 2 \
            else "NAME"
        raise UserError(f"--metric: {metric!r} is accuracy-like (it saturates, so it does not "
                        f"follow E + A/N^alpha + B/D^beta); forecast it with `scaling fit SRC "
                        f"--task {task}` and `scaling predict --task {task}`")
    if metric not in df.columns or metric in set(POINT_COLUMNS) - {"loss"}:
        have = ", ".join(loss_like_metrics(df)) or "none"
        recorded = (f"not recorded by the runs in {info.source}" if where == "runs"
                    else f"not a column of {info.source}")
        raise UserError(f"--metric: {metric!r} is {recorded} (loss-like metrics: {have})")
    values = pd.to_numeric(df[metric], errors="coerce").to_numpy(dtype=np.float64)
    missing = np.isnan(values)
    if missing.all():
        raise UserError(f"--metric: {metric!r} has no values in {info.source}")
    df = df[~missing].copy()
    if missing.any():
        info.excluded["no_metric"] = info.excluded.get("no_metric", 0) + int(missing.sum())
    values = values[~missing]
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise UserError(f"--metric: {metric!r} must be positive and finite (a loss), got "
                        f"{values[i]!r} for run {df['run'].iloc[i]}")
    df["loss"] = values
    return df


def _check_positive(df: pd.DataFrame, column: str, where: str) -> None:
    values = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise UserError(f"{where}: column {column!r} must be positive and finite, "
                        f"got {df[column].iloc[i]!r} in row {i + 1}")
    df[column] = values


def _csv_columns(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The CSV's columns under our names, or a UserError naming the missing one."""
    df.columns = [str(c).strip() for c in df.columns]
    # Epoch AI's extraction of Chinchilla's Figure 4 names its columns this way; accepting
    # them lets `scaling fit` read that published data set as it is.
    df = df.rename(columns={k: v for k, v in EPOCH_COLUMNS.items()
                            if k in df.columns and v not in df.columns})
    for name in ("params", "loss"):
        if name not in df.columns:
            raise UserError(f"{path}: missing column {name!r} (expected params, tokens or "
                            f"flops, loss)")
    if "tokens" not in df.columns and "flops" not in df.columns:
        raise UserError(f"{path}: missing column 'tokens' (or 'flops', then tokens = "
                        f"flops / (6 params))")
    if df.empty:
        raise UserError(f"{path}: no rows")
    return df


def _load_csv(path: Path) -> tuple[pd.DataFrame, LoadInfo]:
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from None
    df = _csv_columns(df, path)
    for name in ("params", "loss", *(c for c in ("tokens", "flops") if c in df.columns)):
        _check_positive(df, name, str(path))
    if "tokens" not in df.columns:
        df["tokens"] = df["flops"] / (6.0 * df["params"])
    if "flops" not in df.columns:
        df["flops"] = 6.0 * df["params"] * df["tokens"]
    if "run" not in df.columns:
        df["run"] = [f"row{i + 1}" for i in range(len(df))]
    if "params_non_embedding" not in df.columns:
        df["params_non_embedding"] = np.nan
    inferred = "budget" not in df.columns
    if inferred:
        df["budget"] = assign_budgets(df["flops"].to_numpy())
    else:
        budget = pd.to_numeric(df["budget"], errors="coerce").to_numpy(dtype=np.float64)
        if (np.isfinite(budget) & (budget <= 0)).any():
            raise UserError(f"{path}: column 'budget' must be positive where given")
        df["budget"] = budget
    others = [c for c in df.columns if c not in POINT_COLUMNS]
    info = LoadInfo(source=str(path), kind="csv", budgets_inferred=inferred)
    return df[POINT_COLUMNS + others].copy(), info


def _excluded(run: RunRecord) -> str | None:
    """Why a run gives no point (None: it gives one)."""
    if run.sweep.endswith(TUNE_SUFFIX):
        return "tuning"  # a learning-rate sweep at one cell, not an IsoFLOP point
    if run.state in ("diverged", "failed", "unreadable"):
        return run.state
    if run.result is None or run.state != "done":
        return "unfinished"
    return "no_loss" if run.result.eval_loss is None else None


def _point(run: RunRecord, convention: str | None) -> dict:
    result = run.result or RunResult()  # _excluded lets only finished runs through
    flops = result.flops
    if convention is not None:
        by_convention = result.flops_by_convention or run.flops
        if convention not in by_convention:
            raise UserError(f"{run.run_dir}: no FLOPs under convention {convention!r} "
                            f"(have {', '.join(sorted(by_convention)) or 'none'})")
        flops = by_convention[convention]
    assert result.eval_loss is not None  # _excluded drops runs without a loss
    return {"run": run.name, "params": result.n_params,
            "params_non_embedding": result.n_params_non_embedding,
            "tokens": result.n_tokens or run.n_tokens, "flops": flops,
            "budget": result.budget or run.budget, "loss": float(result.eval_loss),
            "sweep": run.sweep, "eval_bpb": result.eval_bpb, "run_dir": str(run.run_dir),
            "label": read_config_json(run.run_dir).get("label"),  # the spec's `label`
            **extra_metrics(read_result(run.run_dir) or {})}  # eval/<set>/*, task/<task>/*


def _load_runs(runs_dir: Path, convention: str | None) -> tuple[pd.DataFrame, LoadInfo]:
    rows: list[dict] = []
    excluded: dict[str, int] = {}
    conventions: set[str] = set()
    for run in iter_runs(runs_dir):
        reason = _excluded(run)
        if reason:
            excluded[reason] = excluded.get(reason, 0) + 1
            continue
        conventions.add(convention or run.convention)
        rows.append(_point(run, convention))
    if not rows:
        detail = ", ".join(f"{v} {k}" for k, v in sorted(excluded.items())) or "no run dirs"
        raise UserError(f"{runs_dir}: no finished runs to fit ({detail})")
    df = pd.DataFrame(rows)
    for name in ("params", "tokens", "loss"):
        _check_positive(df, name, str(runs_dir))
    for name in ("flops", "params_non_embedding", "budget", "eval_bpb"):
        df[name] = pd.to_numeric(df[name], errors="coerce").astype(np.float64)
    missing_flops = ~np.isfinite(df["flops"].to_numpy())
    df.loc[missing_flops, "flops"] = 6.0 * df["params"] * df["tokens"]
    inferred = bool(df["budget"].isna().all())
    if inferred:
        df["budget"] = assign_budgets(df["flops"].to_numpy())
    conv = convention or (conventions.pop() if len(conventions) == 1 else "mixed")
    info = LoadInfo(source=str(runs_dir), kind="runs", excluded=excluded, convention=conv,
                    budgets_inferred=inferred)
    extra = sorted(c for c in df.columns if c.startswith(METRIC_PREFIXES))
    labelled = ["label"] if df["label"].notna().any() else []
    return df[POINT_COLUMNS + ["sweep", "eval_bpb", "run_dir"] + labelled + extra], info


def load_curves(runs_dir: str | Path, *, include_unfinished: bool = False) -> pd.DataFrame:
    """Training curves: run, params, step, tokens, flops, loss (training loss per logged step;
    `eval_loss` too where logged). Diverged/failed runs are left out; unfinished ones too
    unless include_unfinished. Raises UserError when `runs_dir` is not a directory."""
    frames = []
    for run in iter_runs(runs_dir):
        if run.state in ("diverged", "failed", "unreadable") or (
                run.state != "done" and not include_unfinished):
            continue
        records = [r for r in read_jsonl(run.run_dir / METRICS_FILE) if "step" in r]
        if not records or not run.n_params:
            continue
        m = pd.DataFrame.from_records(records)
        curve = pd.DataFrame({
            "run": run.name,
            "params": float(run.n_params),
            "step": m["step"].astype(int),
            "tokens": pd.to_numeric(m.get("tokens"), errors="coerce"),
            "flops": pd.to_numeric(m.get("flops"), errors="coerce"),
            "loss": pd.to_numeric(m.get("train_loss"), errors="coerce"),
            "eval_loss": pd.to_numeric(m["eval_loss"], errors="coerce")
            if "eval_loss" in m else np.nan,
        })
        no_flops = ~np.isfinite(curve["flops"].to_numpy(dtype=float))
        curve.loc[no_flops, "flops"] = 6.0 * curve["params"] * curve["tokens"]
        frames.append(curve)
    cols = ["run", "params", "step", "tokens", "flops", "loss", "eval_loss"]
    if not frames:
        return pd.DataFrame(columns=cols)
    out = pd.concat(frames, ignore_index=True)
    ok = np.isfinite(out["loss"].to_numpy(float)) & (out["flops"].to_numpy(float) > 0)
    return out[ok].reset_index(drop=True)[cols]


def flops_levels(flops: np.ndarray, *, bandwidth_dex: float = LEVEL_BANDWIDTH_DEX,
                 tolerance_dex: float = LEVEL_TOLERANCE_DEX,
                 min_points: int = LEVEL_MIN_POINTS) -> np.ndarray:
    """FLOP levels (ascending): modes of the kernel density of log10 FLOPs with at least
    `min_points` points within `tolerance_dex`; each level is 10^(median log10 FLOPs of its
    points)."""
    x = np.log10(np.asarray(flops, dtype=np.float64))
    if len(x) == 0:
        return np.zeros(0)
    grid = np.arange(x.min() - 3 * bandwidth_dex, x.max() + 3 * bandwidth_dex, bandwidth_dex / 8)
    density = np.exp(-0.5 * ((grid[:, None] - x[None, :]) / bandwidth_dex) ** 2).sum(axis=1)
    peak = np.r_[False, (density[1:-1] > density[:-2]) & (density[1:-1] >= density[2:]), False]
    centres = grid[peak]
    if len(centres) == 0:
        return np.zeros(0)
    nearest = np.argmin(np.abs(x[:, None] - centres[None, :]), axis=1)
    levels = []
    for k, c in enumerate(centres):
        members = x[(nearest == k) & (np.abs(x - c) <= tolerance_dex)]
        if len(members) >= min_points:
            levels.append(10 ** np.median(members))
    return np.array(sorted(levels))


def assign_budgets(flops: np.ndarray, levels: np.ndarray | None = None,
                   tolerance_dex: float = LEVEL_TOLERANCE_DEX) -> np.ndarray:
    """Each run's budget: the nearest level in log10 FLOPs if within tolerance_dex, else NaN."""
    flops = np.asarray(flops, dtype=np.float64)
    levels = flops_levels(flops) if levels is None else np.asarray(levels, dtype=np.float64)
    out = np.full(len(flops), np.nan)
    if len(levels) == 0:
        return out
    dist = np.abs(np.log10(flops)[:, None] - np.log10(levels)[None, :])
    k = np.argmin(dist, axis=1)
    near = dist[np.arange(len(flops)), k] <= tolerance_dex
    out[near] = levels[k[near]]
    return out


def chinchilla_csv_to_points(path: str | Path) -> pd.DataFrame:
    """Read Epoch's extracted Chinchilla CSV (`Model Size`, `Training FLOP`, `loss`) into the
    points schema (tokens = FLOPs / 6N). Used by tests and benchmarks; never copies the file."""
    return _load_csv(Path(path))[0][POINT_COLUMNS]


def drop_highest_loss(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """The points without the k highest-loss ones (as Epoch did with k = 5)."""
    return df.sort_values("loss", kind="stable").iloc[: len(df) - k].reset_index(drop=True)
