"""Approach 3: the parametric loss L(N, D) = E + A / N^alpha + B / D^beta.

Fitted as Hoffmann et al. (2022) state it and as Besiroglu et al. (2024, "Chinchilla
scaling: a replication attempt") showed it must be done: on log loss through the
log-sum-exp form

    log L = LSE(a - alpha log N, b - beta log D, e),   A = exp(a), B = exp(b), E = exp(e),

minimising the Huber loss (delta = 1e-3) SUMMED over points, with L-BFGS from the 4,500
starts of Chinchilla's grid and the best optimum kept.

Every start is optimised at once: `batched_lbfgs` is one L-BFGS whose arrays carry a batch
axis (one row per start), written in JAX with analytic gradients and jitted. Each row can
carry its own point weights (and log losses), so a bootstrap resample (multiplicities of
the original points) or a simulated data set is just another row: `refit_many` fits 1,000
resamples in the same kernel. The search over starts runs in float32 (XLA's float64
exp/log are ~7x slower on CPU); it only ranks basins, and by successive halving
(`search_starts`: 10 iterations for every start, then only the best 64 go on). The best
distinct rows are then polished in float64 by damped Newton steps on the exact 5x5 Hessian
(`newton_polish`, numpy, all rows at once) to rounding, and that is the answer. Internally
the exponents multiply standardised log N and log D (centred and scaled), which
decorrelates a from alpha and b from beta; that conditioning is what lets one L-BFGS step
length suit every start.

`fit_vpnls` is the variable-projection check: for fixed (alpha, beta) the loss is linear
in (E, A, B), solved by non-negative least squares; only (alpha, beta) are searched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from scaling.errors import RunFailed, UserError

HUBER_DELTA = 1e-3
N_PARAMS = 5  # a, b, e, alpha, beta


def chinchilla_grid() -> np.ndarray:
    """Chinchilla's 4,500 starts as rows (a, b, e, alpha, beta).

    alpha, beta in {0, 0.5, ..., 2}; e in {-1, -0.5, ..., 1}; a, b in {0, 5, ..., 25}.
    """
    alphas = np.arange(0.0, 2.01, 0.5)
    es = np.arange(-1.0, 1.01, 0.5)
    abs_ = np.arange(0.0, 25.1, 5.0)
    a, b, e, alpha, beta = np.meshgrid(abs_, abs_, es, alphas, alphas, indexing="ij")
    grid = np.stack([a, b, e, alpha, beta], axis=-1).reshape(-1, N_PARAMS)
    assert grid.shape == (4500, N_PARAMS)
    return grid


LAW_KEYS = ("A", "B", "E", "alpha", "beta")


@dataclass(frozen=True)
class ParametricLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta and its compute-optimal frontier.

    Each parameter is a float, or an array with one entry per bootstrap sample: every
    formula then gives one value per sample (`column()` adds an axis to broadcast the
    samples against a grid of budgets or sizes). Under C = 6 N D: N*(C) = G (C/6)^a and
    D*(C) = (C/6)^b / G, with G = (alpha A / (beta B))^(1/(alpha+beta)),
    a = beta/(alpha+beta), b = alpha/(alpha+beta) (Hoffmann et al. 2022, App. D.2).
    """

    A: Any
    B: Any
    E: Any
    alpha: Any
    beta: Any

    @property
    def a(self) -> Any:
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> Any:
        return self.alpha / (self.alpha + self.beta)

    @property
    def G(self) -> Any:
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            return np.power(self.alpha * self.A / (self.beta * self.B),
                            1.0 / (self.alpha + self.beta))

    def predict(self, n_params: Any, n_tokens: Any) -> np.ndarray:
        """Predicted loss at (N, D); broadcasts."""
        n = np.asarray(n_params, dtype=np.float64)
        d = np.asarray(n_tokens, dtype=np.float64)
        return self.E + self.A * np.power(n, -self.alpha) + self.B * np.power(d, -self.beta)

    def params_opt(self, flops: Any) -> np.ndarray:
        """N*(C) under C = 6 N D."""
        return self.G * np.power(np.asarray(flops, dtype=np.float64) / 6.0, self.a)

    def tokens_opt(self, flops: Any) -> np.ndarray:
        """D*(C) under C = 6 N D."""
        return np.power(np.asarray(flops, dtype=np.float64) / 6.0, self.b) / self.G

    def loss_opt(self, flops: Any) -> np.ndarray:
        """Predicted loss of the compute-optimal model at budget C."""
        return self.predict(self.params_opt(flops), self.tokens_opt(flops))

    def params_for_tokens(self, n_tokens: Any) -> np.ndarray:
        """The N whose compute-optimal token count is `n_tokens` (inverts D*(C))."""
        return self.G * np.power(self.G * np.asarray(n_tokens, dtype=np.float64),
                                 self.a / self.b)

    def law(self) -> ParametricLaw:
        return ParametricLaw(*(getattr(self, k) for k in LAW_KEYS))

    def column(self) -> ParametricLaw:
        """The same law with a trailing axis on every parameter (samples x grid)."""
        return ParametricLaw(*(np.asarray(getattr(self, k), dtype=np.float64)[..., None]
                               for k in LAW_KEYS))


