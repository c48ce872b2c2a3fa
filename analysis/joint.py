"""Joint Approach 3 fits across labelled ladders: one law per label, some parameters shared.

    shared-E          every label has its own A, B, alpha, beta; one irreducible loss E
    shared-exponents  every label has its own A, B; one E, alpha and beta

Same objective as `analysis.approach3`: the summed Huber loss (delta 1e-3) of
LSE(a - alpha log N, b - beta log D, e) - log L, now summed over every label's points. It
is minimised in approach3's internal coordinates (log N and log D standardised, here over
all labels pooled so a shared exponent is one number in every label's coordinates), with its
analytic per-label gradient (`approach3._value_and_grad_np`) scattered onto the joint
parameter vector, and a scipy L-BFGS-B polish (ftol 1e-15), from many starts:
every combination of an e and, for shared exponents, an (alpha, beta) taken from the
labels' independent fits, their means, and Chinchilla's e grid.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.approach3 import (
    HUBER_DELTA,
    Approach3Result,
    _Scaling,
    _value_and_grad_np,
    check_points,
    fit_approach3,
    objective,
)
from scaling.errors import RunFailed, UserError

JOINT_MODES = ("shared-E", "shared-exponents")
E_GRID = (-1.0, -0.5, 0.0, 0.5, 1.0)  # Chinchilla's grid of e = log E


@dataclass(frozen=True)
class JointFit:
    """Each label's law under the shared parameters of `mode`; `objective` is the summed
    Huber over all labels (each law's own `objective` is over its label's points)."""

    mode: str
    laws: Mapping[str, Approach3Result]
    objective: float
    n_starts: int
    independent_objective: float = math.nan  # sum of the labels' separate optima
    shared: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"mode": self.mode, "objective": self.objective,
                "independent_objective": self.independent_objective,
                "n_starts": self.n_starts, "shared": dict(self.shared),
                "labels": {k: law.to_dict() for k, law in self.laws.items()}}


def check_mode(mode: str) -> str:
    if mode not in JOINT_MODES:
        raise UserError(f"--joint: expected one of {', '.join(JOINT_MODES)}, got {mode!r}")
    return mode


def _layout(mode: str, n_labels: int) -> tuple[int, list[np.ndarray]]:
    """Size of the joint vector and, per label, the indices of its internal
    (a', b', e, alpha', beta') in it. The shared entries come first."""
    idx = []
    if mode == "shared-E":  # [e, (a'_k, b'_k, alpha'_k, beta'_k) ...]
        for k in range(n_labels):
            o = 1 + 4 * k
            idx.append(np.array([o, o + 1, 0, o + 2, o + 3]))
        return 1 + 4 * n_labels, idx
    for k in range(n_labels):  # [e, alpha', beta', (a'_k, b'_k) ...]
        o = 3 + 2 * k
        idx.append(np.array([o, o + 1, 0, 1, 2]))
    return 3 + 2 * n_labels, idx


def _value_and_grad(x, idx, data, delta, scale):
    f, g = 0.0, np.zeros_like(x)
    for rows, (zn, zd, ll) in zip(idx, data, strict=True):
        fk, gk = _value_and_grad_np(x[rows], zn, zd, ll, delta, 1.0)
        f += fk
        np.add.at(g, rows, gk)
    return f * scale, g * scale


def _starts(mode: str, internal: list[np.ndarray], idx: list[np.ndarray], size: int,
            max_log_e: float) -> np.ndarray:
    """Joint start vectors from the labels' independent optima (internal coordinates)."""
    es = sorted({*(float(x[2]) for x in internal), float(np.mean([x[2] for x in internal])),
                 *(e for e in E_GRID if e < max_log_e)})
    exps = [(x[3], x[4]) for x in internal] + [tuple(np.mean([x[3:5] for x in internal], 0))]
    rows = []
    for e, pair in itertools.product(es, exps if mode == "shared-exponents" else [None]):
        x = np.zeros(size)
        for rows_k, own in zip(idx, internal, strict=True):
            x[rows_k] = own
        x[0] = e
        if mode == "shared-exponents":
            x[1], x[2] = pair
        rows.append(x)
    return np.stack(rows)


def fit_joint(groups: Mapping[str, tuple[Any, Any, Any]], mode: str, *,
              independent: Mapping[str, Approach3Result] | None = None,
              delta: float = HUBER_DELTA) -> JointFit:
    """Fit every label's (N, D, L) points at once with the parameters `mode` shares.

    groups: label -> (n_params, n_tokens, loss). independent: the labels' separate
    `fit_approach3` results (fitted here when not given); they seed the starts and their
    summed objective is reported beside the joint one (the price of sharing)."""
    from scipy.optimize import minimize

    check_mode(mode)
    if len(groups) < 2:
        raise UserError(f"--joint: expected at least 2 labels, got {len(groups)}")
    labels = list(groups)
    points = {}
    for label in labels:
        try:
            points[label] = check_points(*groups[label])
        except UserError as e:
            raise UserError(f"label {label!r}: {e}") from None
    independent = dict(independent or {})
    for label in labels:
        if label not in independent:
            independent[label] = fit_approach3(*points[label], delta=delta)
    sc = _Scaling.of(np.concatenate([np.log(points[k][0]) for k in labels]),
                     np.concatenate([np.log(points[k][1]) for k in labels]))
    data = [((np.log(n) - sc.mu_n) / sc.sd_n, (np.log(d) - sc.mu_d) / sc.sd_d, np.log(l))
            for n, d, l in (points[k] for k in labels)]
    size, idx = _layout(mode, len(labels))
    internal = [sc.to_internal(independent[k].theta()) for k in labels]
    max_log_e = min(float(np.min(ll)) for _, _, ll in data)
    starts = _starts(mode, internal, idx, size, max_log_e)
    best_x, best_f = None, math.inf
    for x0 in starts:
        f0, _ = _value_and_grad(x0, idx, data, delta, 1.0)
        if not math.isfinite(f0):
            continue
        scale = 1.0 / max(f0, 1e-300)
        res = minimize(_value_and_grad, x0, args=(idx, data, delta, scale), jac=True,
                       method="L-BFGS-B", options=dict(ftol=1e-15, gtol=1e-12, maxiter=5000,
                                                       maxcor=20))
        f1 = float(res.fun) / scale
        if math.isfinite(f1) and f1 < best_f:
            best_x, best_f = res.x, f1
    if best_x is None:
        raise RunFailed("joint fit: no start reached a finite objective")
    laws = {}
    for label, rows in zip(labels, idx, strict=True):
        theta = sc.to_theta(best_x[rows])
        n_params, n_tokens, loss = points[label]
        laws[label] = Approach3Result.from_theta(
            theta, objective(theta, n_params, n_tokens, loss, delta), len(n_params),
            method=f"joint:{mode}", n_starts=len(starts))
    first = laws[labels[0]]
    shared = {"E": first.E} if mode == "shared-E" else {"E": first.E, "alpha": first.alpha,
                                                        "beta": first.beta}
    return JointFit(mode=mode, laws=laws, objective=best_f, n_starts=len(starts),
                    independent_objective=float(sum(independent[k].objective for k in labels)),
                    shared=shared)


__all__ = ["JOINT_MODES", "JointFit", "check_mode", "fit_joint"]
