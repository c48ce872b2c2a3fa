"""Learning-rate schedules as pure functions of the (0-based) optimizer step.

Step s is the update that turns the parameters after s updates into those after s + 1,
so a run of `n_steps` uses s = 0 .. n_steps - 1. Every schedule is written with `jnp`
operations only, so the same function gives a Python-checkable value for an int step
and traces inside the jitted training step (where optax passes its update count).

- cosine: linear warmup, then a half cosine from the peak down to `final_lr_frac * peak`
  reached at s = n_steps (Chinchilla: the decay length must match the run's own horizon).
- constant: linear warmup, then the peak.
- wsd: warmup, a stable phase at the peak, then a 1-sqrt cooldown to zero
  (Hägele et al. 2024) over the last `decay_frac` of the run; with
  `stable_steps` set the cooldown starts exactly there, which is what makes a WSD *branch*:
  every branch shares the stable prefix (same learning rates, bit for bit) and differs only
  in its own cooldown, so it can start from the stable run's checkpoint at `stable_steps`.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from scaling.config import SCHEDULES, ScheduleConfig
from scaling.errors import UserError


def validate(sched: ScheduleConfig, n_steps: int) -> None:
    """One-line UserError for a schedule that cannot describe a run of `n_steps`."""
    if sched.kind not in SCHEDULES:
        raise UserError(f"schedule.kind: expected one of {', '.join(SCHEDULES)}, got {sched.kind!r}")
    if not 0 <= sched.warmup_steps <= n_steps:
        raise UserError(f"schedule.warmup_steps: expected 0..n_steps ({n_steps}), got {sched.warmup_steps}")
    if not 0.0 <= sched.final_lr_frac <= 1.0:
        raise UserError(f"schedule.final_lr_frac: expected a fraction in [0, 1], got {sched.final_lr_frac}")
    if sched.kind == "wsd":
        if not 0.0 < sched.decay_frac <= 1.0:
            raise UserError(f"schedule.decay_frac: expected a fraction in (0, 1], got {sched.decay_frac}")
        if sched.stable_steps is not None and not sched.warmup_steps <= sched.stable_steps <= n_steps:
            raise UserError(
                f"schedule.stable_steps: expected warmup_steps..n_steps ({sched.warmup_steps}.."
                f"{n_steps}), got {sched.stable_steps}")


def decay_start(sched: ScheduleConfig, n_steps: int) -> int:
    """First step of the WSD cooldown (== n_steps when there is none)."""
    if sched.stable_steps is not None:
        return int(sched.stable_steps)
    return n_steps - int(round(sched.decay_frac * n_steps))


# The numbers a schedule reads besides its kind and peak: the jitted step takes them as
# arguments (scaling.train_step), so runs of one shape at other budgets share its program.
SCHEDULE_SCALARS = ("n_steps", "warmup_steps", "decay_start", "final_lr_frac")


def schedule_scalars(sched: ScheduleConfig, n_steps: int) -> dict[str, float]:
    """SCHEDULE_SCALARS of a run of `n_steps`, the integers worked out on the host."""
    return {"n_steps": float(n_steps), "warmup_steps": float(sched.warmup_steps),
            "decay_start": float(decay_start(sched, n_steps)),
            "final_lr_frac": float(sched.final_lr_frac)}


def scheduled_lr(step, kind: str, peak_lr, scalars):
    """Learning rate at 0-based `step` of a `kind` schedule; `peak_lr` and `scalars`
    (SCHEDULE_SCALARS) may be Python numbers or traced values. Returns a f32 scalar."""
    s = jnp.asarray(step, jnp.float32)
    n_steps, warm, start, frac = (jnp.asarray(scalars[k], jnp.float32) for k in SCHEDULE_SCALARS)
    # (s + 1) / warmup: the first update already moves, the last warmup step is at the peak.
    warmup_factor = jnp.where(warm > 0, jnp.minimum(1.0, (s + 1.0) / jnp.maximum(warm, 1.0)), 1.0)
    if kind == "constant":
        body = jnp.float32(1.0)
    elif kind == "cosine":
        progress = jnp.clip((s - warm) / jnp.maximum(1.0, n_steps - warm), 0.0, 1.0)
        body = frac + (1.0 - frac) * 0.5 * (1.0 + jnp.cos(math.pi * progress))
    elif kind == "wsd":
        progress = jnp.clip((s - start) / jnp.maximum(1.0, n_steps - start), 0.0, 1.0)
        body = 1.0 - jnp.sqrt(progress)
    else:
        raise UserError(f"schedule.kind: expected one of {', '.join(SCHEDULES)}, got {kind!r}")
    return (peak_lr * warmup_factor * body).astype(jnp.float32)


def learning_rate(step, *, peak_lr: float, n_steps: int, sched: ScheduleConfig):
    """Learning rate at 0-based `step` (int or int array) of a run of `n_steps`; f32."""
    return scheduled_lr(step, sched.kind, peak_lr, schedule_scalars(sched, n_steps))


def branch_schedule(stable: ScheduleConfig, *, n_steps: int) -> ScheduleConfig:
    """The WSD branch of `stable`'s warmup+stable phase that ends after `n_steps` updates,
    cooling down over its last `stable.decay_frac` (stable_steps = where that starts)."""
    start = n_steps - int(round(stable.decay_frac * n_steps))
    return ScheduleConfig(kind="wsd", warmup_steps=stable.warmup_steps,
                          final_lr_frac=stable.final_lr_frac, decay_frac=stable.decay_frac,
                          stable_steps=start)