@dataclass(frozen=True)
class Approach3Result(ParametricLaw):
    """A fitted law. `objective` is the summed Huber loss (delta = 1e-3) of log-loss
    residuals at the optimum, whatever `method` produced the fit, so fits are comparable."""

    objective: float = math.nan
    n_points: int = 0
    method: str = "lbfgs"  # "lbfgs" | "vpnls" | "published"
    n_starts: int = 0
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def params(self) -> dict[str, float]:
        """The five fitted parameters and the derived exponents/coefficient."""
        return {"A": self.A, "B": self.B, "E": self.E, "alpha": self.alpha,
                "beta": self.beta, "a": self.a, "b": self.b, "G": float(self.G)}

    def checked(self) -> Approach3Result:
        """Itself, or a UserError when the law leaves its domain (alpha, beta > 0: loss falls
        with scale; A, B, E finite and >= 0)."""
        for name in LAW_KEYS:
            value = getattr(self, name)
            if not (math.isfinite(value) and (value > 0 if name in ("alpha", "beta") else value >= 0)):
                raise UserError(f"{self.method}: fitted {name} = {value:.3g} is out of its domain")
        return self

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("A", "B", "E", "alpha", "beta", "objective")}
        d.update(a=self.a, b=self.b, G=float(self.G), n_points=self.n_points,
                 method=self.method, n_starts=self.n_starts)
        d.update(self.extra)
        return d

    @classmethod
    def from_theta(cls, theta: np.ndarray, objective: float, n_points: int, **kw) -> Approach3Result:
        a, b, e, alpha, beta = (float(v) for v in theta)
        return cls(A=math.exp(a), B=math.exp(b), E=math.exp(e), alpha=alpha, beta=beta,
                   objective=float(objective), n_points=n_points, **kw)

    def theta(self) -> np.ndarray:
        """(a, b, e, alpha, beta): the log-space parameters."""
        return np.array([math.log(self.A), math.log(self.B), math.log(self.E),
                         self.alpha, self.beta])


# ----------------------------------------------------------------------------- data checks


def check_points(n_params: Any, n_tokens: Any, loss: Any, min_points: int = N_PARAMS + 1):
    """Float64 arrays of N, D, L; UserError naming the first bad column."""
    out = []
    for name, x in (("params", n_params), ("tokens", n_tokens), ("loss", loss)):
        arr = np.asarray(x, dtype=np.float64).ravel()
        bad = ~np.isfinite(arr) | (arr <= 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise UserError(f"{name}: expected positive finite values, got {arr[i]!r} at row {i}")
        out.append(arr)
    if not (len(out[0]) == len(out[1]) == len(out[2])):
        raise UserError("params, tokens, loss: expected equal lengths")
    if len(out[0]) < min_points:
        raise UserError(f"points: expected at least {min_points} to fit {N_PARAMS} parameters, "
                        f"got {len(out[0])}")
    return out


@dataclass(frozen=True)
class _Scaling:
    """theta_internal = (a', b', e, alpha', beta') with u1 = a' - alpha' zN, zN standardised."""

    mu_n: float
    sd_n: float
    mu_d: float
    sd_d: float

    @classmethod
    def of(cls, log_n: np.ndarray, log_d: np.ndarray) -> _Scaling:
        sd_n = float(np.std(log_n)) or 1.0
        sd_d = float(np.std(log_d)) or 1.0
        return cls(float(np.mean(log_n)), sd_n, float(np.mean(log_d)), sd_d)

    def to_internal(self, theta: np.ndarray) -> np.ndarray:
        theta = np.asarray(theta, dtype=np.float64)
        a, b, e, alpha, beta = np.moveaxis(theta, -1, 0)
        return np.stack([a - alpha * self.mu_n, b - beta * self.mu_d, e,
                         alpha * self.sd_n, beta * self.sd_d], axis=-1)

    def to_theta(self, internal: np.ndarray) -> np.ndarray:
        ap, bp, e, alp, bep = np.moveaxis(np.asarray(internal, dtype=np.float64), -1, 0)
        alpha, beta = alp / self.sd_n, bep / self.sd_d
        return np.stack([ap + alpha * self.mu_n, bp + beta * self.mu_d, e, alpha, beta], axis=-1)


# ----------------------------------------------------------------------------- objective (numpy)


def huber(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    ar = np.abs(r)
    return np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))


def overestimate_weights(r: np.ndarray, penalty: float) -> np.ndarray:
    """Weight `penalty` on residuals where the law predicts a loss above the run's (r > 0),
    1 elsewhere: the asymmetric loss of OLMo-core's ladder fits. A run that was under-tuned
    sits above the law; with penalty > 1 it pulls the fit up less than a well-tuned run pulls
    it down, so the law tracks the lower envelope of the runs."""
    return np.where(r > 0, penalty, 1.0)


