"""Does the best learning rate transfer across width? sp vs mup at tiny scale.

For each parameterisation ("sp", "mup" with base width = the smallest width) and width
(d_model; 2 layers, the shape recipe's heads and d_ff), trains a byte-level model on the
stdlib corpus for a fixed number of AdamW steps (the trainer's own `build_optimizer`:
cosine schedule, 5% warmup, weight decay 0.1, clipping 1.0) at each learning rate of a
grid, and reports the held-out loss. The peak lr enters as a traced multiplier of the
optimizer's updates (the schedule is linear in it), so each (parameterisation, width)
compiles once. Prints a table and appends it to BENCHMARKS.md. Usage:
    .venv/bin/python bench/mup_lr_transfer.py [--steps 300] [--widths 32,64,128] [--no-write]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bookkeeping import machine  # noqa: E402

from scaling.config import DataConfig, OptimConfig, RunConfig, ScheduleConfig  # noqa: E402
from scaling.data import load_tokens  # noqa: E402
from scaling.model import Transformer, loss_and_metrics  # noqa: E402
from scaling.shapes import make_config  # noqa: E402
from scaling.train_step import build_optimizer, decay_mask  # noqa: E402

SEQ, BATCH, N_LAYERS, EVAL_SEQS = 64, 8, 2, 64


def train_losses(train, valid, width, parameterization, base, lrs, steps, seed=0):
    cfg = make_config(width, N_LAYERS, 256, SEQ)
    if parameterization == "mup":
        cfg = dataclasses.replace(cfg, parameterization="mup", base_width=base)
    run = RunConfig(model=cfg, optim=OptimConfig(lr=1.0),
                    schedule=ScheduleConfig(kind="cosine", warmup_steps=max(1, steps // 20)),
                    n_steps=steps)
    graphdef, params0, rest = nnx.split(Transformer(cfg, rngs=nnx.Rngs(seed)), nnx.Param, ...)
    tx = build_optimizer(run, decay_mask(params0))
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, train.shape[0] - SEQ - 1, size=(steps, BATCH))
    batches = jnp.asarray(np.stack([[train[s:s + SEQ + 1] for s in row] for row in starts]))
    eval_starts = np.linspace(0, valid.shape[0] - SEQ - 2, EVAL_SEQS).astype(int)
    eval_batch = jnp.asarray(np.stack([valid[s:s + SEQ + 1] for s in eval_starts]))

    def loss(p, batch):
        return loss_and_metrics(nnx.merge(graphdef, p, rest), batch)[1]["ce"]

    @jax.jit
    def train_and_eval(lr):
        def one(carry, batch):
            p, opt = carry
            grads = jax.grad(loss)(p, batch)
            updates, opt = tx.update(grads, opt, p)
            updates = jax.tree.map(lambda u: u * lr, updates)  # lr-1 schedule x peak lr
            return (optax.apply_updates(p, updates), opt), None

        (p, _), _ = jax.lax.scan(one, (params0, tx.init(params0)), batches)
        return loss(p, eval_batch)

    return [float(train_and_eval(jnp.float32(lr))) for lr in lrs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--widths", default="32,64,128")
    parser.add_argument("--lrs", default="1e-3,3e-3,1e-2,3e-2,1e-1")
    parser.add_argument("--note", default="", help="a sentence for the BENCHMARKS entry")
    parser.add_argument("--no-write", action="store_true", help="do not append to BENCHMARKS.md")
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    lrs = [float(x) for x in args.lrs.split(",")]
    data = load_tokens(DataConfig(source="stdlib", tokenizer="bytes"), seq_len=SEQ)
    train, valid = np.asarray(data.train), np.asarray(data.valid)
    rows, best = [], {}
    for par in ("sp", "mup"):
        for w in widths:
            losses = train_losses(train, valid, w, par, widths[0], lrs, args.steps)
            best[(par, w)] = lrs[int(np.argmin(losses))]
            rows.append(f"| {par} | {w} | " + " | ".join(f"{x:.3f}" for x in losses)
                        + f" | {best[(par, w)]:g} |")
            print(rows[-1], flush=True)
    spread = {par: max(best[(par, w)] for w in widths) / min(best[(par, w)] for w in widths)
              for par in ("sp", "mup")}
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join([
        f"\n## muP learning-rate transfer at tiny scale ({when})\n",
        f"`bench/mup_lr_transfer.py --steps {args.steps}`: byte-level stdlib, {N_LAYERS} layers, "
        f"seq {SEQ}, batch {BATCH}, {args.steps} AdamW steps (cosine, 5% warmup, wd 0.1), "
        f"held-out cross-entropy (nats/byte) of {EVAL_SEQS} sequences, one seed; mup's base "
        f"width is {widths[0]}. Machine: {machine()}. jax {jax.__version__}. {args.note}\n",
        "| param | d_model | " + " | ".join(f"lr {x:g}" for x in lrs) + " | best lr |",
        "|---|---|" + "---|" * (len(lrs) + 1),
        *rows,
        f"\nBest lr across widths {widths[0]}-{widths[-1]}: spread (max/min) {spread['sp']:g}x "
        f"under sp, {spread['mup']:g}x under mup (grid step {lrs[1] / lrs[0]:.3g}x).\n",
    ])
    print(text)
    if not args.no_write:
        with open(REPO / "BENCHMARKS.md", "a", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
