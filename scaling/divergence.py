"""When a run's loss says it will not recover: the trainer's divergence rules.

A run diverges at the first step whose loss or gradient norm is not finite, or once its
loss has stayed more than DIVERGENCE_NATS above its start (the mean loss of its first
START_LOSS_STEPS steps) for DIVERGENCE_PATIENCE consecutive steps. The monitor's counters
go into every checkpoint (`to_meta`), so a resumed run decides exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

DIVERGENCE_NATS = 2.0  # a loss this far above its start ...
DIVERGENCE_PATIENCE = 10  # ... for this many consecutive steps is a divergence
START_LOSS_STEPS = 5  # the "start" is the mean loss of the run's first steps


@dataclass(frozen=True)
class Divergence:
    step: int  # 1-based, as in metrics.jsonl
    reason: str


@dataclass
class DivergenceMonitor:
    """Feed it every step's loss and gradient norm in order; `observe` says when to stop."""

    n_steps: int  # a run shorter than START_LOSS_STEPS takes its start from all its steps
    first_losses: list[float] = field(default_factory=list)
    start_loss: float | None = None
    over_count: int = 0  # consecutive steps above start_loss + DIVERGENCE_NATS

    @classmethod
    def from_meta(cls, meta: dict, n_steps: int) -> DivergenceMonitor:
        return cls(n_steps, list(meta.get("first_losses", [])), meta.get("start_loss"),
                   int(meta.get("over_count", 0)))

    def to_meta(self) -> dict:
        return {"start_loss": self.start_loss, "first_losses": list(self.first_losses),
                "over_count": self.over_count}

    def observe(self, step: int, loss: float, grad_norm: float) -> Divergence | None:
        """The divergence that `step` (1-based) completes, or None."""
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            return Divergence(step, f"non-finite loss ({loss}) or grad norm ({grad_norm}) "
                                    f"at step {step}")
        if self.start_loss is None:
            self.first_losses.append(loss)
            if len(self.first_losses) >= min(START_LOSS_STEPS, self.n_steps):
                self.start_loss = float(np.mean(self.first_losses))
            return None
        if not loss > self.start_loss + DIVERGENCE_NATS:
            self.over_count = 0
            return None
        self.over_count += 1
        if self.over_count < DIVERGENCE_PATIENCE:
            return None
        return Divergence(step, f"loss {loss:.3f} more than {DIVERGENCE_NATS} nats above its "
                                f"start ({self.start_loss:.3f}) for {DIVERGENCE_PATIENCE} steps, "
                                f"at step {step}")