def log_residuals(theta: np.ndarray, log_n, log_d, log_loss) -> np.ndarray:
    a, b, e, alpha, beta = theta
    u = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    m = u.max(axis=0)
    return m + np.log(np.exp(u - m).sum(axis=0)) - log_loss


def objective(theta: Any, n_params: Any, n_tokens: Any, loss: Any,
              delta: float = HUBER_DELTA, overestimate_penalty: float = 1.0) -> float:
    """Summed Huber loss of LSE(a - alpha log N, b - beta log D, e) - log L at theta =
    (a, b, e, alpha, beta). This is the objective Epoch (and we) minimise; with
    `overestimate_penalty` != 1 over-predictions are weighted by it."""
    r = log_residuals(np.asarray(theta, dtype=np.float64), np.log(n_params),
                      np.log(n_tokens), np.log(loss))
    return float((overestimate_weights(r, overestimate_penalty) * huber(r, delta)).sum())


def _value_and_grad_np(x: np.ndarray, zn, zd, log_loss, delta: float, scale: float,
                       penalty: float = 1.0):
    """Objective and analytic gradient in internal coordinates, float64 numpy (for scipy:
    analysis.joint's polish and the tests)."""
    ap, bp, e, alp, bep = x
    u = np.stack([ap - alp * zn, bp - bep * zd, np.full_like(zn, e)])
    m = u.max(axis=0)
    ex = np.exp(u - m)
    s = ex.sum(axis=0)
    r = m + np.log(s) - log_loss
    weight = overestimate_weights(r, penalty)
    psi = weight * np.clip(r, -delta, delta)
    w = ex / s * psi
    g = np.array([w[0].sum(), w[1].sum(), w[2].sum(), -(w[0] * zn).sum(), -(w[1] * zd).sum()])
    return (weight * huber(r, delta)).sum() * scale, g * scale


# ----------------------------------------------------------------------------- batched L-BFGS (JAX)


