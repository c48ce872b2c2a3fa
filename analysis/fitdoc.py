"""fit.json: the one document of a fit, read and written only here.

A `FitDocument` holds where the points came from, which N and FLOP convention the fit used,
each approach's typed result (or the typed error that kept it from being fitted), each
approach's bootstrap samples and the validation results (e.g. the leave-largest-budget-out
holdout). `recommend`, `plots` and `report` take a FitDocument and ask it for laws: the
frontier N*(C), D*(C) and the loss L(N, D) are methods of the result types, evaluated on
one law or on every bootstrap sample at once.

The JSON layout (`FitDocument.to_dict`) keeps every key fit.json always had. It is flat per
approach: the result's keys, then "<name>_ci" for every bootstrapped estimate and a
"bootstrap" block {level, n, seed, samples}; validation results sit at the top level under
their names (new validations and per-approach extras are added as new keys). Reading checks every
number (finite, in its domain) and refuses a bad one with a UserError naming the key;
"_ci" keys are recomputed from the samples, never trusted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from analysis.approach2 import POWER_KEYS, IsoFlopMinimum, PowerLaw, PowerLawResult
from analysis.approach3 import HUBER_DELTA, LAW_KEYS, Approach3Result, ParametricLaw
from analysis.artifacts import read_fit as read_fit_json
from analysis.bootstrap import DEFAULT_LEVEL, Bootstrap, Holdout
from analysis.load import is_accuracy_like
from analysis.noise import NoiseEstimate
from scaling.errors import UserError
from scaling.fileio import atomic_write_json
from scaling.shapes import PARAMS_KINDS

APPROACHES = ("approach1", "approach2", "approach3", "vpnls")
PARAMETRIC = ("approach3", "vpnls")
Result = Approach3Result | PowerLawResult
Law = ParametricLaw | PowerLaw


@dataclass(frozen=True)
class ApproachError:
    """An approach that could not be fitted on these data, and why."""

    error: str

    def to_dict(self) -> dict:
        return {"error": self.error}


@dataclass(frozen=True)
class FitDocument:
    source: str = ""
    kind: str = ""  # "runs" | "csv" | "" (unknown)
    n_points: int = 0
    excluded: Mapping[str, int] = field(default_factory=dict)
    dropped_highest: int = 0
    convention: str = "6N"
    params_kind: str = "total"
    budgets_inferred: bool = False
    huber_delta: float = HUBER_DELTA
    metric: str = "loss"  # what was fitted: the held-out loss, or `scaling fit --metric NAME`
    approaches: Mapping[str, Result | ApproachError] = field(default_factory=dict)
    bootstrap: Mapping[str, Bootstrap] = field(default_factory=dict)
    validation: Mapping[str, Holdout] = field(default_factory=dict)  # "holdout"
    # Forecast blocks (analysis.forecast): the measured noise, runs beyond k sigma, the
    # compute-frontier law with its E table, the rolling-origin validation (plain dicts of
    # analysis.frontier / analysis.rollout records), the fitted runs' sweeps, --exclude names.
    noise: NoiseEstimate | None = None
    outliers: tuple[dict, ...] = ()
    frontier: Mapping[str, Any] = field(default_factory=dict)
    rollout: Mapping[str, Any] = field(default_factory=dict)
    sweeps: tuple[str, ...] = ()
    excluded_runs: tuple[str, ...] = ()

    # ------------------------------------------------------------------- questions

    def fitted(self) -> dict[str, Result]:
        """The approaches that were fitted, in the order of APPROACHES."""
        return {k: got for k in APPROACHES
                if isinstance(got := self.approaches.get(k), Result)}

    def errors(self) -> dict[str, str]:
        return {k: v.error for k, v in self.approaches.items() if isinstance(v, ApproachError)}

    def result(self, name: str) -> Result:
        """The fitted result of `name`, or a UserError saying why there is none."""
        if name not in APPROACHES:
            raise UserError(f"approach: expected one of {', '.join(APPROACHES)}, got {name!r}")
        got = self.approaches.get(name)
        if got is None:
            raise UserError(f"fit: no {name!r} result in the fit; run `scaling fit --approach all`")
        if isinstance(got, ApproachError):
            reason = got.error.splitlines()[0] if got.error else "unknown reason"
            raise UserError(f"fit.{name}: could not be fitted on these data ({reason})")
        return got

    def parametric(self, name: str | None = None) -> tuple[str | None, Approach3Result | None]:
        """(name, law) of the given parametric approach, else of the first fitted one."""
        for key in (name,) if name else PARAMETRIC:
            if isinstance(got := self.approaches.get(key), Approach3Result):
                return key, got
        return None, None

    def level(self, name: str | None = None) -> float:
        """The bootstrap level of `name` (else of any bootstrapped approach)."""
        boot = self.bootstrap.get(name) if name else next(iter(self.bootstrap.values()), None)
        return boot.level if boot is not None else DEFAULT_LEVEL

    def interval(self, name: str, key: str) -> list[float] | None:
        boot = self.bootstrap.get(name)
        if boot is None or key not in boot.samples:
            return None
        lo, hi = boot.interval(key)
        return [lo, hi] if math.isfinite(lo) and math.isfinite(hi) else None

    def sample_laws(self, *names: str) -> tuple[Law, ...] | None:
        """The laws of `names` over the same bootstrap resamples (one entry per sample; those
        where any law failed are dropped), or None without at least 2 shared samples."""
        boots = [b for n in names if (b := self.bootstrap.get(n)) is not None]
        if len(boots) != len(names) or len({(b.n, b.seed) for b in boots}) != 1:
            return None
        laws = []
        for name, boot in zip(names, boots, strict=True):
            keys = LAW_KEYS if name in PARAMETRIC else POWER_KEYS
            if not all(k in boot.samples for k in keys):
                return None
            laws.append((ParametricLaw if name in PARAMETRIC else PowerLaw)(
                *(boot.samples[k] for k in keys)))
        ok = np.all([np.isfinite(getattr(law, k)) for law in laws for k in _keys(law)], axis=0)
        if ok.sum() < 2:
            return None
        return tuple(type(law)(*(getattr(law, k)[ok] for k in _keys(law))) for law in laws)

    # ------------------------------------------------------------------- JSON

    def to_dict(self) -> dict:
        d: dict[str, Any] = {
            "source": self.source, "kind": self.kind, "n_points": self.n_points,
            "excluded": dict(self.excluded), "dropped_highest": self.dropped_highest,
            "convention": self.convention, "params_kind": self.params_kind,
            "budgets_inferred": self.budgets_inferred, "huber_delta": self.huber_delta,
            "metric": self.metric}
        for name, res in self.approaches.items():
            block = res.to_dict()
            boot = self.bootstrap.get(name)
            if boot is not None:
                block.update({f"{k}_ci": boot.interval(k) for k in boot.samples})
                block["bootstrap"] = boot.to_dict()
            d[name] = block
        d.update({name: v.to_dict() for name, v in self.validation.items()})
        if self.noise is not None:
            d["noise"] = self.noise.to_dict()
            d["outliers"] = [dict(o) for o in self.outliers]
        for key in ("frontier", "rollout"):
            if getattr(self, key):
                d[key] = dict(getattr(self, key))
        for key in ("sweeps", "excluded_runs"):
            if getattr(self, key):
                d[key] = list(getattr(self, key))
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "fit") -> FitDocument:
        """The document of a parsed fit.json; UserError naming the first bad key."""
        if not isinstance(d, dict):
            raise UserError(f"{where}: expected a JSON object (the fit.json written by "
                            "`scaling fit`)")
        params_kind = _typed(d, "params_kind", where, "total")
        if params_kind not in PARAMS_KINDS:
            raise UserError(f"{where}.params_kind: expected one of {', '.join(PARAMS_KINDS)}, "
                            f"got {params_kind!r}")
        excluded = d.get("excluded") or {}
        if not isinstance(excluded, dict) or not all(_is_count(v) for v in excluded.values()):
            raise UserError(f"{where}.excluded: expected counts of excluded runs by reason")
        approaches, bootstrap = {}, {}
        for name in APPROACHES:
            if name in d:
                approaches[name], boot = _read_approach(name, d[name], f"{where}.{name}")
                if boot is not None:
                    bootstrap[name] = boot
        validation = {}
        if d.get("holdout") is not None:
            validation["holdout"] = _read_holdout(_object(d["holdout"], f"{where}.holdout"),
                                                  f"{where}.holdout")
        return cls(source=_typed(d, "source", where, ""), kind=_typed(d, "kind", where, ""),
                   n_points=_count(d, "n_points", where), excluded=dict(excluded),
                   dropped_highest=_count(d, "dropped_highest", where),
                   convention=_typed(d, "convention", where, "6N"), params_kind=params_kind,
                   budgets_inferred=_typed(d, "budgets_inferred", where, False, bool),
                   huber_delta=_number(d, "huber_delta", where, _POSITIVE, default=HUBER_DELTA),
                   metric=_metric(d, where),
                   approaches=approaches, bootstrap=bootstrap, validation=validation,
                   **_read_forecast(d, where))


def _read_forecast(d: dict, where: str) -> dict:
    """The forecast blocks; the noise is checked (predictions use it), the rest kept as
    written (reports only display them)."""
    out: dict[str, Any] = {}
    if d.get("noise") is not None:
        noise = NoiseEstimate.from_dict(_object(d["noise"], f"{where}.noise"))
        if not (math.isfinite(noise.sigma) and noise.sigma >= 0):
            raise UserError(f"{where}.noise.sigma: expected a number >= 0, got {noise.sigma}")
        out["noise"] = noise
        out["outliers"] = tuple(o for o in d.get("outliers") or [] if isinstance(o, dict))
    for key in ("frontier", "rollout"):
        if d.get(key) is not None:
            out[key] = _object(d[key], f"{where}.{key}")
    for key in ("sweeps", "excluded_runs"):
        if isinstance(d.get(key), list):
            out[key] = tuple(str(x) for x in d[key])
    return out


def _keys(law: Law) -> tuple[str, ...]:
    return LAW_KEYS if isinstance(law, ParametricLaw) else POWER_KEYS


# --------------------------------------------------------------------------- files


def default_fit_path(src: str | Path, metric: str | None = None) -> Path:
    """Where `scaling fit SRC` writes: RUNS_DIR/fit.json, or <stem>.fit.json beside a CSV;
    with `--metric NAME` fit.<slug>.json (task/x/loss -> fit.task.x.loss.json), so a metric's
    fit never overwrites the main one."""
    src = Path(src)
    name = "fit.json" if metric in (None, "loss") else f"fit.{metric_slug(metric)}.json"
    return src / name if src.is_dir() else src.with_name(f"{src.stem}.{name}")


def metric_slug(metric: str) -> str:
    """A metric name as part of a file name: '/' (and anything unsafe) becomes '.'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", ".", metric).strip(".") or "metric"


