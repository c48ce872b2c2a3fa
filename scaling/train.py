"""The training loop: one run directory in, metrics/checkpoints/result out.

`train_run(run_dir)` trains (or resumes) the run described by `run_dir/config.json`:

- the training state is a pure pytree (params as an `nnx.State`, the optax state) and one
  jitted, pure function advances it by k steps (`lax.scan` over k optimizer steps, each
  a `lax.scan` over its gradient-accumulation micro-batches) with the state donated;
  k ("steps per dispatch") grows for tiny models so a dispatch does enough work to hide
  the Python/dispatch overhead. k is a deterministic function of the config and the
  backend, and chunk boundaries are aligned to global step numbers, so a resumed run
  cuts its steps into exactly the same chunks as an uninterrupted one;
- AdamW (optax; decoupled weight decay on matrices only, global-norm clipping), the LR
  schedule from `scaling.schedules`, bf16 compute with f32 master weights on accelerators,
  f32 on CPU; on CPU the layer scan is unrolled (CPU_UNROLL_MAX_LAYERS) and the process
  runs with the malloc tunable of `scaling.host_env` (set by `scaling train`);
- metrics are fetched one dispatch behind (the host never waits for the step it just
  dispatched); `metrics.jsonl` gets one line per `log_every` steps and at evals;
- a non-finite loss, or a loss more than DIVERGENCE_NATS above its start for
  DIVERGENCE_PATIENCE consecutive steps, marks the run "diverged" and stops it;
- SIGTERM (or `max_steps`) checkpoints and returns; the run stays "pending" and resumes.

Test hook: with SCALING_FAULT_NAN_AT_STEP=K in the environment, the update that completes
step K (1-based, as in metrics.jsonl) gets a NaN loss and NaN gradients, so reliability
tests can inject a numerical fault. Without the variable the hook is not even traced.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import sys
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from scaling import mesh as mesh_lib
from scaling import runs
from scaling.checkpoint import CHECKPOINT_DIR, Checkpointer, abstract_like
from scaling.config import RunConfig
from scaling.errors import UserError
from scaling.fileio import append_jsonl, read_jsonl
from scaling.schedules import learning_rate, make_schedule

FAULT_ENV = "SCALING_FAULT_NAN_AT_STEP"
DIVERGENCE_NATS = 2.0  # a loss this far above its start ...
DIVERGENCE_PATIENCE = 10  # ... for this many consecutive steps is a divergence
START_LOSS_STEPS = 5  # the "start" is the mean loss of the run's first steps
HEARTBEAT_S = 10.0
# Work per dispatch (FLOPs) below which several steps are scanned into one dispatch:
# about 0.5 s of CPU matmul time, 20 ms of accelerator time. Measured on 2 CPU cores, a
# 123K-parameter model at batch 16x256 ran 1.9x faster with 7 steps per dispatch than 1.
TARGET_DISPATCH_FLOPS = {"cpu": 5e10, "gpu": 4e12, "tpu": 4e12}
MAX_STEPS_PER_DISPATCH = 32

# Dense bf16 peak FLOP/s per chip by device_kind substring (first match wins; vendor
# datasheets). MFU is null for anything not listed here unless --peak-flops is given.
PEAK_FLOPS = (
    ("GH200", 989e12), ("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12),
    ("H800", 989e12), ("A100", 312e12), ("A800", 312e12), ("L40S", 362e12), ("L4", 121e12),
    ("B200", 2250e12), ("TPU v4", 275e12), ("TPU v5 lite", 197e12), ("TPU v5e", 197e12),
    ("TPU v5p", 459e12), ("TPU v5", 459e12), ("TPU v6 lite", 918e12), ("TPU v6e", 918e12),
)


def device_peak_flops(device=None) -> float | None:
    """Known bf16 dense peak FLOP/s of one device, or None (never guessed)."""
    device = jax.devices()[0] if device is None else device
    if device.platform == "cpu":
        return None
    kind = str(getattr(device, "device_kind", ""))
    for name, peak in PEAK_FLOPS:
        if name.lower() in kind.lower():
            return peak
    return None


def auto_steps_per_dispatch(flops_per_step: float, backend: str) -> int:
    target = TARGET_DISPATCH_FLOPS.get(backend, TARGET_DISPATCH_FLOPS["gpu"])
    return int(max(1, min(MAX_STEPS_PER_DISPATCH, round(target / max(flops_per_step, 1.0)))))


# ----------------------------------------------------------------------------- state


def _is_var(x) -> bool:
    return isinstance(x, nnx.Variable)


def decay_mask(abstract_params):
    """True for matrices (>= 2 axes besides the stacked "layers" axis): norms get no decay."""
    def one(v):
        names = v.get_metadata().get("out_sharding") or ()
        n_axes = len(v.get_value().shape) - sum(1 for n in names if n == "layers")
        return v.replace(n_axes >= 2)

    return jax.tree.map(one, abstract_params, is_leaf=_is_var)


def build_optimizer(cfg: RunConfig, mask) -> optax.GradientTransformation:
    o = cfg.optim
    schedule = make_schedule(cfg.schedule, peak_lr=o.lr, n_steps=cfg.n_steps)
    parts = [optax.clip_by_global_norm(o.grad_clip)] if o.grad_clip > 0 else []
    parts.append(optax.adamw(schedule, b1=o.beta1, b2=o.beta2, eps=o.eps,
                             weight_decay=o.weight_decay, mask=mask))
    if cfg.model.parameterization != "sp":  # muP's per-group rates (scaling.model)
        from scaling.model import lr_multipliers

        factors = lr_multipliers(mask, cfg.model)
        parts.append(optax.stateless(lambda updates, _: jax.tree.map(
            lambda u, f: u * f, updates, factors)))
    return optax.chain(*parts)


def compute_dtype_for(backend: str):
    return jnp.float32 if backend == "cpu" else jnp.bfloat16


# On CPU the layer scan is unrolled up to this depth: stacking every layer's saved
# activations into one buffer and slicing them back out cost 20-28% of a step at 2-32
# layers; compile time grows ~0.35 s per unrolled layer (16 s at 32), paid once per shape
# thanks to the compilation cache.
CPU_UNROLL_MAX_LAYERS = 32


def default_model_kwargs(backend: str, n_layers: int) -> dict:
    if backend == "cpu" and n_layers <= CPU_UNROLL_MAX_LAYERS:
        return {"scan_unroll": n_layers}
    return {}


class TrainState:
    """Everything built from (config, mesh): graph, optimizer, shardings, abstract target."""

    def __init__(self, cfg: RunConfig, mesh, *, compute_dtype=None, model_kwargs=None) -> None:
        from scaling.model import Transformer

        self.cfg, self.mesh = cfg, mesh
        backend = mesh.devices.flat[0].platform
        self.compute_dtype = compute_dtype_for(backend) if compute_dtype is None else compute_dtype
        kwargs = default_model_kwargs(backend, cfg.model.n_layers) | dict(model_kwargs or {})

        def build():
            with nnx.use_eager_sharding(False):
                return Transformer(cfg.model, rngs=nnx.Rngs(cfg.seed),
                                   compute_dtype=self.compute_dtype, **kwargs)

        self._build = build
        # Abstract first: shapes and logical axes without allocating anything.
        graphdef, abstract_params, rest = nnx.split(nnx.eval_shape(build), nnx.Param, ...)
        self.graphdef, self.rest = graphdef, rest
        self.tx = build_optimizer(cfg, decay_mask(abstract_params))
        self.param_shardings = mesh_lib.state_shardings(abstract_params, mesh)
        replicated = mesh_lib.replicated(mesh)
        self.replicated = replicated
        abstract_opt = jax.eval_shape(self.tx.init, abstract_params)
        self.opt_shardings = optax.tree_map_params(
            self.tx, lambda _, s: s, abstract_opt, self.param_shardings,
            transform_non_params=lambda _: replicated, is_leaf=_is_var)
        self.abstract = {
            "params": abstract_like(abstract_params, self.param_shardings),
            "opt_state": abstract_like(abstract_opt, self.opt_shardings),
            "rng": jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=replicated),
        }

    def init(self) -> dict:
        """Fresh state, created inside jit directly in its sharded layout."""
        tx = self.tx

        @partial(jax.jit, out_shardings=(self.param_shardings, self.opt_shardings, self.replicated))
        def init():
            _, params, _ = nnx.split(self._build(), nnx.Param, ...)
            return params, tx.init(params), jax.random.key_data(jax.random.key(self.cfg.seed))

        params, opt_state, rng = init()
        return {"params": params, "opt_state": opt_state, "rng": rng}

    def model(self, params) -> nnx.Module:
        return nnx.merge(self.graphdef, params, self.rest)


def make_step_fn(ts: TrainState, *, fault_step: int | None = None):
    """jit(params, opt_state, step0, batches_KxAxBxL1) -> (params, opt_state, ce_K, gnorm_K, lr_K)."""
    cfg, tx = ts.cfg, ts.tx
    z_loss = cfg.optim.z_loss
    from scaling.model import loss_and_metrics

    def loss_fn(params, batch_BxL1):
        loss, metrics = loss_and_metrics(ts.model(params), batch_BxL1, z_loss=z_loss)
        return loss, metrics["ce"]

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def one_step(carry, micro_AxBxL1):
        params, opt_state, step = carry
        n_micro = micro_AxBxL1.shape[0]
        if n_micro == 1:
            (_, ce), grads = grad_fn(params, micro_AxBxL1[0])
        else:
            def accumulate(acc, batch_BxL1):
                (_, ce_i), g_i = grad_fn(params, batch_BxL1)
                return jax.tree.map(jnp.add, acc, (g_i, ce_i)), None

            zeros = (jax.tree.map(jnp.zeros_like, params), jnp.zeros((), jnp.float32))
            (grads, ce), _ = jax.lax.scan(accumulate, zeros, micro_AxBxL1)
            grads = jax.tree.map(lambda g: g / n_micro, grads)
            ce = ce / n_micro
        if fault_step is not None:
            bad = step + 1 == fault_step
            ce = jnp.where(bad, jnp.nan, ce)
            grads = jax.tree.map(lambda g: jnp.where(bad, jnp.nan, g), grads)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        lr = learning_rate(step, peak_lr=cfg.optim.lr, n_steps=cfg.n_steps, sched=cfg.schedule)
        return (params, opt_state, step + 1), (ce, grad_norm, lr)

    def multi_step(params, opt_state, step0, batches_KxAxBxL1):
        (params, opt_state, _), (ce_K, gnorm_K, lr_K) = jax.lax.scan(
            one_step, (params, opt_state, step0), batches_KxAxBxL1)
        return params, opt_state, ce_K, gnorm_K, lr_K

    rep = ts.replicated
    return jax.jit(
        multi_step, donate_argnums=(0, 1),
        in_shardings=(ts.param_shardings, ts.opt_shardings, rep,
                      mesh_lib.batch_sharding(ts.mesh, 2, 4)),
        out_shardings=(ts.param_shardings, ts.opt_shardings, rep, rep, rep))


def make_eval_fn(ts: TrainState):
    from scaling.model import loss_and_metrics

    @partial(jax.jit, out_shardings=ts.replicated)
    def eval_sum(params, batch_BxL1):
        _, metrics = loss_and_metrics(ts.model(params), batch_BxL1)
        return metrics["ce"] * (batch_BxL1.shape[0] * (batch_BxL1.shape[1] - 1))

    return eval_sum


def evaluate(ts: TrainState, eval_fn, params, batches: list) -> float:
    """Mean held-out cross-entropy (nats/token) over the fixed eval batches."""
    shards = mesh_lib.n_data_shards(ts.mesh)
    total, count = 0.0, 0
    for batch in batches:
        batch = np.asarray(batch, np.int32)
        sharding = (mesh_lib.batch_sharding(ts.mesh, 0, 2) if batch.shape[0] % shards == 0
                    else ts.replicated)
        total += float(mesh_lib.fetch(eval_fn(params, mesh_lib.put_global(batch, sharding))))
        count += batch.shape[0] * (batch.shape[1] - 1)
    return total / max(count, 1)


# ----------------------------------------------------------------------------- helpers


def aligned_steps_per_dispatch(k: int, periods: tuple[int, ...]) -> int:
    """The largest divisor of the logging/eval/checkpoint periods' gcd that is <= k.

    Every distinct number of steps per dispatch is a separate XLA compilation (about a second
    each on CPU); with k dividing every period, dispatches are k steps long except near
    stop, a mark or an unaligned resume (see `_chunk_end`).
    """
    g = 0
    for p in periods:
        if p > 0:
            g = math.gcd(g, p)
    if g == 0:
        return k
    return max(d for d in range(1, min(k, g) + 1) if g % d == 0)


def _chunk_end(s: int, stop: int, k: int, periods: tuple[int, ...], marks: tuple[int, ...]) -> int:
    """End of the dispatch starting at step s: the next multiple of k or of any period,
    any mark, or stop, whichever comes first (aligned to global steps, so resumes agree).
    With k aligned to the periods, only marks, the stop and an unaligned resume cut a
    chunk short, so a run compiles few step functions; the cut chunks must stay scans of
    their own length (not single steps): XLA's code for a 1-step scan rounds differently,
    which would break the bit-identity of WSD branches and resumes."""
    end = min(stop, (s // k + 1) * k)
    for p in periods:
        if p > 0:
            end = min(end, (s // p + 1) * p)
    for m in marks:
        if s < m < end:
            end = m
    return end


def _is_multiple(step: int, period: int) -> bool:
    return period > 0 and step % period == 0


def _fmt_time(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _eng(x: float) -> str:
    for unit, scale in (("e", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


class _Terminate:
    """SIGTERM sets a flag the loop checks at every dispatch boundary."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> _Terminate:
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler, nothing to restore
            self._previous = None
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