@cache
def _batched_lbfgs_fn(history: int):
    """Build the jitted batched L-BFGS once per history length (shapes are traced per call)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    def value_and_grad(x, zn, zd, ll, w, delta):
        # x: (R, 5); zn, zd, ll: (P,); w: (R, P) or (1, P) point weights.
        u1 = x[:, 0:1] - x[:, 3:4] * zn
        u2 = x[:, 1:2] - x[:, 4:5] * zd
        u3 = jnp.broadcast_to(x[:, 2:3], u1.shape)
        m = jnp.maximum(jnp.maximum(u1, u2), u3)
        e1, e2, e3 = jnp.exp(u1 - m), jnp.exp(u2 - m), jnp.exp(u3 - m)
        s = e1 + e2 + e3
        r = m + jnp.log(s) - ll
        ar = jnp.abs(r)
        h = jnp.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))
        f = jnp.sum(w * h, axis=1)
        q = w * jnp.clip(r, -delta, delta) / s
        q1, q2, q3 = q * e1, q * e2, q * e3
        g = jnp.stack([q1.sum(1), q2.sum(1), q3.sum(1), -(q1 @ zn), -(q2 @ zd)], axis=1)
        return f, g

    window, stall_tol, hope = 25, 1e-5, 20.0
    max_fail = 20  # consecutive step halvings before a row is declared converged to rounding

    def direction(g, S, Y, rho):
        """Two-loop recursion, batched; rows without history get a unit-length step."""
        # Loops rather than unrolled Python: a smaller program compiles faster.
        def back(j, carry):
            q, alphas = carry
            i = history - 1 - j
            ai = rho[:, i] * jnp.sum(S[:, i] * q, axis=1)
            return q - ai[:, None] * Y[:, i], alphas.at[:, i].set(ai)

        q, alphas = lax.fori_loop(0, history, back, (g, jnp.zeros_like(rho)))
        sy = jnp.sum(S[:, -1] * Y[:, -1], axis=1)
        yy = jnp.sum(Y[:, -1] * Y[:, -1], axis=1)
        gnorm = jnp.sqrt(jnp.sum(g * g, axis=1))
        tiny = jnp.finfo(g.dtype).tiny
        gamma = jnp.where(rho[:, -1] > 0, sy / jnp.where(yy > 0, yy, 1.0),
                          1.0 / jnp.maximum(gnorm, tiny))

        def forward(i, r):
            bi = rho[:, i] * jnp.sum(Y[:, i] * r, axis=1)
            return r + (alphas[:, i] - bi)[:, None] * S[:, i]

        r = lax.fori_loop(0, history, forward, gamma[:, None] * q)
        d = -r
        gd = jnp.sum(g * d, axis=1)
        bad = ~(gd < 0) | ~jnp.all(jnp.isfinite(d), axis=1)
        d = jnp.where(bad[:, None], -g / jnp.maximum(gnorm, tiny)[:, None], d)
        return d, bad

    def run(x0, zn, zd, ll, w, delta, max_iter, ftol, gtol, n_groups, compact):
        # One objective+gradient evaluation per iteration for the whole batch: a row whose
        # trial step fails the Armijo test keeps its direction and retries a shorter step
        # at the next iteration, instead of the batch waiting on its backtracking loop.
        n_rows, dt = x0.shape[0], x0.dtype
        f0, g0 = value_and_grad(x0, zn, zd, ll, w, delta)
        scale = 1.0 / jnp.maximum(jnp.abs(f0), jnp.finfo(dt).tiny)  # objectives differ by orders
        zeros_h = jnp.zeros((n_rows, history, N_PARAMS), dt)
        state = dict(
            x=x0, f=f0, g=g0, S=zeros_h, Y=zeros_h, rho=jnp.zeros((n_rows, history), dt),
            d=jnp.zeros_like(x0), t=jnp.ones(n_rows, dt), fresh=jnp.ones(n_rows, bool),
            n_fail=jnp.zeros(n_rows, jnp.int32), active=jnp.isfinite(f0), f_ref=f0,
            it=jnp.zeros((), jnp.int32), n_iter=jnp.zeros(n_rows, jnp.int32),
        )

        # Most rows stop within ~75 iterations while a few run to ~300: evaluate only the
        # active rows, gathered to the front, at the smallest of a few static batch sizes
        # that holds them (one compiled program, no recompilation as rows drop out).
        # Without `compact` (a few iterations, or a small batch) one size: a program a
        # quarter the size compiles faster.
        sizes = sorted({n_rows} | ({n_rows // k for k in (4, 16, 64) if n_rows // k >= 16}
                                   if compact else set()))

        def eval_active(x_try, active, f, g):
            order = jnp.argsort(~active, stable=True)
            n_active = jnp.sum(active)

            def branch(size):
                def fn(_):
                    rows = order[:size]
                    ll_s = ll[rows] if ll.ndim == 2 and ll.shape[0] == n_rows else ll
                    w_s = w[rows] if w.shape[0] == n_rows else w
                    f_s, g_s = value_and_grad(x_try[rows], zn, zd, ll_s, w_s, delta)
                    return f.at[rows].set(f_s), g.at[rows].set(g_s)
                return fn

            index = jnp.searchsorted(jnp.array(sizes), n_active)
            index = jnp.minimum(index, len(sizes) - 1)
            return lax.switch(index, [branch(k) for k in sizes], None)

        def body(st):
            x, f, g, S, Y, rho = (st[k] for k in ("x", "f", "g", "S", "Y", "rho"))
            active, fresh, t = st["active"], st["fresh"], st["t"]
            gs = g * scale[:, None]
            d_new, reset = direction(gs, S, Y, rho)
            d = jnp.where(fresh[:, None], d_new, st["d"])
            rho = jnp.where((fresh & reset)[:, None], 0.0, rho)
            gd = jnp.sum(gs * d, axis=1)
            fn, gn = eval_active(x + t[:, None] * d, active, f, g)
            dec = (fn - f) * scale
            ok = active & (dec <= 1e-4 * t * gd) & jnp.isfinite(fn)
            s = t[:, None] * d
            y = (gn - g) * scale[:, None]
            sy = jnp.sum(s * y, axis=1)
            upd = ok & (sy > jnp.finfo(dt).eps * jnp.sqrt(jnp.sum(s * s, 1) * jnp.sum(y * y, 1)))
            S = jnp.where(upd[:, None, None], jnp.concatenate([S[:, 1:], s[:, None]], 1), S)
            Y = jnp.where(upd[:, None, None], jnp.concatenate([Y[:, 1:], y[:, None]], 1), Y)
            rho_new = jnp.concatenate([rho[:, 1:], (1.0 / jnp.where(upd, sy, 1.0))[:, None]], 1)
            rho = jnp.where(upd[:, None], rho_new, rho)
            # Rejected: shrink by safeguarded quadratic interpolation of f along d.
            curv = 2.0 * (dec - gd * t)
            t_q = jnp.where(curv > 0, -gd * t * t / jnp.where(curv > 0, curv, 1.0), 0.5 * t)
            t_next = jnp.where(ok, 1.0, jnp.clip(t_q, 0.1 * t, 0.5 * t))
            f_new = jnp.where(ok, fn, f)
            g_new = jnp.where(ok[:, None], gn, g)
            n_fail = jnp.where(ok, 0, st["n_fail"] + 1)
            small_f = ok & ((f - f_new) <= ftol * jnp.abs(f))
            small_g = jnp.max(jnp.abs(g_new * scale[:, None]), axis=1) <= gtol
            # A row that gained less than stall_tol (relative) over the last `window`
            # iterations is creeping along a flat valley: stop it rather than make the
            # whole batch wait (the best rows are polished in float64 afterwards anyway).
            at_check = (st["it"] + 1) % window == 0
            # Likewise a row so far above the best row of its group (same weights) that at
            # its recent pace it would need more than `hope` windows to catch up.
            progress = st["f_ref"] - f_new
            group_best = jnp.repeat(jnp.min(f_new.reshape(n_groups, -1), axis=1),
                                    n_rows // n_groups)
            stalled = at_check & ((progress <= stall_tol * jnp.abs(st["f_ref"]))
                                  | (f_new - group_best > hope * progress))
            f_ref = jnp.where(at_check, f_new, st["f_ref"])
            still = active & ~small_f & ~small_g & (n_fail < max_fail) & ~stalled
            return dict(x=jnp.where(ok[:, None], x + s, x), f=f_new, g=g_new, S=S, Y=Y,
                        rho=rho, d=d, t=t_next, fresh=ok, n_fail=n_fail, active=still, f_ref=f_ref,
                        it=st["it"] + 1, n_iter=st["n_iter"] + active.astype(jnp.int32))

        def cond(st):
            return jnp.any(st["active"]) & (st["it"] < max_iter)

        st = lax.while_loop(cond, body, state)
        return st["x"], st["f"], st["n_iter"], st["it"]

    return jax.jit(run, static_argnames=("n_groups", "compact"))


def batched_lbfgs(x0: np.ndarray, zn: np.ndarray, zd: np.ndarray, log_loss: np.ndarray,
                  weights: np.ndarray | None = None, *, delta: float = HUBER_DELTA,
                  max_iter: int = 1000, ftol: float = 1e-10, gtol: float = 1e-9,
                  history: int = 10, dtype: str = "float64", n_groups: int = 1,
                  compact: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimise the weighted summed Huber objective from every row of x0 at once.

    x0: (R, 5) internal coordinates; log_loss: (P,) or (R, P); weights: (R, P) or (1, P)
    point multiplicities (None: all 1). Rows come in `n_groups` contiguous groups of equal
    size sharing the same data (a bootstrap resample and its starts); a row far above its
    group's best that has nearly stopped improving is retired early. Convergence per row:
    relative decrease of the objective <= ftol, or max |gradient| of the start-normalised
    objective <= gtol; rows stop independently (a stopped row no longer moves). compact:
    evaluate only the rows still active, gathered (worth it for long runs of large batches).
    Returns (x, objective, iterations) per row, float64.
    """
    import jax
    import jax.numpy as jnp

    with jax.enable_x64(True):
        fn = _batched_lbfgs_fn(history)
        w = np.ones((1, len(zn))) if weights is None else weights
        dt = jnp.dtype(dtype)
        x, f, n_iter, _ = fn(
            *(jnp.asarray(v, dt) for v in (x0, zn, zd, log_loss, w)), jnp.asarray(delta, dt),
            max_iter, jnp.asarray(ftol, dt), jnp.asarray(gtol, dt), n_groups=n_groups,
            compact=compact)
        return (np.asarray(x, np.float64), np.asarray(f, np.float64), np.asarray(n_iter))


