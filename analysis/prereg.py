"""Preregistration: a forecast written down before a run is trained, scored after it ends.

A forecast is the JSON `scaling recommend --json` (or `scaling predict --json`) prints: it
names the fit it came from (`fit_path`), the planned (n_params, n_tokens) and the loss. The
prediction interval is the forecast's own `loss_pi` at its `level` when it has one (predict,
and recommend since it carries one); an older recommend forecast has only the law's CI, so
the PI is then recomputed from the fit it names at the planned (N, D) with
`analysis.predict.predict_from_fit` (the same answer `scaling predict` gives).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.fitdoc import FitDocument, read_fit
from analysis.predict import predict_from_fit
from scaling.errors import UserError
from scaling.fileio import read_json

RECORD_NAME = "forecast_check.json"


@dataclass(frozen=True)
class ObservedRun:
    name: str
    loss: float
    n_params: float | None
    n_tokens: float | None
    sweep: str | None  # None: unknown (a CSV row without a sweep column)
    source: str
    record_path: Path


def read_forecast(path: str | Path) -> dict:
    try:
        doc = read_json(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable forecast JSON ({e})") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: expected a JSON object (the output of recommend --json)")
    for key in ("n_params", "n_tokens", "loss"):
        v = doc.get(key)
        if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
            raise UserError(f"{path}: forecast field {key!r}: expected a positive number, "
                            f"got {v!r}")
    return doc


def observed_run(src: str) -> ObservedRun:
    """A finished run dir (result.json's eval_loss) or a CSV row, `CSV:ROW` or `CSV:NAME`."""
    path = Path(src)
    if path.is_dir():
        result = _json_or_none(path / "result.json")
        loss = (result or {}).get("eval_loss")
        if not (isinstance(loss, int | float) and math.isfinite(loss) and loss > 0):
            raise UserError(f"{src}: not a finished run (no eval_loss in result.json)")
        config = _json_or_none(path / "config.json") or {}
        return ObservedRun(config.get("run_name", path.name), float(loss),
                           result.get("n_params"), result.get("n_tokens", config.get("n_tokens")),
                           config.get("sweep", ""), str(path), path / RECORD_NAME)
    csv, sep, row = src.rpartition(":")
    if not sep or not Path(csv).is_file():
        raise UserError(f"{src}: expected a finished run directory or CSV:ROW")
    df = pd.read_csv(csv)
    if "loss" not in df:
        raise UserError(f"{csv}: expected a 'loss' column")
    if row.isdigit() and 1 <= int(row) <= len(df):
        i = int(row) - 1
    elif "run" in df and (df["run"].astype(str) == row).any():
        i = int((df["run"].astype(str) == row).to_numpy().argmax())
    else:
        raise UserError(f"{src}: ROW: expected a row number 1..{len(df)} or a run name")
    r = df.iloc[i]
    tokens = r.get("tokens")
    if tokens is None and "flops" in r and "params" in r:
        tokens = r["flops"] / (6 * r["params"])
    loss = float(r["loss"])
    if not (math.isfinite(loss) and loss > 0):
        raise UserError(f"{src}: loss: expected a positive number, got {loss}")
    name = str(r["run"]) if "run" in r else f"row{i + 1}"
    sweep = str(r["sweep"]) if "sweep" in r else None
    record = Path(csv).with_name(f"{Path(csv).stem}.{name}.{RECORD_NAME}")
    return ObservedRun(name, loss, _num(r.get("params")), _num(tokens), sweep, src, record)


def _json_or_none(path: Path):
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def _num(x) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def fit_sweeps(fit: FitDocument) -> set[str]:
    """Sweep names of the runs a fit was made from: its `sweeps` (written by `scaling fit`),
    else those under its source directory (empty when its source is a CSV)."""
    if fit.sweeps:
        return set(fit.sweeps)
    if not fit.source:  # Path("") is the working directory: an unknown source is no sweep
        return set()
    source = Path(fit.source)
    if not source.is_dir():
        return set()
    return {str(c.get("sweep", "")) for c in (_json_or_none(p) for p in
                                               source.glob("**/config.json")) if c}


def check_forecast(forecast: dict, observed: ObservedRun) -> dict:
    """The score record: error (observed / forecast - 1), inside the CI and PI or not."""
    fit_path = forecast.get("fit_path")
    fit = read_fit(fit_path) if fit_path and Path(fit_path).is_file() else None
    if fit is not None and observed.sweep is not None:
        sweeps = fit_sweeps(fit)
        if sweeps and observed.sweep not in sweeps:
            raise UserError(f"{observed.source}: run of sweep {observed.sweep!r}, but the "
                            f"forecast's fit was made from sweep(s) "
                            f"{', '.join(sorted(sweeps))}")
    level = forecast.get("level") or 0.8
    pi = forecast.get("loss_pi")
    pi_from = "forecast"
    if pi is None:
        if fit is None:
            raise UserError(f"forecast: no loss_pi and its fit ({fit_path!r}) is not readable")
        pi = predict_from_fit(fit, forecast["n_params"], forecast["n_tokens"],
                              level=level)["loss_pi"]
        pi_from = f"recomputed from {fit_path}"
    ci = forecast.get("loss_ci") or (forecast.get("ci") or {}).get("loss")
    obs = observed.loss
    return {"run": observed.name, "source": observed.source, "observed_loss": obs,
            "forecast_loss": forecast["loss"], "error": obs / forecast["loss"] - 1,
            "level": level, "loss_ci": ci,
            "inside_ci": None if ci is None else bool(ci[0] <= obs <= ci[1]),
            "loss_pi": pi, "inside_pi": bool(pi[0] <= obs <= pi[1]), "pi_from": pi_from,
            "forecast_n_params": forecast["n_params"], "forecast_n_tokens": forecast["n_tokens"],
            "observed_n_params": observed.n_params, "observed_n_tokens": observed.n_tokens,
            "fit_path": fit_path, "approach": forecast.get("approach")}


__all__ = ["ObservedRun", "check_forecast", "fit_sweeps", "observed_run", "read_forecast"]