# ----------------------------------------------------------------------------- entry points


def enable_compilation_cache(cache_dir=None) -> None:
    """Persist compiled steps under the data cache (a sweep compiles each shape once, not
    once per run); a no-op when the user configured a cache or SCALING_COMPILE_CACHE=0."""
    if os.environ.get("SCALING_COMPILE_CACHE", "1") == "0" or jax.config.jax_compilation_cache_dir:
        return
    from scaling.data import default_cache_dir

    base = Path(cache_dir) if cache_dir else default_cache_dir()
    jax.config.update("jax_compilation_cache_dir", str(base / "jax-compile"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def train_run(run_dir: str | os.PathLike, *, peak_flops: float | None = None,
              max_steps: int | None = None, progress: bool = True,
              steps_per_dispatch: int | None = None, cache_dir: str | os.PathLike | None = None,
              keep_steps: tuple[int, ...] = (), fsdp: int = 1) -> dict:
    """Train or resume the run in `run_dir`; returns the result dict (see module docstring).

    Returns result.json's content when the run finishes; otherwise {"state": "diverged" |
    "stopped", "step": int, "reason": str} (diverged: status.json says so; stopped: SIGTERM
    or max_steps, checkpointed and left "pending" to resume). `keep_steps`: steps whose
    checkpoints are saved and never rotated out (the branch points of a WSD stable run).
    """
    mesh_lib.initialize_distributed()
    enable_compilation_cache(cache_dir)
    run_dir = Path(run_dir)
    cfg = runs.load_run_config(run_dir)
    if jax.process_index() != 0:  # one lock per run, held by the process that writes files
        return _Trainer(run_dir, cfg, peak_flops=peak_flops, max_steps=max_steps,
                        progress=False, steps_per_dispatch=steps_per_dispatch,
                        cache_dir=cache_dir, keep_steps=keep_steps, fsdp=fsdp, lock=None).run()
    try:
        lock = runs.RunLock(run_dir)
        lock.__enter__()
    except runs.RunLocked as e:
        raise UserError(f"{run_dir}: {e}; is it already training?") from None
    try:
        return _Trainer(run_dir, cfg, peak_flops=peak_flops, max_steps=max_steps,
                        progress=progress, steps_per_dispatch=steps_per_dispatch,
                        cache_dir=cache_dir, keep_steps=keep_steps, fsdp=fsdp, lock=lock).run()
    finally:
        lock.__exit__(None, None, None)


class _Trainer:
    def __init__(self, run_dir: Path, cfg: RunConfig, *, peak_flops, max_steps, progress,
                 steps_per_dispatch, cache_dir, keep_steps, fsdp, lock) -> None:
        self.run_dir, self.cfg, self.lock = run_dir, cfg, lock
        self.peak_flops_arg, self.max_steps, self.progress = peak_flops, max_steps, progress
        self.steps_per_dispatch, self.cache_dir = steps_per_dispatch, cache_dir
        self.keep_steps = tuple(sorted(int(s) for s in keep_steps))
        self.fsdp = fsdp
        self.main = jax.process_index() == 0

    # -- output

    def say(self, msg: str) -> None:
        if self.progress and self.main:
            print(msg, file=sys.stderr, flush=True)

    def status(self, state: str, **fields) -> None:
        if self.main:
            runs.write_status(self.run_dir, state, **fields)

    # -- the run

    def run(self) -> dict:
        try:
            return self._run()
        except UserError:
            raise
        except BaseException as e:
            reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            self.status("failed", reason=reason, pid=None)
            raise

    def _run(self) -> dict:
        from scaling import data as data_lib
        from scaling.flops import flops_all, param_counts

        cfg, run_dir = self.cfg, self.run_dir
        mesh = mesh_lib.make_mesh(self.fsdp)
        mesh_lib.check_batch(cfg.batch_size, cfg.grad_accum, mesh)
        if cfg.n_steps < 1:
            raise UserError(f"n_steps: expected a positive integer, got {cfg.n_steps}")
        make_schedule(cfg.schedule, peak_lr=cfg.optim.lr, n_steps=cfg.n_steps)  # validates
        existing = runs.read_result(run_dir)
        if existing is not None and runs.read_status(run_dir)["state"] == "done":
            self.say(f"{run_dir}: already done (eval_loss {existing.get('eval_loss')})")
            return existing

        token_data = data_lib.load_tokens(cfg.data, seq_len=cfg.model.seq_len,
                                          cache_dir=self.cache_dir)
        if token_data.vocab_size > cfg.model.vocab_size:
            raise UserError(f"model.vocab_size: expected at least the tokenizer's "
                            f"{token_data.vocab_size}, got {cfg.model.vocab_size}")
        self._record_corpus_hash(token_data.corpus_hash)

        counts = param_counts(cfg.model)
        by_convention = flops_all(cfg.model)
        fpt = by_convention.get(cfg.convention)
        if fpt is None:
            raise UserError(f"convention: expected one of {', '.join(by_convention)}, got {cfg.convention!r}")
        tokens_per_step = cfg.batch_size * cfg.model.seq_len
        n_tokens = cfg.n_tokens
        backend = jax.default_backend()
        k = self.steps_per_dispatch or auto_steps_per_dispatch(fpt * tokens_per_step, backend)
        k = aligned_steps_per_dispatch(k, (cfg.log_every, cfg.eval_every, cfg.checkpoint_every))
        n_dev = len(jax.devices())
        peak = self.peak_flops_arg if self.peak_flops_arg else device_peak_flops()
        self.say(
            f"run {run_dir.name}: N={counts['total']:,} params ({counts['non_embedding']:,} "
            f"non-embedding), D={n_tokens:,} tokens, C={fpt * n_tokens:.3e} FLOPs ({cfg.convention}), "
            f"batch {cfg.batch_size}x{cfg.model.seq_len} (grad_accum {cfg.grad_accum}), "
            f"lr {cfg.optim.lr:g} {cfg.schedule.kind}, {cfg.n_steps} steps, {n_dev} {backend} "
            f"device(s), {k} step(s)/dispatch")

        ts = TrainState(cfg, mesh)
        fault = os.environ.get(FAULT_ENV)
        step_fn = make_step_fn(ts, fault_step=int(fault) if fault else None)
        eval_fn = make_eval_fn(ts)
        eval_batches = data_lib.eval_batches(token_data.valid, eval_tokens=cfg.data.eval_tokens,
                                             batch_size=cfg.batch_size, seq_len=cfg.model.seq_len)

        ckpt = Checkpointer(run_dir / CHECKPOINT_DIR, keep_steps=self.keep_steps)
        restored = ckpt.restore(ts.abstract)
        if restored is None:
            state, meta, step = ts.init(), {}, 0
        else:
            step, state, meta = restored
            self.say(f"resuming from step {step}")
            _truncate_metrics(run_dir / runs.METRICS_FILE, step, self.main)
        params, opt_state, rng = state["params"], state["opt_state"], state["rng"]
        elapsed_before = float(meta.get("wall_time_s", 0.0))
        start_loss = meta.get("start_loss")
        first_losses: list[float] = list(meta.get("first_losses", []))
        over = int(meta.get("over_count", 0))

        stop = cfg.n_steps if not self.max_steps else min(cfg.n_steps, int(self.max_steps))
        periods = (k, cfg.log_every, cfg.eval_every, cfg.checkpoint_every)
        marks = tuple(s for s in self.keep_steps if step < s < stop)
        self.status("running", step=step, reason=None)
        t_start = time.time()
        last_beat = t_start
        # losses since the last metrics line (carried over a resume, so lines agree with an
        # uninterrupted run's)
        log_state = {"since": list(meta.get("log_since", [])), "t": None,
                     "step": int(meta.get("log_step", step)), "tstep": step}
        tput = {"t0": None, "s0": step}  # steady-state throughput baseline
        diverged: dict | None = None

        def host_batches(s0: int, s1: int) -> np.ndarray:
            arr = np.stack([data_lib.train_batch(token_data.train, seed=cfg.seed, step=s,
                                                 batch_size=cfg.batch_size,
                                                 seq_len=cfg.model.seq_len) for s in range(s0, s1)])
            return arr.astype(np.int32).reshape(
                s1 - s0, cfg.grad_accum, cfg.batch_size // cfg.grad_accum, cfg.model.seq_len + 1)

        def process(chunk, extra: dict | None = None) -> None:
            """Fetch a dispatched chunk's metrics, check divergence, write log lines."""
            nonlocal start_loss, over, diverged
            s0, s1, ce_dev, gn_dev, lr_dev = chunk
            ce_K, gn_K, lr_K = (mesh_lib.fetch(x) for x in (ce_dev, gn_dev, lr_dev))
            now = time.time()
            if tput["t0"] is None:  # first fetch: compile time is behind us from here on
                tput["t0"], tput["s0"] = now, s1
            for i, (ce, gn) in enumerate(zip(ce_K.tolist(), gn_K.tolist(), strict=True)):
                s_done = s0 + i + 1
                if diverged is not None:
                    break
                if not math.isfinite(ce) or not math.isfinite(gn):
                    diverged = {"step": s_done, "reason": f"non-finite loss ({ce}) or grad norm "
                                f"({gn}) at step {s_done}"}
                    break
                if start_loss is None:
                    first_losses.append(ce)
                    if len(first_losses) >= min(START_LOSS_STEPS, cfg.n_steps):
                        start_loss = float(np.mean(first_losses))
                elif ce > start_loss + DIVERGENCE_NATS:
                    over += 1
                    if over >= DIVERGENCE_PATIENCE:
                        diverged = {"step": s_done, "reason": (
                            f"loss {ce:.3f} more than {DIVERGENCE_NATS} nats above its start "
                            f"({start_loss:.3f}) for {DIVERGENCE_PATIENCE} steps, at step {s_done}")}
                else:
                    over = 0
                log_state["since"].append(ce)
            last_gn = float(gn_K[-1])
            if diverged is None and (_is_multiple(s1, cfg.log_every) or extra or s1 == cfg.n_steps):
                dt = now - (log_state["t"] or t_start)
                tokens_per_s = (s1 - log_state["tstep"]) * tokens_per_step / max(dt, 1e-9)
                achieved = tokens_per_s * fpt
                record = {
                    "step": s1, "tokens": s1 * tokens_per_step, "flops": s1 * tokens_per_step * fpt,
                    "train_loss": float(np.mean(log_state["since"])),
                    "lr": float(lr_K[-1]),
                    "grad_norm": last_gn, "tokens_per_s": tokens_per_s,
                    "mfu": achieved / (peak * n_dev) if peak else None,
                }
                record.update(extra or {})
                if self.main:
                    append_jsonl(run_dir / runs.METRICS_FILE, record)
                remaining = (stop - s1) * tokens_per_step / max(tokens_per_s, 1e-9)
                line = (f"step {s1}/{cfg.n_steps}  loss {record['train_loss']:.4f}  "
                        f"lr {record['lr']:.2e}  {tokens_per_s:,.0f} tok/s  ETA {_fmt_time(remaining)}")
                if "eval_loss" in record:
                    line += f"  eval {record['eval_loss']:.4f} ({record['eval_bpb']:.4f} bpb)"
                self.say(line)
                log_state.update(since=[], t=now, step=s1, tstep=s1)

        def run_eval() -> dict:
            loss = evaluate(ts, eval_fn, params, eval_batches)
            bpb = loss / math.log(2) / token_data.bytes_per_token
            return {"eval_loss": loss, "eval_bpb": bpb}

        def save(s: int) -> None:
            ckpt.save(s, {"params": params, "opt_state": opt_state, "rng": rng}, {
                "step": s, "run_name": run_dir.name, "wall_time_s": elapsed_before + time.time() - t_start,
                "start_loss": start_loss, "first_losses": first_losses, "over_count": over,
                "log_since": log_state["since"], "log_step": log_state["step"]})

        pending = None
        last_eval = None
        with _Terminate() as term:
            while step < stop:
                end = _chunk_end(step, stop, k, periods, marks)
                batches = mesh_lib.put_global(host_batches(step, end), mesh_lib.batch_sharding(mesh, 2, 4))
                step_arr = mesh_lib.put_global(np.asarray(step, np.int32), ts.replicated)
                params, opt_state, *outputs = step_fn(params, opt_state, step_arr, batches)
                if pending is not None:
                    process(pending)
                pending = (step, end, *outputs)
                step = end
                if diverged is not None:
                    break
                is_eval = _is_multiple(end, cfg.eval_every) or end == cfg.n_steps
                is_ckpt = (_is_multiple(end, cfg.checkpoint_every) or end in self.keep_steps
                           or end == stop)
                stop_now = term.requested
                if is_eval or is_ckpt or stop_now:
                    extra = run_eval() if is_eval else None
                    process(pending, extra)
                    pending = None
                    if diverged is not None:
                        break
                    if extra:
                        last_eval = extra
                    if is_ckpt or stop_now:
                        save(end)
                    if stop_now:
                        break
                if time.time() - last_beat > HEARTBEAT_S:
                    last_beat = time.time()
                    if self.main:
                        runs.heartbeat(run_dir, step)
                        if self.lock is not None:
                            self.lock.touch()
            if pending is not None and diverged is None:
                process(pending)
        wall = elapsed_before + time.time() - t_start
        ckpt.close()

        if diverged is not None:
            self.status("diverged", step=diverged["step"], reason=diverged["reason"], pid=None)
            self.say(f"diverged: {diverged['reason']}")
            return {"state": "diverged", **diverged}
        if step < cfg.n_steps:
            why = "SIGTERM" if term.requested else f"max_steps={self.max_steps}"
            reason = f"stopped by {why} at step {step}; checkpointed, rerun to resume"
            self.status("pending", step=step, reason=reason, pid=None, heartbeat=None)
            self.say(reason)
            return {"state": "stopped", "step": step, "reason": reason}

        if last_eval is None:  # resumed at the very end: the final eval was not recorded
            last_eval = run_eval()
        steady_s = time.time() - tput["t0"] if tput["t0"] else 0.0
        steady_tokens = (step - tput["s0"]) * tokens_per_step
        result = {
            "eval_loss": last_eval["eval_loss"], "eval_bpb": last_eval["eval_bpb"],
            "n_params": counts["total"], "n_params_non_embedding": counts["non_embedding"],
            "n_tokens": n_tokens, "flops": fpt * n_tokens,
            "flops_by_convention": {c: f * n_tokens for c, f in by_convention.items()},
            "budget": cfg.budget, "steps": cfg.n_steps,
            "epochs": float(data_lib.epochs(n_tokens, token_data)),
            "wall_time_s": wall,
            "tokens_per_s": steady_tokens / steady_s if steady_s > 0 and steady_tokens > 0
            else n_tokens / max(wall, 1e-9),
            "corpus_hash": token_data.corpus_hash,
            "unigram_entropy": float(data_lib.unigram_entropy(token_data.train)),
        }
        if self.main:
            runs.write_result(run_dir, result)
        self.status("done", step=step, pid=None)
        self.say(f"done: eval loss {result['eval_loss']:.4f} nats ({result['eval_bpb']:.4f} bpb), "
                 f"{_fmt_time(wall)}")
        return result

    def _record_corpus_hash(self, corpus_hash: str) -> None:
        recorded = runs.read_config_json(self.run_dir).get("corpus_hash")
        if recorded and recorded != corpus_hash:
            raise UserError(f"{self.run_dir / runs.CONFIG_FILE}: corpus_hash {recorded} does not "
                            f"match the data loaded now ({corpus_hash}); the corpus changed")
        if not recorded and self.main:
            runs.update_config_fields(self.run_dir, corpus_hash=corpus_hash)


def _truncate_metrics(path: Path, step: int, main: bool) -> None:
    """Drop lines logged after the checkpoint we resume from (they will be logged again)."""
    if not main or not path.exists():
        return
    kept = [r for r in read_jsonl(path) if isinstance(r.get("step"), int) and r["step"] <= step]
    from scaling.fileio import atomic_write_text, to_json

    atomic_write_text(path, "".join(to_json(r, indent=None) + "\n" for r in kept))


# ----------------------------------------------------------------------------- WSD branches


def start_from(run_dir: str | os.PathLike, source_run_dir: str | os.PathLike, step: int) -> None:
    """Seed `run_dir` (a WSD branch) with `source_run_dir`'s checkpoint at `step`.

    The two runs must agree on everything that shaped the first `step` updates (model,
    data, optimiser, batch, seed, and the learning rate at every step before `step`), so
    the branch continues the source bit for bit; `train_run(run_dir)` then resumes from
    `step` and runs the branch's own cooldown. The source's metrics up to `step` are copied
    too, so the branch's curve is complete. A no-op if `run_dir` already has checkpoints.
    """
    run_dir, source_run_dir = Path(run_dir), Path(source_run_dir)
    cfg = runs.load_run_config(run_dir)
    src = runs.load_run_config(source_run_dir)
    for name in ("model", "data", "batch_size", "grad_accum", "seed"):
        if getattr(cfg, name) != getattr(src, name):
            raise UserError(f"{name}: the branch {run_dir.name} and its source {source_run_dir.name} differ")
    o1, o2 = cfg.optim, src.optim
    if (o1.lr, o1.weight_decay, o1.beta1, o1.beta2, o1.eps, o1.grad_clip, o1.z_loss) != \
            (o2.lr, o2.weight_decay, o2.beta1, o2.beta2, o2.eps, o2.grad_clip, o2.z_loss):
        raise UserError(f"optim: the branch {run_dir.name} and its source {source_run_dir.name} differ")
    if not 0 < step <= min(cfg.n_steps, src.n_steps):
        raise UserError(f"step: expected 1..{min(cfg.n_steps, src.n_steps)}, got {step}")
    steps = jnp.arange(step)
    lr_branch = np.asarray(learning_rate(steps, peak_lr=o1.lr, n_steps=cfg.n_steps, sched=cfg.schedule))
    lr_source = np.asarray(learning_rate(steps, peak_lr=o2.lr, n_steps=src.n_steps, sched=src.schedule))
    if not np.array_equal(lr_branch, lr_source):
        first = int(np.argmax(lr_branch != lr_source))
        raise UserError(f"schedule: the branch's learning rate differs from the source's at step "
                        f"{first} < {step} (set schedule.stable_steps >= {step})")
    target = run_dir / CHECKPOINT_DIR
    if target.exists() and any(p.name.isdigit() for p in target.iterdir()):
        return
    source_ckpt = source_run_dir / CHECKPOINT_DIR / str(step)
    if step not in Checkpointer(source_run_dir / CHECKPOINT_DIR).steps():
        raise UserError(f"{source_ckpt}: no checkpoint at step {step} (train the source with "
                        f"keep_steps including {step})")
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / f".{step}.copy"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source_ckpt, tmp)
    os.replace(tmp, target / str(step))
    metrics = [r for r in read_jsonl(source_run_dir / runs.METRICS_FILE)
               if isinstance(r.get("step"), int) and r["step"] <= step]
    path = run_dir / runs.METRICS_FILE
    if not path.exists():
        for r in metrics:
            append_jsonl(path, r)
