"""Learning-rate laws from small tuning sweeps: per-cell optima, then lr*(N, D) = c N^a D^b.

A cell is one (model size N, tokens D) trained at several learning rates. Per cell, the loss
against log lr is fitted with a parabola (float64, log space); the optimum is trusted only
when it is bracketed: the curvature is positive and the lowest measured loss is not at
either end of the grid (an optimum at the edge may lie beyond it, and the message says which
way to extend). Across trusted cells, log lr* = log c + a log N + b log D is fitted by least
squares (with fewer than 3 cells or one distinct D, b is fixed at 0, and with one cell a too:
the law is then a constant). Intervals come from a residual bootstrap: each cell's losses
are redrawn as its fitted parabola plus its own residuals resampled, every cell's vertex
refitted and the law refitted, `n_boot` times with an explicit seed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

LAW_FORMAT = 1


@dataclass(frozen=True)
class CellOptimum:
    n_params: float
    n_tokens: float
    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    lr_opt: float | None  # None unless bracketed
    bracketed: bool
    message: str  # why not trusted ("" when bracketed)


@dataclass(frozen=True)
class LrLaw:
    """lr*(N, D) = coef * N**n_exp * D**d_exp, with bootstrap intervals (at `level`)."""

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

    def lr(self, n_params: float, n_tokens: float) -> float:
        return float(self.coef * n_params ** self.n_exp * n_tokens ** self.d_exp)

    def to_dict(self) -> dict:
        return {"format": LAW_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> LrLaw:
        d = {k: v for k, v in d.items() if k != "format"}
        cells = tuple(CellOptimum(**{**c, "lrs": tuple(c["lrs"]), "losses": tuple(c["losses"])})
                      for c in d.pop("cells"))
        for key in ("coef_interval", "n_exp_interval", "d_exp_interval"):
            d[key] = tuple(d[key])
        return cls(cells=cells, **d)


def _vertex(log_lr: np.ndarray, loss: np.ndarray) -> tuple[float | None, np.ndarray]:
    c2, c1, c0 = np.polyfit(log_lr, loss, 2)
    fitted = np.polyval([c2, c1, c0], log_lr)
    return (-c1 / (2 * c2) if c2 > 0 else None), fitted


def fit_cell(n_params: float, n_tokens: float, lrs, losses) -> CellOptimum:
    """One cell's optimum, with the bracket check; finite losses only (a diverged lr is
    dropped, and counts as the high side's bracket)."""
    lrs = np.asarray(lrs, dtype=np.float64)
    losses = np.asarray(losses, dtype=np.float64)
    order = np.argsort(lrs)
    lrs, losses = lrs[order], losses[order]
    finite = np.isfinite(losses)
    where = f"cell N={n_params:.3g}, D={n_tokens:.3g}"
    keep = (tuple(float(x) for x in lrs), tuple(float(x) for x in losses))

    def refuse(message: str) -> CellOptimum:
        return CellOptimum(n_params, n_tokens, *keep, lr_opt=None, bracketed=False,
                           message=f"{where}: {message}")

    if finite.sum() < 3:
        return refuse(f"{int(finite.sum())} finite losses (need >= 3)")
    x, y = np.log(lrs[finite]), losses[finite]
    best = int(np.argmin(y))
    diverged_above = not finite[-1]
    if best == 0:
        return refuse(f"lowest loss at the smallest lr {lrs[finite][0]:.3g}; extend the "
                      "multipliers downwards")
    if best == len(y) - 1 and not diverged_above:
        return refuse(f"lowest loss at the largest lr {lrs[finite][-1]:.3g}; extend the "
                      "multipliers upwards")
    vertex, _ = _vertex(x, y)
    if vertex is None or not x[0] <= vertex <= x[-1]:
        return refuse("loss against log lr is not convex around its minimum; use a finer grid")
    return CellOptimum(n_params, n_tokens, *keep, lr_opt=float(math.exp(vertex)),
                       bracketed=True, message="")


def _law(log_n: np.ndarray, log_d: np.ndarray, log_lr: np.ndarray) -> tuple[float, float, float]:
    columns = [np.ones_like(log_n)]
    if len(set(np.round(log_n, 9))) > 1:
        columns.append(log_n)
    if len(log_n) >= 3 and len(set(np.round(log_d, 9))) > 1:
        columns.append(log_d)
    coefs = np.linalg.lstsq(np.stack(columns, axis=1), log_lr, rcond=None)[0]
    log_c = coefs[0]
    n_exp = coefs[1] if len(columns) > 1 else 0.0
    d_exp = coefs[2] if len(columns) > 2 else 0.0
    return float(log_c), float(n_exp), float(d_exp)


def fit_lr_law(cells: list[CellOptimum], *, name: str, base_recipe: str, n_boot: int = 200,
               level: float = 0.8, seed: int = 0) -> LrLaw:
    """The law through the bracketed cells; ValueError (naming the cells and which way to
    extend them) when none is bracketed."""
    good = [c for c in cells if c.bracketed]
    if not good:
        raise ValueError("no tuning cell has a bracketed optimum: "
                         + "; ".join(c.message for c in cells))
    log_n = np.log([c.n_params for c in good])
    log_d = np.log([c.n_tokens for c in good])
    log_c, n_exp, d_exp = _law(log_n, log_d, np.log([float(c.lr_opt or 0.0) for c in good]))

    rng = np.random.default_rng(seed)
    fits = []
    parts = []
    for c in good:
        lrs, losses = np.asarray(c.lrs), np.asarray(c.losses)
        ok = np.isfinite(losses)
        x, y = np.log(lrs[ok]), losses[ok]
        _, fitted = _vertex(x, y)
        parts.append((x, fitted, y - fitted))
    for _ in range(n_boot):
        log_lr = []
        for x, fitted, resid in parts:
            vertex, _ = _vertex(x, fitted + rng.choice(resid, size=resid.size, replace=True))
            # a resample without a vertex inside the grid keeps the grid's edge
            log_lr.append(float(np.clip(vertex if vertex is not None else x[np.argmin(fitted)],
                                        x[0], x[-1])))
        fits.append(_law(log_n, log_d, np.asarray(log_lr)))
    fits_Bx3 = np.asarray(fits) if fits else np.asarray([(log_c, n_exp, d_exp)])
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]

    def interval(j: int, transform=float) -> tuple[float, float]:
        lo, hi = np.percentile(fits_Bx3[:, j], q)
        return (transform(lo), transform(hi))

    return LrLaw(name=name, coef=math.exp(log_c), n_exp=n_exp, d_exp=d_exp,
                 coef_interval=interval(0, math.exp), n_exp_interval=interval(1),
                 d_exp_interval=interval(2), level=level, n_boot=n_boot, cells=tuple(cells),
                 base_recipe=base_recipe)


__all__ = ["CellOptimum", "LrLaw", "fit_cell", "fit_lr_law"]
