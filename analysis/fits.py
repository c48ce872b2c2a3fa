"""Chinchilla's three approaches behind one small API, and the fit.json artefact.

Functions (pure, on a points DataFrame from `analysis.load.load_points`):
    fit_approach1(curves) / fit_approach1_points(points)   -> PowerLawResult
    fit_approach2(points)                                  -> PowerLawResult (+ minima)
    fit_approach3(n_params, n_tokens, loss)                -> Approach3Result
    fit_vpnls(n_params, n_tokens, loss)                    -> Approach3Result
    fit_all(points, curves=None, approaches="all")         -> {"approach1": ..., ...}
    fit_document(points, info, results)                    -> the fit.json dict
    load_fit(path_or_dict)                                 -> {"approach3": Approach3Result, ...}

sklearn-like wrappers: `Approach1().fit(curves)`, `Approach2().fit(points)`,
`Approach3().fit(points)`, `VPNLS().fit(points)`; each has `.result_`, `.params`,
`.predict(...)` and `.to_dict()`.

Every result is a frozen dataclass with `to_dict()` (and `from_dict`) so plots, reports and
recommendations read fit.json and never refit.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.approach1 import envelope, fit_approach1, fit_approach1_points
from analysis.approach2 import (
    FitWarning,
    IsoFlopMinimum,
    PowerLawResult,
    fit_approach2,
    isoflop_minima,
)
from analysis.approach3 import (
    HUBER_DELTA,
    Approach3Result,
    chinchilla_grid,
    fit_approach3,
    fit_vpnls,
    objective,
)
from scaling.errors import UserError

APPROACHES = ("1", "2", "3")
Result = PowerLawResult | Approach3Result


def _params_column(points: pd.DataFrame, params_kind: str) -> np.ndarray:
    if params_kind == "total":
        return points["params"].to_numpy(float)
    if params_kind == "non_embedding":
        n = points["params_non_embedding"].to_numpy(float)
        if not np.isfinite(n).all():
            raise UserError("params_kind: 'non_embedding' needs params_non_embedding for "
                            "every run (unknown for some)")
        return n
    raise UserError(f"params_kind: expected 'total' or 'non_embedding', got {params_kind!r}")


def with_params_kind(points: pd.DataFrame, params_kind: str = "total") -> pd.DataFrame:
    """Points whose `params` column is the chosen parameter count."""
    if params_kind == "total":
        return points
    out = points.copy()
    out["params"] = _params_column(points, params_kind)
    return out


def fit_approach3_points(points: pd.DataFrame, **kw: Any) -> Approach3Result:
    return fit_approach3(points["params"], points["tokens"], points["loss"], **kw)


def fit_vpnls_points(points: pd.DataFrame, **kw: Any) -> Approach3Result:
    return fit_vpnls(points["params"], points["tokens"], points["loss"], **kw)


def parse_approaches(approach: str | int | tuple | list) -> tuple[str, ...]:
    if isinstance(approach, list | tuple):
        names = tuple(str(a) for a in approach)
    elif str(approach) == "all":
        names = APPROACHES
    else:
        names = (str(approach),)
    bad = [a for a in names if a not in APPROACHES]
    if bad:
        raise UserError(f"approach: expected 1, 2, 3 or all, got {bad[0]!r}")
    return names


def fit_all(points: pd.DataFrame, curves: pd.DataFrame | None = None,
            approaches: str | tuple = "all", *, vpnls: bool = True,
            starts: np.ndarray | None = None) -> dict[str, Result | dict]:
    """Run the chosen approaches. With "all", an approach whose data requirement is not met
    (e.g. Approach 2 with one budget) yields {"error": message} instead of failing the rest;
    when it was asked for alone, its UserError propagates."""
    names = parse_approaches(approaches)
    lenient = len(names) > 1
    out: dict[str, Result | dict] = {}

    def attempt(key: str, fn) -> None:
        try:
            out[key] = fn()
        except UserError as e:
            if not lenient:
                raise
            warnings.warn(f"{key} skipped: {e}", FitWarning, stacklevel=3)
            out[key] = {"error": str(e)}

    if "1" in names:
        if curves is not None and len(curves):
            attempt("approach1", lambda: fit_approach1(curves))
        else:
            attempt("approach1", lambda: fit_approach1_points(points))
    if "2" in names:
        attempt("approach2", lambda: fit_approach2(points))
    if "3" in names:
        out["approach3"] = fit_approach3_points(points, starts=starts)
        if vpnls:
            out["vpnls"] = fit_vpnls_points(points)
    return out


def fit_document(points: pd.DataFrame, info: Any, results: dict[str, Result | dict], *,
                 params_kind: str = "total") -> dict:
    """The fit.json object (docs/architecture.md contract) for these results."""
    info_d = info.to_dict() if hasattr(info, "to_dict") else dict(info or {})
    doc = {"source": info_d.get("source", ""), "n_points": int(len(points)),
           "excluded": info_d.get("excluded", {}),
           "dropped_highest": info_d.get("dropped_highest", 0),
           "convention": info_d.get("convention", "6N"), "params_kind": params_kind,
           "budgets_inferred": info_d.get("budgets_inferred", False),
           "huber_delta": HUBER_DELTA}
    for key, res in results.items():
        doc[key] = res if isinstance(res, dict) else res.to_dict()
    return doc


def load_fit(src: str | Path | dict) -> dict[str, Result]:
    """Result objects from a fit.json path (or its parsed dict); approaches that errored or
    are absent are left out."""
    if isinstance(src, dict):
        doc = src
    else:
        from scaling.fileio import read_json

        try:
            doc = read_json(src)
        except (OSError, ValueError) as e:
            raise UserError(f"{src}: not a readable fit.json ({e})") from None
    if not isinstance(doc, dict):
        raise UserError(f"{src}: expected a JSON object")
    out: dict[str, Result] = {}
    for key in ("approach3", "vpnls"):
        if isinstance(doc.get(key), dict) and "error" not in doc[key]:
            out[key] = Approach3Result.from_dict(doc[key])
    for key in ("approach1", "approach2"):
        if isinstance(doc.get(key), dict) and "error" not in doc[key]:
            out[key] = PowerLawResult.from_dict(doc[key], approach=key)
    return out


class _Estimator:
    result_: Result

    @property
    def params(self) -> dict[str, float]:
        return self.result_.params

    def to_dict(self) -> dict:
        return self.result_.to_dict()


class Approach1(_Estimator):
    def fit(self, curves: pd.DataFrame) -> Approach1:
        self.result_ = fit_approach1(curves)
        return self

    def predict(self, flops: Any) -> np.ndarray:
        return self.result_.params_opt(flops)


class Approach2(_Estimator):
    def fit(self, points: pd.DataFrame) -> Approach2:
        self.result_ = fit_approach2(points)
        return self

    def predict(self, flops: Any) -> np.ndarray:
        return self.result_.params_opt(flops)


class Approach3(_Estimator):
    def __init__(self, starts: np.ndarray | None = None):
        self.starts = starts

    def fit(self, points: pd.DataFrame) -> Approach3:
        self.result_ = fit_approach3_points(points, starts=self.starts)
        return self

    def predict(self, n_params: Any, n_tokens: Any) -> np.ndarray:
        return self.result_.predict(n_params, n_tokens)


class VPNLS(Approach3):
    def fit(self, points: pd.DataFrame) -> VPNLS:
        self.result_ = fit_vpnls_points(points)
        return self


__all__ = ["APPROACHES", "Approach1", "Approach2", "Approach3", "Approach3Result", "FitWarning",
           "IsoFlopMinimum", "PowerLawResult", "VPNLS", "chinchilla_grid", "envelope",
           "fit_all", "fit_approach1", "fit_approach1_points", "fit_approach2",
           "fit_approach3", "fit_approach3_points", "fit_document", "fit_vpnls",
           "fit_vpnls_points", "isoflop_minima", "load_fit", "objective", "parse_approaches",
           "with_params_kind"]