# ----------------------------------------------------------------------------- public fits


def point_bucket(n_points: int) -> int:
    """The padded problem size for n_points: 32, 48, 64, 96, 128, 192, ... (at most 1.5x).
    XLA compiles one program per shape; padding to a few sizes lets a rollout's many fits,
    and the persistent compile cache across CSVs, reuse one compilation."""
    size = 32
    while size < n_points:
        size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    return size


def _pad_points(zn: np.ndarray, zd: np.ndarray, log_loss: np.ndarray,
                weights: np.ndarray | None, pad_to: int = 0) -> tuple[np.ndarray, ...]:
    """Append zero-weight points up to `point_bucket` (of at least `pad_to` points): they add
    nothing to the objective or its gradient (every term is multiplied by its weight)."""
    n_pts = len(zn)
    extra = point_bucket(max(n_pts, pad_to)) - n_pts
    w = np.ones((1, n_pts)) if weights is None else np.atleast_2d(weights)
    ll = np.atleast_2d(log_loss)
    if extra == 0:
        return zn, zd, log_loss, w

    def pad(a):
        return np.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, extra)])

    ll = pad(ll)
    return pad(zn), pad(zd), ll[0] if np.ndim(log_loss) == 1 else ll, pad(w)


def _value_grad_hess_np(x_Rx5: np.ndarray, zn: np.ndarray, zd: np.ndarray, ll, w,
                        delta: float, penalty: float = 1.0):
    """Objective, gradient and exact Hessian per row in internal coordinates, float64 numpy.

    x_Rx5: rows (a', b', e, alpha', beta'); ll, w: (P,) / (1, P) shared or (R, P) per row.
    With p = softmax(u) of the three log-terms, r's gradient is J = (p1, p2, p3, -p1 zn,
    -p2 zd) and its Hessian Jx^T diag(p) Jx - J J^T (the LSE's, Jx mapping x to u), so
    H = sum_i w_i [huber''(r_i) J J^T + psi_i (Jx^T diag(p) Jx - J J^T)], psi = huber'.
    """
    a, b, e, al, be = (x_Rx5[:, j:j + 1] for j in range(N_PARAMS))
    u1, u2 = a - al * zn, b - be * zd
    u3 = np.broadcast_to(e, u1.shape)
    m = np.maximum(np.maximum(u1, u2), u3)
    e1, e2, e3 = np.exp(u1 - m), np.exp(u2 - m), np.exp(u3 - m)
    s = e1 + e2 + e3
    r = m + np.log(s) - ll
    weight = np.broadcast_to(w, r.shape) * (overestimate_weights(r, penalty)
                                            if penalty != 1.0 else 1.0)
    f = np.sum(weight * huber(r, delta), axis=1)
    psi = weight * np.clip(r, -delta, delta)
    curv = weight * (np.abs(r) <= delta)
    p1, p2, p3 = e1 / s, e2 / s, e3 / s
    J_RxPx5 = np.stack([p1, p2, p3, -p1 * zn, -p2 * zd], axis=-1)
    g = np.einsum("rp,rpi->ri", psi, J_RxPx5)
    H = np.einsum("rp,rpi,rpj->rij", curv - psi, J_RxPx5, J_RxPx5, optimize=True)
    b1, b2 = psi * p1, psi * p2
    H[:, 0, 0] += b1.sum(1)
    H[:, 1, 1] += b2.sum(1)
    H[:, 2, 2] += (psi * p3).sum(1)
    H[:, 3, 3] += (b1 * zn * zn).sum(1)
    H[:, 4, 4] += (b2 * zd * zd).sum(1)
    c03, c14 = -(b1 * zn).sum(1), -(b2 * zd).sum(1)
    H[:, 0, 3] += c03
    H[:, 3, 0] += c03
    H[:, 1, 4] += c14
    H[:, 4, 1] += c14
    return f, g, H