def resolve_fit_path(arg: str | Path) -> Path:
    """A fit.json given directly, or the saved one of a runs directory or CSV."""
    return resolve_saved_fit(arg, default_fit_path, what="fit", fit_args="",
                             expected="a fit.json")


def resolve_saved_fit(arg: str | Path, saved_path: Callable[[Path], Path], *, what: str,
                      fit_args: str, expected: str) -> Path:
    """`--fit ARG`: a .json file given directly, or `saved_path(ARG)` of a runs directory or
    CSV, which `scaling fit ARG<fit_args>` writes; `what` and `expected` word the errors."""
    path = Path(arg)
    if path.suffix.lower() == ".json":
        if not path.is_file():
            raise UserError(f"--fit {path}: no such file")
        return path
    if path.suffix.lower() == ".csv" or path.is_dir():
        fit_path = saved_path(path)
        if not fit_path.is_file():
            raise UserError(f"--fit {path}: no saved {what} at {fit_path}; run "
                            f"`scaling fit {path}{fit_args}` first")
        return fit_path
    raise UserError(f"--fit {path}: expected {expected}, a runs directory or a CSV that exists")


def read_fit(path: str | Path) -> FitDocument:
    return FitDocument.from_dict(read_fit_json(path), where=f"{path}: fit")


