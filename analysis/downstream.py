"""Benchmark accuracy from N and D in two steps (OLMo's ladder, Bhagia et al. 2024; Llama 3).

Step 1, task loss: L_task(N, D) = E + A / N^alpha + B / D^beta, Approach 3 fitted to the
runs' `task/NAME/loss` (what `scaling fit --metric task/NAME/loss --approach 3` fits, with
the same bootstrap, noise estimate and checks).

Step 2, accuracy from task loss, with chance as its floor:

    accuracy(L) = chance + (ceiling - chance) * sigmoid(-k (L - L0)),   k > 0,

fitted by least squares on the runs' (task loss, accuracy) pairs. Choices, and why:
- the floor is not fitted but fixed at `task/NAME/chance` (the mean of 1 / choices): a
  model that knows nothing scores chance on a multiple-choice task by construction, and a
  fitted floor is pulled below chance by the noise of the small runs, where it means nothing;
- the ceiling is fitted, in (chance, 1]: ambiguous or mislabelled items keep even a perfect
  model below 1, and when the runs never approach saturation the bootstrap shows how little
  the data say about it (its interval spans up to 1) instead of a fixed 1 hiding it;
- least squares on accuracy itself (not its log-odds): an accuracy near chance or near the
  ceiling has an unbounded log-odds, and the scatter of an accuracy measured on a fixed set
  of items is roughly even across the middle of the curve. OLMo's ladder fits its sigmoid
  the same way (four free parameters there; the floor is the one we pin).

Uncertainty. One set of bootstrap resamples of the runs (`analysis.bootstrap.resample_indices`,
stratified by budget) serves both steps: resample s refits the step-1 law (the Approach 3
bootstrap of `analysis.fits.fit_points`) and the step-2 sigmoid on the same runs. A forecast
maps law_s(N, D) through sigmoid_s, so step 1's uncertainty propagates into step 2. The
accuracy interval is a confidence interval of the mean accuracy of runs at (N, D); the task
loss also gets the prediction interval of one run (`analysis.predict.predict_loss`).

The document (`TaskFit`, written by `scaling fit SRC --task NAME` to
<RUNS_DIR>/fit.downstream.NAME.json or <stem>.fit.downstream.NAME.json beside a CSV) holds
the step-1 fit.json object and the step-2 law with its paired samples; docs/architecture.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.approach3 import Approach3Result, ParametricLaw
from analysis.artifacts import read_fit as read_json
from analysis.bootstrap import (
    DEFAULT_LEVEL,
    Bootstrap,
    check_level,
    percentile_interval,
    resample_indices,
)
from analysis.fitdoc import FitDocument, metric_slug, resolve_saved_fit
from analysis.fits import fit_points, with_params_kind
from analysis.forecast import forecast_blocks
from analysis.load import LoadInfo, load_points
from analysis.noise import NoiseEstimate, exclude_runs
from analysis.predict import LawSamples, predict_loss
from scaling.errors import UserError
from scaling.fileio import atomic_write_json

DEFAULT_BOOTSTRAP = 200  # resamples when `scaling fit --task` is not given --bootstrap
MIN_POINTS = 6  # step 1 fits 5 parameters
SIGMOID_KEYS = ("ceiling", "k", "L0")
LAW_TEXT = "accuracy = chance + (ceiling - chance) * sigmoid(-k (task_loss - L0))"
KIND = "task_fit"


def task_metrics(task: str) -> tuple[str, str, str]:
    """The (loss, accuracy, chance) metric names a run records for task `task`."""
    return f"task/{task}/loss", f"task/{task}/accuracy", f"task/{task}/chance"


# ----------------------------------------------------------------------------- step 2


@dataclass(frozen=True)
class SigmoidLaw:
    """accuracy(L) = chance + (ceiling - chance) * sigmoid(-k (L - L0)); each parameter a
    float or an array with one entry per bootstrap sample (formulas broadcast)."""

    chance: Any
    ceiling: Any
    k: Any
    L0: Any

    def predict(self, task_loss: Any) -> np.ndarray:
        z = -np.asarray(self.k) * (np.asarray(task_loss, dtype=np.float64) - self.L0)
        with np.errstate(over="ignore"):
            return self.chance + (self.ceiling - self.chance) / (1.0 + np.exp(-z))


def _sigmoid_residuals(x: np.ndarray, task_loss, accuracy, chance, sqrt_w) -> np.ndarray:
    ceiling, k, L0 = x
    return sqrt_w * (SigmoidLaw(chance, ceiling, k, L0).predict(task_loss) - accuracy)


def fit_sigmoid(task_loss: Any, accuracy: Any, chance: float, *,
                weights: Any = None, start: tuple[float, float, float] | None = None
                ) -> tuple[float, float, float, float]:
    """(ceiling, k, L0, weighted residual sum of squares) of step 2 by bounded least squares
    (scipy's trust-region reflective): from `start`, or from a small grid of starts (L0 at
    the quartiles of the task losses, k at 1, 4 and 16 over their spread) keeping the best."""
    from scipy.optimize import least_squares

    loss = np.asarray(task_loss, dtype=np.float64)
    acc = np.asarray(accuracy, dtype=np.float64)
    sqrt_w = np.sqrt(np.ones_like(loss) if weights is None
                     else np.asarray(weights, dtype=np.float64))
    spread = float(np.std(loss)) or 1.0
    lower = [min(chance + 1e-6, 1.0 - 1e-9), 1e-6 / spread, -np.inf]
    upper = [1.0, 1e4 / spread, np.inf]
    if start is None:
        top = float(np.clip(acc.max(), lower[0], 1.0))
        starts = [(top, f / spread, float(q)) for q in np.quantile(loss, (0.25, 0.5, 0.75))
                  for f in (1.0, 4.0, 16.0)] + [(1.0, 4.0 / spread, float(np.median(loss)))]
    else:
        starts = [start]
    best = None
    for s in starts:
        x0 = np.clip(np.asarray(s, dtype=np.float64), lower, upper)
        res = least_squares(_sigmoid_residuals, x0, bounds=(lower, upper), method="trf",
                            args=(loss, acc, chance, sqrt_w), x_scale=[0.1, 1 / spread, spread],
                            xtol=1e-10, ftol=1e-12, gtol=1e-12)
        rss = float(np.sum(res.fun**2))
        if best is None or rss < best[3]:
            best = (float(res.x[0]), float(res.x[1]), float(res.x[2]), rss)
    assert best is not None
    return best


# ----------------------------------------------------------------------------- the document


@dataclass(frozen=True)
class TaskFit:
    """Both steps of one task's forecast: the step-1 fit document (Approach 3 on the task's
    loss) and the step-2 sigmoid with its bootstrap samples, paired with step 1's."""

    task: str
    step1: FitDocument
    step2: SigmoidLaw  # floats: the fit on every run
    n_points: int
    rss: float
    task_loss_range: tuple[float, float]
    accuracy_range: tuple[float, float]
    step2_bootstrap: Bootstrap | None = None

    @property
    def law(self) -> Approach3Result:
        _, law = self.step1.parametric("approach3")
        if law is None:
            raise UserError(f"task fit {self.task!r}: step 1 has no fitted approach3 law")
        return law

    def paired_samples(self) -> tuple[ParametricLaw, SigmoidLaw] | None:
        """Step-1 and step-2 laws per bootstrap resample (arrays, one entry per resample;
        NaN where a refit failed), or None without resamples."""
        boot1 = self.step1.bootstrap.get("approach3")
        boot2 = self.step2_bootstrap
        if boot1 is None or boot2 is None:
            return None
        law = ParametricLaw(*(np.asarray(boot1.samples[k], dtype=np.float64)
                              for k in ("A", "B", "E", "alpha", "beta")))
        sig = SigmoidLaw(self.step2.chance, *(np.asarray(boot2.samples[k], dtype=np.float64)
                                              for k in SIGMOID_KEYS))
        return law, sig

    def to_dict(self) -> dict:
        loss_key, acc_key, chance_key = task_metrics(self.task)
        step2: dict[str, Any] = {"law": LAW_TEXT, "chance": self.step2.chance,
                                 "ceiling": self.step2.ceiling, "k": self.step2.k,
                                 "L0": self.step2.L0, "n_points": self.n_points,
                                 "rss": self.rss}
        if self.step2_bootstrap is not None:
            step2.update({f"{k}_ci": self.step2_bootstrap.interval(k) for k in SIGMOID_KEYS})
            step2["bootstrap"] = self.step2_bootstrap.to_dict()
        return {"kind": KIND, "task": self.task, "loss_metric": loss_key,
                "accuracy_metric": acc_key, "chance_metric": chance_key,
                "source": self.step1.source, "task_loss_range": list(self.task_loss_range),
                "accuracy_range": list(self.accuracy_range), "step1": self.step1.to_dict(),
                "step2": step2}

    @classmethod
    def from_dict(cls, d: Any, where: str = "task fit") -> TaskFit:
        """The document of a parsed task fit; UserError naming the first bad key."""
        if not isinstance(d, dict) or d.get("kind") != KIND:
            raise UserError(f"{where}: expected the JSON object `scaling fit SRC --task NAME` "
                            f"writes (kind {KIND!r})")
        task = d.get("task")
        if not isinstance(task, str) or not task:
            raise UserError(f"{where}.task: expected a task name, got {task!r}")
        step1 = FitDocument.from_dict(d.get("step1"), f"{where}.step1")
        if step1.metric != task_metrics(task)[0]:
            raise UserError(f"{where}.step1.metric: expected {task_metrics(task)[0]!r}, got "
                            f"{step1.metric!r}")
        s2 = d.get("step2")
        if not isinstance(s2, dict):
            raise UserError(f"{where}.step2: expected an object")
        chance = _num(s2, "chance", f"{where}.step2", lambda v: 0 < v < 1, "a number in (0, 1)")
        law = SigmoidLaw(
            chance, _num(s2, "ceiling", f"{where}.step2", lambda v: chance < v <= 1,
                         f"a number in ({chance:.4g}, 1]"),
            _num(s2, "k", f"{where}.step2", lambda v: v > 0, "a number > 0"),
            _num(s2, "L0", f"{where}.step2", lambda v: True, "a finite number"))
        boot = None
        if s2.get("bootstrap") is not None:
            boot = _read_samples(s2["bootstrap"], f"{where}.step2.bootstrap")
            boot1 = step1.bootstrap.get("approach3")
            if boot1 is None or (boot1.n, boot1.seed) != (boot.n, boot.seed):
                raise UserError(f"{where}.step2.bootstrap: expected the resamples of "
                                "step1.approach3.bootstrap (same n and seed)")
        return cls(task=task, step1=step1, step2=law,
                   n_points=int(_num(s2, "n_points", f"{where}.step2", lambda v: v >= 0,
                                     "a count")),
                   rss=_num(s2, "rss", f"{where}.step2", lambda v: v >= 0, "a number >= 0"),
                   task_loss_range=_range(d, "task_loss_range", where),
                   accuracy_range=_range(d, "accuracy_range", where), step2_bootstrap=boot)

    def summary(self) -> list[str]:
        """Human lines for `scaling fit --task`."""
        law = self.law
        boot = self.step2_bootstrap

        def show(name: str, value: float, ci: list[float] | None) -> str:
            return f"{name} {value:.4g}" + (f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "")

        step1 = ", ".join(show(k, getattr(law, k), self.step1.interval("approach3", k))
                          for k in ("E", "A", "alpha", "B", "beta"))
        step2 = ", ".join(show(k, getattr(self.step2, k), boot.interval(k) if boot else None)
                          for k in SIGMOID_KEYS)
        lo, hi = self.task_loss_range
        lines = [f"task {self.task}: {self.n_points} runs from {self.step1.source}",
                 f"step 1  task loss = E + A/N^alpha + B/D^beta: {step1}",
                 f"step 2  {LAW_TEXT}: chance {self.step2.chance:.4g} (fixed), {step2}",
                 f"fitted on task losses {lo:.4g}..{hi:.4g}, accuracies "
                 f"{self.accuracy_range[0]:.3g}..{self.accuracy_range[1]:.3g}"]
        if boot is not None:
            lines.append(f"[lo, hi]: {boot.level:.0%} bootstrap percentile intervals over "
                         f"{boot.n} resamples of runs, shared by both steps")
        return lines