def newton_polish(x_Rx5: np.ndarray, zn: np.ndarray, zd: np.ndarray, log_loss: np.ndarray,
                  weights: np.ndarray | None = None, *, delta: float = HUBER_DELTA,
                  penalty: float = 1.0, max_iter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Converge every row of x_Rx5 (internal coordinates, near an optimum) in float64 with
    damped Newton steps on the exact Hessian, all rows at once.

    The step is -(|H| + mu I)^-1 g, |H| the Hessian with its eigenvalues made positive (a
    saddle or a concave direction is stepped down, not up), mu per row shrinking 10x after a
    step that lowers the objective and growing 10x after one that does not (Levenberg-
    Marquardt). The Huber objective is piecewise quadratic in r, so once the points inside
    the quadratic zone settle, steps converge quadratically to rounding. A row stops when
    the decrease its step promises (or achieves) is below 1e-15 of the objective. Returns (x, objective) per row; rows never get worse.
    """
    x = np.array(x_Rx5, dtype=np.float64, copy=True)
    ll_all = np.atleast_2d(log_loss)
    w_all = np.ones((1, len(zn))) if weights is None else np.atleast_2d(weights)

    def rows_of(arr, idx):
        return arr if arr.shape[0] == 1 else arr[idx]

    f, g, H = _value_grad_hess_np(x, zn, zd, ll_all, w_all, delta, penalty)
    lam = np.full(len(x), 1e-10)
    active = np.isfinite(f)
    for _ in range(max_iter):
        idx = np.nonzero(active)[0]
        if not len(idx):
            break
        evals, evecs = np.linalg.eigh(H[idx])
        scale = np.max(np.abs(evals), axis=1, keepdims=True)
        inv = 1.0 / (np.abs(evals) + lam[idx, None] * scale + 1e-300)
        step = -np.einsum("rij,rj,rkj,rk->ri", evecs, inv, evecs, g[idx])
        x_try = x[idx] + step
        g_old = g[idx]
        f_try, g_try, H_try = _value_grad_hess_np(x_try, zn, zd, rows_of(ll_all, idx),
                                                  rows_of(w_all, idx), delta, penalty)
        better = np.isfinite(f_try) & (f_try < f[idx])
        gain = np.where(better, f[idx] - f_try, 0.0)
        acc = idx[better]
        x[acc], f[acc], g[acc], H[acc] = x_try[better], f_try[better], g_try[better], \
            H_try[better]
        lam[idx] = np.where(better, np.maximum(lam[idx] * 0.1, 1e-12), lam[idx] * 10.0)
        predicted = -0.5 * np.sum(g_old * step, axis=1)
        tiny = 1e-15 * np.abs(f[idx])
        done = (~better & (predicted <= tiny)) | (better & (gain <= 0.1 * tiny)) \
            | (lam[idx] > 1e6) | ~np.isfinite(f[idx])
        active[idx[done]] = False
    return x, f


SEARCH_ITERATIONS = 10  # float32 L-BFGS iterations every start gets before the cut
SEARCH_KEEP = 64  # starts, best after those iterations, that are run to convergence


def search_starts(x0: np.ndarray, zn: np.ndarray, zd: np.ndarray, log_loss: np.ndarray,
                  weights: np.ndarray | None = None, *, delta: float = HUBER_DELTA,
                  keep: int | None = SEARCH_KEEP,
                  iterations: int = SEARCH_ITERATIONS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The float32 search over starts (internal coordinates), by successive halving: every
    row gets `iterations` batched L-BFGS iterations, then only the `keep` lowest objectives
    continue to convergence (keep None: every row does).

    Most of the grid's starts end in the same few basins or stall far above them, yet the
    slowest rows set the batch's iteration count (median ~30, max ~250 on Chinchilla's data);
    after 10 iterations the global basin's rows already rank among the best, on Epoch's,
    Marin's and synthetic data with several local optima alike (tests/analysis/
    test_approach3.py checks it against the full search). Returns (x, objective,
    iterations) of the rows that continued, float64.
    """
    kw: dict[str, Any] = dict(delta=delta, dtype="float32", ftol=1e-6, gtol=1e-5)
    if keep is None or len(x0) <= keep:
        return batched_lbfgs(x0, zn, zd, log_loss, weights, **kw)
    x, f, n_iter = batched_lbfgs(x0, zn, zd, log_loss, weights, max_iter=iterations,
                                 compact=False, **kw)
    best = np.argsort(np.where(np.isfinite(f), f, np.inf), kind="stable")[:keep]
    x, f, more = batched_lbfgs(x[best], zn, zd, log_loss, weights, compact=False, **kw)
    return x, f, n_iter[best] + more


def fit_approach3(n_params: Any, n_tokens: Any, loss: Any, *, starts: np.ndarray | None = None,
                  delta: float = HUBER_DELTA, n_polish: int = 4,
                  overestimate_penalty: float = 1.0, pad_to: int = 0,
                  keep: int | None = SEARCH_KEEP) -> Approach3Result:
    """Fit L = E + A/N^alpha + B/D^beta by the summed-Huber log-loss objective.

    starts: rows (a, b, e, alpha, beta), default Chinchilla's 4,500-point grid; all are
    optimised at once (float32 search, `search_starts`: the `keep` best after 10 iterations
    go on to convergence, None: all), then the `n_polish` best distinct optima are polished
    in float64 by damped Newton steps on the exact Hessian (`newton_polish`, to rounding)
    and the lowest objective is returned.
    overestimate_penalty > 1: the asymmetric objective (`overestimate_weights`). The search
    over starts stays symmetric (it only ranks basins); twice as many basins are polished on
    the asymmetric objective. `objective` is then still the symmetric one (comparable across
    fits) and extra["penalised_objective"] is what was minimised.
    pad_to: pad the problem to the bucket of this many points (a rollout's or inner
    validation's subsets then run the full data's compiled program instead of compiling one
    per subset size).
    """
    if not (math.isfinite(overestimate_penalty) and overestimate_penalty > 0):
        raise UserError(f"overestimate_penalty: expected a positive number, got "
                        f"{overestimate_penalty}")
    penalty = float(overestimate_penalty)
    if penalty != 1.0:
        n_polish *= 2
    n, d, l = check_points(n_params, n_tokens, loss)
    log_n, log_d, log_l = np.log(n), np.log(d), np.log(l)
    sc = _Scaling.of(log_n, log_d)
    zn, zd = (log_n - sc.mu_n) / sc.sd_n, (log_d - sc.mu_d) / sc.sd_d
    starts = chinchilla_grid() if starts is None else np.atleast_2d(np.asarray(starts, float))
    # The search over starts runs in float32 (XLA's float64 exp/log are ~7x slower on CPU);
    # it only ranks basins. The reported optimum comes from the float64 polish below.
    x, f, n_iter = search_starts(sc.to_internal(starts),
                                 *_pad_points(zn, zd, log_l, None, pad_to), delta=delta,
                                 keep=keep)
    f = np.where(np.isfinite(f), f, np.inf)
    order = np.argsort(f, kind="stable")
    picked: list[int] = []
    for i in order:
        if len(picked) >= n_polish or not np.isfinite(f[i]):
            break
        if any(np.max(np.abs(x[i] - x[p])) < 1e-3 for p in picked):
            continue
        picked.append(int(i))
    if not picked:
        raise RunFailed("approach3: no start reached a finite objective")
    xp, fp = newton_polish(x[picked], zn, zd, log_l, delta=delta, penalty=penalty)
    fp = np.where(np.isfinite(fp), fp, np.inf)
    theta = sc.to_theta(xp[int(np.argmin(fp))])
    extra = {"batched_best_objective": float(f[order[0]]),
             "median_iterations": float(np.median(n_iter))}
    if penalty != 1.0:
        extra.update(overestimate_penalty=penalty,
                     penalised_objective=objective(theta, n, d, l, delta, penalty))
    return Approach3Result.from_theta(
        theta, objective(theta, n, d, l, delta), len(n), method="lbfgs", n_starts=len(starts),
        extra=extra)


def local_starts(theta: np.ndarray, scaling: _Scaling) -> np.ndarray:
    """Five internal-coordinate starts around theta: itself and the exponents scaled by 0.7
    and 1.4 (each with the term's level at the data's centre held fixed), so a resample or a
    simulated data set whose optimum moved along the flat valley is still found."""
    x = scaling.to_internal(np.asarray(theta, dtype=np.float64))
    rows = [x]
    for j in (3, 4):
        for factor in (0.7, 1.4):
            y = x.copy()
            y[j] *= factor
            rows.append(y)
    return np.stack(rows)


def refit_many(n_params: Any, n_tokens: Any, log_loss_GxP: np.ndarray,
               weights_GxP: np.ndarray | None, center: np.ndarray, *,
               delta: float = HUBER_DELTA, pad_to: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fit G data sets sharing the (N, D) design at once: G rows of log losses (simulations)
    and/or of point weights (bootstrap multiplicities; None = all 1).

    Starts: `local_starts(center)` per data set (center = (a, b, e, alpha, beta) of the
    full-data fit or of the true law). A float32 batched search picks each data set's best
    start; float64 damped Newton steps (`newton_polish`) then converge it. Returns (theta_Gx5,
    summed-Huber objective_G), both float64.
    """
    n = np.asarray(n_params, dtype=np.float64)
    d = np.asarray(n_tokens, dtype=np.float64)
    log_n, log_d = np.log(n), np.log(d)
    sc = _Scaling.of(log_n, log_d)
    zn, zd = (log_n - sc.mu_n) / sc.sd_n, (log_d - sc.mu_d) / sc.sd_d
    ll = np.atleast_2d(np.asarray(log_loss_GxP, dtype=np.float64))
    n_groups = max(ll.shape[0], 1 if weights_GxP is None else np.shape(weights_GxP)[0])
    starts = local_starts(center, sc)
    k = len(starts)
    x0 = np.tile(starts, (n_groups, 1))

    def rows(arr):  # (G, P) -> (G*k, P); a single shared row stays (1, P)
        arr = np.atleast_2d(arr)
        return arr if arr.shape[0] == 1 else np.repeat(arr, k, axis=0)

    w = None if weights_GxP is None else rows(np.asarray(weights_GxP, dtype=np.float64))
    x, f, _ = batched_lbfgs(x0, *_pad_points(zn, zd, rows(ll), w, pad_to), delta=delta,
                            dtype="float32", ftol=1e-6, gtol=1e-5, n_groups=n_groups)
    f = np.where(np.isfinite(f), f, np.inf).reshape(n_groups, k)
    best = x.reshape(n_groups, k, N_PARAMS)[np.arange(n_groups), np.argmin(f, axis=1)]
    x, f = newton_polish(best, zn, zd, ll, weights_GxP, delta=delta)
    return sc.to_theta(x), f


def fit_vpnls(n_params: Any, n_tokens: Any, loss: Any, *, grid_size: int = 40,
              exponent_range: tuple[float, float] = (0.02, 2.0)) -> Approach3Result:
    """Variable projection: search (alpha, beta); (E, A, B) >= 0 by NNLS on the loss itself.

    A coarse grid of (alpha, beta) picks the start and Nelder-Mead refines it on the
    profiled residual sum of squares. `objective` is still the summed Huber of log
    residuals at the result (comparable with `fit_approach3`); `rss` is what was minimised.
    """
    from scipy.optimize import minimize, nnls

    n, d, l = check_points(n_params, n_tokens, loss)
    # Dividing the columns by their norms keeps NNLS well conditioned when N^-alpha is tiny.
    def solve(alpha: float, beta: float) -> tuple[float, np.ndarray]:
        if not (exponent_range[0] / 2 <= alpha <= 2 * exponent_range[1]
                and exponent_range[0] / 2 <= beta <= 2 * exponent_range[1]):
            return math.inf, np.zeros(3)
        cols = np.stack([np.ones_like(n), n**-alpha, d**-beta], axis=1)
        norms = np.linalg.norm(cols, axis=0)
        coef, resid = nnls(cols / norms, l)
        return resid**2, coef / norms

    grid = np.linspace(*exponent_range, grid_size)
    rss = np.array([[solve(al, be)[0] for be in grid] for al in grid])
    i, j = np.unravel_index(np.argmin(rss), rss.shape)
    res = minimize(lambda p: solve(*p)[0], [grid[i], grid[j]], method="Nelder-Mead",
                   options=dict(xatol=1e-7, fatol=1e-14, maxiter=2000))
    alpha, beta = (float(v) for v in res.x)
    best_rss, (E, A, B) = solve(alpha, beta)
    if min(E, A, B) <= 0:
        theta_obj = math.nan
    else:
        theta_obj = objective([math.log(A), math.log(B), math.log(E), alpha, beta], n, d, l)
    return Approach3Result(A=float(A), B=float(B), E=float(E), alpha=alpha, beta=beta,
                           objective=theta_obj, n_points=len(n), method="vpnls",
                           n_starts=grid_size * grid_size, extra={"rss": float(best_rss)})


__all__ = ["LAW_KEYS", "Approach3Result", "HUBER_DELTA", "ParametricLaw", "batched_lbfgs",
           "check_points", "chinchilla_grid", "fit_approach3", "fit_vpnls", "huber",
           "local_starts", "newton_polish", "objective", "refit_many", "search_starts"]