def write_fit(path: str | Path, doc: FitDocument) -> Path:
    """Write atomically: a reader (or a crash) never sees half a fit.json."""
    atomic_write_json(path, doc.to_dict())
    return Path(path)


# --------------------------------------------------------------------------- checks

_ANY: tuple[Callable[[float], bool], str] = (lambda v: True, "a finite number")
_POSITIVE = (lambda v: v > 0, "a finite number > 0")
_NON_NEGATIVE = (lambda v: v >= 0, "a finite number >= 0")
_UNIT = (lambda v: 0 < v < 1, "a number in (0, 1)")
_DOMAIN = {"A": _NON_NEGATIVE, "B": _NON_NEGATIVE, "E": _NON_NEGATIVE, "alpha": _POSITIVE,
           "beta": _POSITIVE, "a": _UNIT, "b": _UNIT, "k_params": _POSITIVE,
           "k_tokens": _POSITIVE}


def _is_number(v: Any) -> TypeGuard[int | float]:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _number(d: dict, key: str, where: str, check=_ANY, *, default: float | None = None) -> float:
    v = d.get(key)
    if v is None and default is not None:
        return default
    test, expected = check
    if not (_is_number(v) and test(v)):
        raise UserError(f"{where}.{key}: expected {expected}, got {v!r}")
    return float(v)


