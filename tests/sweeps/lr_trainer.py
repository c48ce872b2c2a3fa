"""A stand-in for `scaling train RUN_DIR` whose loss has a known learning-rate optimum.

eval_loss = 2 + 0.05 * (ln lr - ln lr*)^2 + a hash-derived jitter of at most 1e-4, with
lr*(N, D) = 1e-2 * (N / 1e4)^-0.4 * (D / 1e6)^0.15, N the total parameters and D the tokens of
the run (so tuning tests know the law they must recover). lr > 1 diverges.

With ``--batch`` before the run dir the loss also has a known batch optimum:
eval_loss = 2 + 0.05 * (ln lr - ln lr*(N, D, B))^2 + 0.02 * (ln B - ln B*(C))^2 + jitter, with
lr*(N, D, B) = lr*(N, D) * (B / 256)^0.5 and B*(C) = 256 * (C / 1e10)^0.25 tokens per step
(B: the run's tokens per step, C: its budget).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

from scaling import runs

LAW = (1e-2, -0.4, 0.15)
BATCH_LR_EXP = 0.5  # lr* grows as B^0.5 (with --batch)
BATCH_LAW = (256.0, 0.25)  # B*(C) = 256 (C / 1e10)^0.25 tokens per step (with --batch)


def true_lr(n_params: float, n_tokens: float) -> float:
    coef, a, b = LAW
    return coef * (n_params / 1e4) ** a * (n_tokens / 1e6) ** b


def true_lr_at_batch(n_params: float, n_tokens: float, batch_tokens: float) -> float:
    return true_lr(n_params, n_tokens) * (batch_tokens / 256) ** BATCH_LR_EXP


def true_batch(flops: float) -> float:
    coef, q = BATCH_LAW
    return coef * (flops / 1e10) ** q


def main() -> int:
    run_dir = Path(sys.argv[-1])
    cfg = runs.read_config_json(run_dir)
    lr = cfg["optim"]["lr"]
    if lr > 1.0:
        runs.write_status(run_dir, "diverged", reason="loss is nan at step 1")
        return 1
    n, d = cfg["param_counts"]["total"], cfg["n_tokens"]
    jitter = int(hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:8], 16)
    if "--batch" in sys.argv[1:-1]:
        b = cfg["batch_size"] * cfg["model"]["seq_len"]
        loss = (2 + 0.05 * math.log(lr / true_lr_at_batch(n, d, b)) ** 2
                + 0.02 * math.log(b / true_batch(cfg["budget"])) ** 2)
    else:
        loss = 2 + 0.05 * math.log(lr / true_lr(n, d)) ** 2
    loss += 1e-4 * jitter / 16**8
    runs.write_result(run_dir, {"eval_loss": loss, "n_tokens": d, "steps": cfg["n_steps"]})
    runs.write_status(run_dir, "done", step=cfg["n_steps"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