def _num(d: dict, key: str, where: str, test, expected: str) -> float:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
            or not test(v):
        raise UserError(f"{where}.{key}: expected {expected}, got {v!r}")
    return float(v)


def _range(d: dict, key: str, where: str) -> tuple[float, float]:
    v = d.get(key)
    if not (isinstance(v, list) and len(v) == 2 and all(
            isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
            for x in v) and v[0] <= v[1]):
        raise UserError(f"{where}.{key}: expected [lo, hi], got {v!r}")
    return float(v[0]), float(v[1])


def _read_samples(boot: Any, where: str) -> Bootstrap:
    if not isinstance(boot, dict) or not isinstance(boot.get("samples"), dict):
        raise UserError(f"{where}: expected an object with samples")
    samples = {}
    for key in SIGMOID_KEYS:
        values = boot["samples"].get(key)
        if not isinstance(values, list) or not all(
                v is None or (isinstance(v, int | float) and not isinstance(v, bool))
                for v in values):
            raise UserError(f"{where}.samples.{key}: expected a list of numbers")
        samples[key] = np.array([math.nan if v is None else v for v in values], np.float64)
    n, seed = boot.get("n"), boot.get("seed")
    if not (isinstance(n, int) and not isinstance(n, bool)
            and all(len(v) == n for v in samples.values())):
        raise UserError(f"{where}.n: expected the number of samples, got {n!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise UserError(f"{where}.seed: expected an integer, got {seed!r}")
    level = _num(boot, "level", where, lambda v: 0 < v < 1, "a number in (0, 1)")
    return Bootstrap(level=level, n=n, seed=seed, samples=samples)


# ----------------------------------------------------------------------------- fitting


def task_points(points: pd.DataFrame, task: str, source: str) -> tuple[pd.DataFrame, float]:
    """The points (their `loss` already the task's loss) that have an accuracy, and the
    task's chance level; UserError naming a missing or inconsistent column."""
    _, acc_key, chance_key = task_metrics(task)
    for key in (acc_key, chance_key):
        if key not in points.columns:
            raise UserError(f"--task {task}: {source} has no {key!r} (a run records it for "
                            f"each of its data.tasks; a CSV needs the column)")
    acc = pd.to_numeric(points[acc_key], errors="coerce").to_numpy(np.float64)
    chance = pd.to_numeric(points[chance_key], errors="coerce").to_numpy(np.float64)
    keep = np.isfinite(acc) & np.isfinite(chance)
    if not keep.any():
        raise UserError(f"--task {task}: no run in {source} has {acc_key!r} and {chance_key!r}")
    points = points[keep].reset_index(drop=True)
    acc, chance = acc[keep], chance[keep]
    if ((acc < 0) | (acc > 1)).any():
        raise UserError(f"--task {task}: {acc_key} must lie in [0, 1], got "
                        f"{acc[(acc < 0) | (acc > 1)][0]!r}")
    if not ((chance > 0) & (chance < 1)).all() or np.ptp(chance) > 1e-9:
        raise UserError(f"--task {task}: {chance_key} must be one number in (0, 1) for every "
                        f"run (the same task file), got {np.min(chance):.6g}..{np.max(chance):.6g}")
    points = points.assign(accuracy=acc)
    return points, float(chance[0])


def fit_task_points(points: pd.DataFrame, info: Any, task: str, *,
                    n_bootstrap: int = DEFAULT_BOOTSTRAP, level: float = DEFAULT_LEVEL,
                    seed: int = 0, params_kind: str = "total") -> TaskFit:
    """Both steps on loaded points whose `loss` is the task's loss (`load_points(...,
    metric="task/NAME/loss")`), with `n_bootstrap` resamples shared by the two steps."""
    source = str((info.to_dict() if isinstance(info, LoadInfo) else dict(info or {}))
                 .get("source", ""))
    points, chance = task_points(points, task, source)
    if len(points) < MIN_POINTS:
        raise UserError(f"--task {task}: expected at least {MIN_POINTS} runs with its loss and "
                        f"accuracy, got {len(points)}")
    if n_bootstrap and n_bootstrap < 2:
        raise UserError(f"--bootstrap: expected at least 2 resamples, got {n_bootstrap}")
    level = check_level(level)
    loss_key = task_metrics(task)[0]
    step1 = fit_points(points, info, approaches="3", n_bootstrap=n_bootstrap, level=level,
                       seed=seed, params_kind=params_kind, metric=loss_key)
    blocks = forecast_blocks(points, step1.approaches, level=level, seed=seed)
    if "noise" in blocks:
        step1 = replace(step1, noise=NoiseEstimate.from_dict(blocks["noise"]),
                        outliers=tuple(blocks["outliers"]))
    loss = points["loss"].to_numpy(np.float64)
    acc = points["accuracy"].to_numpy(np.float64)
    ceiling, k, L0, rss = fit_sigmoid(loss, acc, chance)
    boot = None
    if n_bootstrap:
        # the very resamples step 1 was bootstrapped on (same points, n and seed)
        idx = resample_indices(with_params_kind(points, params_kind), n_bootstrap, seed)
        samples = {key: np.full(n_bootstrap, np.nan) for key in SIGMOID_KEYS}
        for s, row in enumerate(idx):
            w = np.bincount(row, minlength=len(points)).astype(np.float64)
            if len(np.unique(loss[w > 0])) < len(SIGMOID_KEYS):
                continue  # too few distinct runs drawn to pin three parameters
            fitted = fit_sigmoid(loss, acc, chance, weights=w, start=(ceiling, k, L0))
            for key, value in zip(SIGMOID_KEYS, fitted[:3], strict=True):
                samples[key][s] = value
        boot = Bootstrap(level=level, n=n_bootstrap, seed=seed, samples=samples)
    return TaskFit(task=task, step1=step1, step2=SigmoidLaw(chance, ceiling, k, L0),
                   n_points=len(points), rss=rss,
                   task_loss_range=(float(loss.min()), float(loss.max())),
                   accuracy_range=(float(acc.min()), float(acc.max())), step2_bootstrap=boot)


def fit_task_source(src: str | Path, task: str, *, convention: str | None = None,
                    exclude: tuple[str, ...] | list[str] = (), **options: Any) -> TaskFit:
    """Load a runs directory or CSV with the task's loss as `loss` and fit both steps;
    `options` as for fit_task_points."""
    points, info = load_points(src, convention=convention, metric=task_metrics(task)[0])
    if exclude:
        points = exclude_runs(points, exclude)
    return fit_task_points(points, info, task, **options)


# ----------------------------------------------------------------------------- forecasts


def predict_task(fit: TaskFit, n_params: float, n_tokens: float, *,
                 level: float = 0.8, seed: int = 0) -> dict:
    """`scaling predict --task`'s answer at (N, D): the accuracy and its CI through both
    steps, the task loss with its CI and PI (step 1 alone, as `scaling predict`)."""
    level = check_level(level)
    n, d = float(n_params), float(n_tokens)
    law = fit.law
    noise = fit.step1.noise
    boot1 = fit.step1.bootstrap.get("approach3")
    loss_pred = predict_loss(law, n, d, sigma=noise.sigma if noise else 0.0,
                             samples=LawSamples.from_samples(dict(boot1.samples)) if boot1 else None,
                             level=level, dof=noise.dof if noise else 0, seed=seed,
                             noise_source=noise.source if noise else "none")
    accuracy = float(fit.step2.predict(loss_pred.loss))
    accuracy_ci, n_boot = None, 0
    paired = fit.paired_samples()
    if paired is not None:
        law_S, sig_S = paired
        with np.errstate(over="ignore", invalid="ignore"):
            acc_S = sig_S.predict(law_S.predict(n, d))
        acc_S = acc_S[np.isfinite(acc_S)]
        if len(acc_S) >= 2:
            accuracy_ci, n_boot = percentile_interval(acc_S, level), len(acc_S)
    lo, hi = fit.task_loss_range
    return {"task": fit.task, "accuracy": accuracy, "accuracy_ci": accuracy_ci,
            "task_loss": loss_pred.loss, "task_loss_ci": loss_pred.loss_ci,
            "task_loss_pi": loss_pred.loss_pi if noise else None,
            "chance": fit.step2.chance, "ceiling": fit.step2.ceiling, "k": fit.step2.k,
            "L0": fit.step2.L0, "level": level, "n_params": n, "n_tokens": d,
            "flops": 6.0 * n * d, "n_bootstrap": n_boot, "task_loss_range": [lo, hi],
            "extrapolated": not lo <= loss_pred.loss <= hi,
            "sigma": noise.sigma if noise else None,
            "noise_source": noise.source if noise else None}


# ----------------------------------------------------------------------------- files


def default_task_fit_path(src: str | Path, task: str) -> Path:
    """Where `scaling fit SRC --task NAME` writes: RUNS_DIR/fit.downstream.NAME.json, or
    <stem>.fit.downstream.NAME.json beside a CSV."""
    src = Path(src)
    name = f"fit.downstream.{metric_slug(task)}.json"
    return src / name if src.is_dir() else src.with_name(f"{src.stem}.{name}")


def resolve_task_fit_path(arg: str | Path, task: str) -> Path:
    """A task fit given directly (.json), or the saved one of a runs directory or CSV."""
    return resolve_saved_fit(arg, lambda src: default_task_fit_path(src, task),
                             what=f"fit of task {task!r}", fit_args=f" --task {task}",
                             expected="a task fit .json")


def read_task_fit(path: str | Path, task: str | None = None) -> TaskFit:
    fit = TaskFit.from_dict(read_json(path), where=f"{path}: task fit")
    if task is not None and fit.task != task:
        raise UserError(f"--task {task}: {path} is the fit of task {fit.task!r}")
    return fit


def write_task_fit(path: str | Path, fit: TaskFit) -> Path:
    """Written atomically, as fit.json is."""
    atomic_write_json(path, fit.to_dict())
    return Path(path)


__all__ = ["DEFAULT_BOOTSTRAP", "LAW_TEXT", "SigmoidLaw", "TaskFit", "default_task_fit_path",
           "fit_sigmoid", "fit_task_points", "fit_task_source", "predict_task",
           "read_task_fit", "resolve_task_fit_path", "task_metrics", "task_points",
           "write_task_fit"]
