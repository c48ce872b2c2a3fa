"""Learning-rate (and batch) laws from small tuning sweeps: per-cell optima, then
lr*(N, D, B) = c N^a D^b B^g and B*(C) = k C^q.

A cell is one (model size N, tokens D) trained at several learning rates, at one batch size
B (tokens per step) or, when batch sizes are tuned too, at several (a sub-cell per batch).
Per (sub-)cell, the loss against log lr is fitted with a parabola (float64, log space); the
optimum is trusted only when it is bracketed: the curvature is positive and the lowest
measured loss is not at either end of the grid (an optimum at the edge may lie beyond it,
and the message says which way to extend). Across trusted cells, log lr* = log c + a log N
+ b log D + g log B is fitted by least squares; a regressor enters only when the points
outnumber the coefficients and it varies beyond what the others explain (by more than
`MIN_SPREAD` in log units: cells all at 20 tokens per parameter leave D to N, a tune without
batch sizes leaves B out), so with one cell the law is a constant.

With batch sizes, each cell's best loss per batch (its lr parabola's minimum) is fitted by a
parabola in log B with the same bracket check, giving B*, and across the cells whose B* is
bracketed, log B* = log k + q log C (C: the cell's FLOPs under the tuning spec's
convention; q enters as the exponents above do). The planner uses B*(C) at each budget, then
lr*(N, D, B) at the chosen B (DeepSeek's B(C) form, so every run of a budget shares a batch).

Intervals come from a residual bootstrap: each sub-cell's losses are redrawn as its fitted
parabola plus its own residuals resampled, every vertex (lr, then batch) refitted and both
laws refitted, `n_boot` times with an explicit seed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from scaling.errors import UserError
from scaling.fileio import read_json_object

# A [tune] block's runs form the sweep `<name>-tune`; fits of a runs root leave them out.
TUNE_SUFFIX = "-tune"
LAW_FORMAT = 2  # 2 added the batch terms; a format-1 file reads as an lr-only law
MIN_SPREAD = 0.1  # log units (~10%): less variation than this does not identify an exponent


@dataclass(frozen=True)
class CellOptimum:
    n_params: float
    n_tokens: float
    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    lr_opt: float | None  # None unless bracketed
    bracketed: bool
    message: str  # why not trusted ("" when bracketed)
    batch_tokens: float | None = None  # tokens per optimiser step of the cell's runs
    loss_opt: float | None = None  # the parabola's value at lr_opt
    flops: float | None = None  # the cell's FLOPs: sub-cells of one batch-tuned cell share it
    coeffs: tuple[float, ...] | None = None  # loss = polyval(coeffs, ln lr) (figures)


@dataclass(frozen=True)
class BatchOptimum:
    """One cell's batch optimum: each batch's best loss over lr, with the bracket check."""

    n_params: float
    flops: float
    batch_tokens: tuple[float, ...]
    losses: tuple[float, ...]  # nan where that batch's lr optimum was not bracketed
    batch_opt: float | None  # tokens per step; None unless bracketed
    bracketed: bool
    message: str
    coeffs: tuple[float, ...] | None = None  # loss = polyval(coeffs, ln B) (figures)


@dataclass(frozen=True)
class BatchLaw:
    """B*(C) = coef * C**exp tokens per optimiser step, with bootstrap intervals."""

    coef: float
    exp: float
    coef_interval: tuple[float, float]
    exp_interval: tuple[float, float]
    cells: tuple[BatchOptimum, ...]
    samples: tuple[tuple[float, ...], ...] = ()  # bootstrap (ln coef, exp), for bands

    def batch_tokens(self, flops: float) -> float:
        return float(self.coef * flops ** self.exp)


def power_law_lr(name: str, law: tuple[float, float, float, float], n_params: float,
                 n_tokens: float, batch_tokens: float | None = None) -> float:
    """lr = coef N^n_exp D^d_exp [B^b_exp] for law = (coef, n_exp, d_exp, b_exp); a law
    with a batch exponent needs batch_tokens."""
    coef, n_exp, d_exp, b_exp = law
    raw = coef * n_params ** n_exp * n_tokens ** d_exp
    if b_exp:
        if batch_tokens is None:
            raise ValueError(f"{name}: this lr law depends on the batch; pass batch_tokens")
        raw *= batch_tokens ** b_exp
    return float(raw)


@dataclass(frozen=True)
class LrLaw:
    """lr*(N, D, B) = coef * N**n_exp * D**d_exp * B**b_exp (B: tokens per step; b_exp is 0
    unless batch sizes were tuned), with bootstrap intervals (at `level`), and B*(C) when
    a batch optimum was bracketed."""

    name: str
    coef: float
    n_exp: float
    d_exp: float
    coef_interval: tuple[float, float]
    n_exp_interval: tuple[float, float]
    d_exp_interval: tuple[float, float]
    level: float
    n_boot: int
    cells: tuple[CellOptimum, ...]
    base_recipe: str  # the hparams recipe whose batch / warmup rules the law keeps
    b_exp: float = 0.0
    b_exp_interval: tuple[float, float] = (0.0, 0.0)
    batch: BatchLaw | None = None
    samples: tuple[tuple[float, ...], ...] = ()
    """bootstrap (ln coef, n_exp, d_exp, b_exp), for bands (empty in format-1 files)."""

    def lr(self, n_params: float, n_tokens: float, batch_tokens: float | None = None) -> float:
        return power_law_lr(self.name, (self.coef, self.n_exp, self.d_exp, self.b_exp),
                            n_params, n_tokens, batch_tokens)

    def to_dict(self) -> dict:
        return {"format": LAW_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> LrLaw:
        """The law of `to_dict` (format 1 or 2); KeyError/TypeError/ValueError when the
        dict is not one."""
        if d.get("format") not in (1, LAW_FORMAT):
            raise ValueError(f"format: expected 1 or {LAW_FORMAT}, got {d.get('format')!r}")
        d = {k: v for k, v in d.items() if k != "format"}
        cells = tuple(_record(CellOptimum, c, ("lrs", "losses")) for c in d.pop("cells"))
        batch = d.pop("batch", None)
        if batch is not None:
            batch_cells = tuple(_record(BatchOptimum, c, ("batch_tokens", "losses"))
                                for c in batch.pop("cells"))
            batch = _record(BatchLaw, {**batch, "cells": batch_cells},
                            ("coef_interval", "exp_interval"))
        law = _record(cls, {**d, "cells": cells, "batch": batch},
                      ("coef_interval", "n_exp_interval", "d_exp_interval", "b_exp_interval"))
        for key in ("coef", "n_exp", "d_exp", "b_exp"):
            if not isinstance(getattr(law, key), int | float) or not math.isfinite(getattr(law, key)):
                raise ValueError(f"{key}: expected a finite number, got {getattr(law, key)!r}")
        return law


def _record(cls, d: dict, tuples: tuple[str, ...]):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise KeyError(unknown[0])
    out = {k: tuple(v) if k in tuples + ("coeffs",) and v is not None else v
           for k, v in d.items()}
    if "samples" in out:
        out["samples"] = tuple(tuple(float(x) for x in row) for row in out["samples"])
    return cls(**out)


def read_law(path, where: str = "lr law"):
    """The law saved at `path` (sweeps.tune writes it); one-line UserError when it is not."""
    try:
        return LrLaw.from_dict(read_json_object(path))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{where}: {path}: not an lr law saved by a [tune] block "
                        f"({type(e).__name__}: {e})") from None


def _vertex(x: np.ndarray, y: np.ndarray) -> tuple[float | None, np.ndarray]:
    """(vertex or None when not convex, the parabola's coefficients)."""
    coeffs = np.polyfit(x, y, 2)
    return (-coeffs[1] / (2 * coeffs[0]) if coeffs[0] > 0 else None), coeffs


def _bracketed_vertex(x: np.ndarray, y: np.ndarray, *,
                      diverged_above: bool = False) -> tuple[float | None, str]:
    """The parabola's vertex in x when the grid brackets it, else None and which way the
    grid is short: "down", "up" or "convex" (no convex minimum inside the grid)."""
    best = int(np.argmin(y))
    if best == 0:
        return None, "down"
    if best == len(y) - 1 and not diverged_above:
        return None, "up"
    vertex, _ = _vertex(x, y)
    if vertex is None or not x[0] <= vertex <= x[-1]:
        return None, "convex"
    return vertex, ""


def fit_cell(n_params: float, n_tokens: float, lrs, losses, *, batch_tokens: float | None = None,
             flops: float | None = None) -> CellOptimum:
    """One cell's optimum, with the bracket check; finite losses only (a diverged lr is
    dropped, and counts as the high side's bracket)."""
    lrs = np.asarray(lrs, dtype=np.float64)
    losses = np.asarray(losses, dtype=np.float64)
    order = np.argsort(lrs)
    lrs, losses = lrs[order], losses[order]
    finite = np.isfinite(losses)
    where = f"cell N={n_params:.3g}, D={n_tokens:.3g}"
    if batch_tokens is not None:
        where += f", batch {batch_tokens:.4g} tokens"
    keep: dict[str, Any] = dict(n_params=n_params, n_tokens=n_tokens, lrs=tuple(float(v) for v in lrs),
                losses=tuple(float(v) for v in losses), batch_tokens=batch_tokens, flops=flops)
    if finite.sum() < 3:
        return CellOptimum(**keep, lr_opt=None, bracketed=False,
                           message=f"{where}: {int(finite.sum())} finite losses (need >= 3)")
    x, y = np.log(lrs[finite]), losses[finite]
    coeffs = tuple(float(v) for v in _vertex(x, y)[1])
    keep["coeffs"] = coeffs
    vertex, short = _bracketed_vertex(x, y, diverged_above=not finite[-1])
    if vertex is None:
        message = {"down": f"lowest loss at the smallest lr {lrs[finite][0]:.3g}; extend the "
                           "multipliers downwards",
                   "up": f"lowest loss at the largest lr {lrs[finite][-1]:.3g}; extend the "
                         "multipliers upwards",
                   "convex": "loss against log lr is not convex around its minimum; use a "
                             "finer grid"}[short]
        return CellOptimum(**keep, lr_opt=None, bracketed=False, message=f"{where}: {message}")
    return CellOptimum(**keep, lr_opt=float(math.exp(vertex)), bracketed=True, message="",
                       loss_opt=float(np.polyval(coeffs, vertex)))


def fit_batch_cell(cells: list[CellOptimum]) -> BatchOptimum:
    """The batch optimum of one cell from its sub-cells (one per batch size, each with its
    lr optimum): a parabola in log B through each batch's best loss, with the bracket
    check; a batch whose lr optimum is not bracketed is left out."""
    cells = sorted(cells, key=lambda c: float(c.batch_tokens or 0.0))
    n_params, flops = cells[0].n_params, float(cells[0].flops or 0.0)
    batches = tuple(float(c.batch_tokens or 0.0) for c in cells)
    losses = tuple(float(c.loss_opt) if c.bracketed and c.loss_opt is not None else math.nan
                   for c in cells)
    where = f"cell N={n_params:.3g}, C={flops:.3g}"

    coeffs = None

    def refuse(message: str) -> BatchOptimum:
        return BatchOptimum(n_params, flops, batches, losses, batch_opt=None, bracketed=False,
                            message=f"{where}: {message}", coeffs=coeffs)

    ok = np.isfinite(losses)
    if ok.sum() < 3:
        return refuse(f"{int(ok.sum())} batch sizes with a bracketed lr (need >= 3)")
    x, y = np.log(np.asarray(batches)[ok]), np.asarray(losses)[ok]
    coeffs = tuple(float(v) for v in _vertex(x, y)[1])
    vertex, short = _bracketed_vertex(x, y)
    if vertex is None:
        b = np.asarray(batches)[ok]
        return refuse({"down": f"lowest loss at the smallest batch ({b[0]:.4g} tokens); extend "
                               "tune.batch_sizes downwards",
                       "up": f"lowest loss at the largest batch ({b[-1]:.4g} tokens); extend "
                             "tune.batch_sizes upwards",
                       "convex": "best loss against log batch is not convex around its "
                                 "minimum; use a finer batch grid"}[short])
    return BatchOptimum(n_params, flops, batches, losses, batch_opt=float(math.exp(vertex)),
                        bracketed=True, message="", coeffs=coeffs)


def _regressors(columns: list[np.ndarray]) -> list[int]:
    """Which log regressors enter the law (in order): each while the points outnumber the
    coefficients and it varies by more than MIN_SPREAD beyond the ones already in."""
    n = len(columns[0]) if columns else 0
    design = [np.ones(n)]
    kept = []
    for j, col in enumerate(columns):
        if n < len(design) + 1:
            break
        basis = np.stack(design, axis=1)
        resid = col - basis @ np.linalg.lstsq(basis, col, rcond=None)[0]
        if np.ptp(resid) > MIN_SPREAD:
            design.append(col)
            kept.append(j)
    return kept


def _law(columns: list[np.ndarray], kept: list[int], log_y: np.ndarray) -> list[float]:
    """[log coef, exponent of each column] (0 for a column left out)."""
    design = np.stack([np.ones_like(log_y)] + [columns[j] for j in kept], axis=1)
    coefs = np.linalg.lstsq(design, log_y, rcond=None)[0]
    out = [float(coefs[0])] + [0.0] * len(columns)
    for i, j in enumerate(kept):
        out[1 + j] = float(coefs[1 + i])
    return out


def _batch_groups(good: list[CellOptimum]) -> list[list[int]]:
    """Indices into `good` of each batch-tuned cell's sub-cells (cells tried at >= 2 batch
    sizes; keyed by N and FLOPs); empty without batch tuning."""
    groups: dict[tuple[float, float], list[int]] = {}
    for i, c in enumerate(good):
        if c.batch_tokens is not None and c.flops is not None:
            groups.setdefault((c.n_params, c.flops), []).append(i)
    return [g for g in groups.values() if len({good[i].batch_tokens for i in g}) >= 2]


def _interval(samples: np.ndarray, level: float, transform=float) -> tuple[float, float]:
    lo, hi = np.percentile(samples, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return (transform(lo), transform(hi))


def fit_lr_law(cells: list[CellOptimum], *, name: str, base_recipe: str, n_boot: int = 200,
               level: float = 0.8, seed: int = 0) -> LrLaw:
    """The law through the bracketed cells (and B*(C) through the bracketed batch cells,
    when cells were tried at several batch sizes); ValueError (naming the cells and which
    way to extend them) when no cell is bracketed."""
    good = [c for c in cells if c.bracketed]
    if not good:
        raise ValueError("no tuning cell has a bracketed optimum: "
                         + "; ".join(c.message for c in cells))
    tuned_batch = bool(batch_cells_of_cells(cells))
    columns = [np.log([c.n_params for c in good]), np.log([c.n_tokens for c in good])]
    if tuned_batch:
        columns.append(np.log([float(c.batch_tokens or 1.0) for c in good]))
    kept = _regressors(columns)
    point = _law(columns, kept, np.log([float(c.lr_opt or 0.0) for c in good]))

    batch_cells = list(batch_cells_of_cells(cells)) if tuned_batch else []
    trusted: dict[tuple, BatchOptimum] = {(b.n_params, b.flops): b for b in batch_cells
                                          if b.bracketed}
    # the bracketed batch cells' sub-cells, as indices into `good`, for the bootstrap
    groups = [g for g in _batch_groups(good) if (good[g[0]].n_params, good[g[0]].flops) in trusted]
    log_flops = [np.log([float(good[g[0]].flops or 1.0) for g in groups])]
    batch_kept = _regressors(log_flops) if groups else []
    batch_point = (_law(log_flops, batch_kept,
                        np.log([trusted[(good[g[0]].n_params, good[g[0]].flops)].batch_opt or 1.0
                                for g in groups])) if groups else None)

    rng = np.random.default_rng(seed)
    parts = []
    for c in good:
        lrs, losses = np.asarray(c.lrs), np.asarray(c.losses)
        ok = np.isfinite(losses)
        x, y = np.log(lrs[ok]), losses[ok]
        coeffs = _vertex(x, y)[1]
        fitted = np.polyval(coeffs, x)
        parts.append((x, fitted, y - fitted))
    fits, batch_fits = [], []
    for _ in range(n_boot):
        log_lr, best_loss = [], []
        for x, fitted, resid in parts:
            y = fitted + rng.choice(resid, size=resid.size, replace=True)
            vertex, coeffs = _vertex(x, y)
            # a resample without a vertex inside the grid keeps the grid's edge
            v = float(np.clip(vertex if vertex is not None else x[np.argmin(y)], x[0], x[-1]))
            log_lr.append(v)
            best_loss.append(float(np.polyval(coeffs, v)))
        fits.append(_law(columns, kept, np.asarray(log_lr)))
        if groups:
            log_b = []
            for g in groups:
                xb = np.log([float(good[i].batch_tokens or 1.0) for i in g])
                order = np.argsort(xb)
                xb, yb = xb[order], np.asarray([best_loss[i] for i in g])[order]
                vertex, _ = _vertex(xb, yb)
                log_b.append(float(np.clip(vertex if vertex is not None else xb[np.argmin(yb)],
                                           xb[0], xb[-1])))
            batch_fits.append(_law(log_flops, batch_kept, np.asarray(log_b)))
    samples = np.asarray(fits) if fits else np.asarray([point])

    batch = None
    if batch_point is not None:
        bs = np.asarray(batch_fits) if batch_fits else np.asarray([batch_point])
        batch = BatchLaw(coef=math.exp(batch_point[0]), exp=batch_point[1],
                         coef_interval=_interval(bs[:, 0], level, math.exp),
                         exp_interval=_interval(bs[:, 1], level), cells=tuple(batch_cells),
                         samples=tuple((float(a), float(b)) for a, b in bs[:, :2]))
    return LrLaw(name=name, coef=math.exp(point[0]), n_exp=point[1], d_exp=point[2],
                 coef_interval=_interval(samples[:, 0], level, math.exp),
                 n_exp_interval=_interval(samples[:, 1], level),
                 d_exp_interval=_interval(samples[:, 2], level), level=level, n_boot=n_boot,
                 cells=tuple(cells), base_recipe=base_recipe,
                 b_exp=point[3] if tuned_batch else 0.0,
                 b_exp_interval=_interval(samples[:, 3], level) if tuned_batch else (0.0, 0.0),
                 batch=batch,
                 samples=tuple(tuple(float(v) for v in row[:3]) + (float(row[3]) if tuned_batch
                                                                    else 0.0,)
                               for row in samples))


def batch_cells_of_cells(cells) -> tuple[BatchOptimum, ...]:
    """The batch optimum of every cell tried at >= 2 batch sizes (keyed by N and FLOPs)."""
    groups: dict[tuple[float, float], list[CellOptimum]] = {}
    for c in cells:
        if c.batch_tokens is not None and c.flops is not None:
            groups.setdefault((c.n_params, c.flops), []).append(c)
    return tuple(fit_batch_cell(g) for g in groups.values()
                 if len({c.batch_tokens for c in g}) >= 2)


def batch_cells_of(law: LrLaw) -> tuple[BatchOptimum, ...]:
    """The batch cells of a law (also when none was bracketed and it has no B*(C): then
    recomputed from its sub-cells, for messages and figures); empty without batch tuning."""
    return law.batch.cells if law.batch is not None else batch_cells_of_cells(law.cells)


__all__ = ["BatchLaw", "BatchOptimum", "CellOptimum", "LrLaw", "batch_cells_of",
           "batch_cells_of_cells", "fit_batch_cell", "fit_cell", "fit_lr_law", "power_law_lr",
           "read_law"]