def _count(d: dict, key: str, where: str) -> int:
    v = d.get(key, 0)
    if not _is_count(v):
        raise UserError(f"{where}.{key}: expected a count >= 0, got {v!r}")
    return int(v)


def _typed(d: dict, key: str, where: str, default: Any, kind: type = str) -> Any:
    v = default if d.get(key) is None else d[key]
    if not isinstance(v, kind):
        expected = "true or false" if kind is bool else "text"
        raise UserError(f"{where}.{key}: expected {expected}, got {v!r}")
    return v


def _metric(d: dict, where: str) -> str:
    metric = _typed(d, "metric", where, "loss")
    if not metric.strip():
        raise UserError(f"{where}.metric: expected a metric name (e.g. loss, eval/NAME/loss), "
                        "got an empty string")
    if is_accuracy_like(metric):
        raise UserError(f"{where}.metric: expected a loss-like metric, got {metric!r} "
                        "(accuracy saturates; it is forecast by `scaling predict --task`)")
    return metric


def _object(v: Any, where: str) -> dict:
    if not isinstance(v, dict):
        raise UserError(f"{where}: expected an object, got {type(v).__name__}")
    return v


def _read_approach(name: str, block: Any, where: str) -> tuple[Result | ApproachError,
                                                              Bootstrap | None]:
    block = _object(block, where)
    if "error" in block:
        return ApproachError(str(block["error"])), None
    extra_keys = {"n_points", "minima", "n_unbracketed", "bootstrap"}
    if name in PARAMETRIC:
        core = {k: _number(block, k, where, _DOMAIN[k]) for k in LAW_KEYS}
        extra_keys |= {"objective", "a", "b", "G", "method", "n_starts"}
        result: Result = Approach3Result(
            **core, objective=block["objective"] if _is_number(block.get("objective"))
            else math.nan, n_points=_count(block, "n_points", where),
            method=_typed(block, "method", where, "lbfgs"), n_starts=_count(block, "n_starts", where),
            extra=_extras(block, extra_keys))
    else:
        core = {k: _number(block, k, where, _DOMAIN[k]) for k in POWER_KEYS}
        minima = block.get("minima") or []
        if not isinstance(minima, list):
            raise UserError(f"{where}.minima: expected a list")
        result = PowerLawResult(
            **core, n_points=_count(block, "n_points", where), approach=name,
            minima=tuple(_read_minimum(_object(m, f"{where}.minima[{i}]"), f"{where}.minima[{i}]")
                         for i, m in enumerate(minima)),
            extra=_extras(block, extra_keys))
    boot = block.get("bootstrap")
    return result, None if boot is None else _read_bootstrap(_object(boot, f"{where}.bootstrap"),
                                                             f"{where}.bootstrap")


def _extras(block: dict, known: set[str]) -> dict:
    return {k: v for k, v in block.items() if k not in known and not k.endswith("_ci")
            and k not in LAW_KEYS and k not in POWER_KEYS}


def _read_minimum(m: dict, where: str) -> IsoFlopMinimum:
    coeffs = m.get("coeffs")
    if coeffs is not None and not (isinstance(coeffs, list) and len(coeffs) == 3
                                   and all(_is_number(c) for c in coeffs)):
        raise UserError(f"{where}.coeffs: expected 3 finite numbers, got {coeffs!r}")
    se = m.get("log_params_se")
    return IsoFlopMinimum(
        budget=_number(m, "budget", where, _POSITIVE),
        params_opt=_number(m, "params_opt", where, _POSITIVE),
        tokens_opt=_number(m, "tokens_opt", where, _POSITIVE),
        loss_opt=_number(m, "loss_opt", where, _POSITIVE),
        bracketed=_typed(m, "bracketed", where, True, bool),
        curvature_positive=_typed(m, "curvature_positive", where, True, bool),
        log_params_se=float(se) if _is_number(se) else math.nan,
        n_points=_count(m, "n_points", where),
        coeffs=None if coeffs is None else (float(coeffs[0]), float(coeffs[1]), float(coeffs[2])))


def _read_bootstrap(boot: dict, where: str) -> Bootstrap:
    samples = _object(boot.get("samples"), f"{where}.samples")
    arrays = {}
    for key, values in samples.items():
        # null marks a resample whose fit failed (written from NaN); anything else is refused
        if not isinstance(values, list) or not all(
                v is None or (isinstance(v, int | float) and not isinstance(v, bool))
                for v in values):
            raise UserError(f"{where}.samples.{key}: expected a list of numbers")
        arrays[key] = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
    lengths = {len(v) for v in arrays.values()}
    if len(lengths) > 1:
        raise UserError(f"{where}.samples: expected equal numbers of samples, got {sorted(lengths)}")
    n = boot.get("n", lengths.pop() if lengths else 0)
    if not _is_count(n):
        raise UserError(f"{where}.n: expected a count, got {n!r}")
    seed = boot.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise UserError(f"{where}.seed: expected an integer, got {seed!r}")
    return Bootstrap(level=_number(boot, "level", where, _UNIT), n=n, seed=seed, samples=arrays)


def _read_holdout(h: dict, where: str) -> Holdout:
    observed = _object(h.get("observed"), f"{where}.observed")
    predicted = {}
    for name in ("approach2", "approach3"):
        if h.get(name) is not None:
            block = _object(h[name], f"{where}.{name}")
            predicted[name] = {k: _number(block, k, f"{where}.{name}") for k in block}
    notes = h.get("notes") or []
    if not isinstance(notes, list):
        raise UserError(f"{where}.notes: expected a list of text")
    return Holdout(budget=_number(h, "budget", where, _POSITIVE),
                   n_train=_count(h, "n_train", where), n_heldout=_count(h, "n_heldout", where),
                   observed_params_opt=_number(observed, "params_opt", f"{where}.observed",
                                               _POSITIVE),
                   observed_loss_opt=_number(observed, "loss_opt", f"{where}.observed"),
                   observed_bracketed=_typed(observed, "bracketed", f"{where}.observed", True, bool),
                   predicted=predicted, notes=tuple(map(str, notes)))
