"""The training state (a pure pytree: params as an `nnx.State`, the optax state, the RNG key
data) and one jitted, pure function that advances it by up to k steps (a loop over the
optimizer steps, each a `lax.scan` over its micro-batches), state donated. AdamW (optax; decoupled
weight decay on matrices only, global-norm clipping), the schedule of `scaling.schedules`,
bf16 compute with f32 master weights on accelerators, f32 on CPU (layer scan unrolled)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from scaling import mesh as mesh_lib
from scaling.checkpoint import abstract_like
from scaling.config import RunConfig
from scaling.model import Transformer, cross_entropy, loss_and_metrics, lr_multipliers
from scaling.replica_groups import OPTIM_SCALARS
from scaling.schedules import SCHEDULE_SCALARS, schedule_scalars, scheduled_lr


def _is_var(x) -> bool:
    return isinstance(x, nnx.Variable)


def decay_mask(abstract_params):
    """True for matrices (>= 2 axes besides the stacked "layers" axis): norms get no decay."""
    def one(v):
        names = v.get_metadata().get("out_sharding") or ()
        n_axes = len(v.get_value().shape) - sum(1 for n in names if n == "layers")
        return v.replace(n_axes >= 2)

    return jax.tree.map(one, abstract_params, is_leaf=_is_var)


# The step function's scalar arguments: a run's numbers that are not its graph's.
STEP_SCALARS = OPTIM_SCALARS + SCHEDULE_SCALARS


def step_scalars(cfg: RunConfig) -> dict[str, float]:
    """STEP_SCALARS of a run: its optimizer's scalars and its schedule's."""
    return ({name: float(getattr(cfg.optim, name)) for name in OPTIM_SCALARS}
            | schedule_scalars(cfg.schedule, cfg.n_steps))


def build_optimizer(cfg: RunConfig, mask, scalars: dict | None = None) -> optax.GradientTransformation:
    """AdamW and the schedule from cfg; `scalars` (STEP_SCALARS) replaces cfg's numbers by
    traced ones (the step's arguments), the chain's structure (clipping on/off) still from cfg."""
    o = cfg.optim
    h = step_scalars(cfg) | dict(scalars or {})

    def schedule(count):
        return scheduled_lr(count, cfg.schedule.kind, h["lr"], h)

    parts = [optax.clip_by_global_norm(h["grad_clip"])] if o.grad_clip > 0 else []
    parts.append(optax.adamw(schedule, b1=h["beta1"], b2=h["beta2"], eps=h["eps"],
                             weight_decay=h["weight_decay"], mask=mask))
    if cfg.model.parameterization != "sp":  # muP's per-group rates (scaling.model)
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


# XLA:CPU (jaxlib 0.10) hands every row-major matmul to YNNPACK by default; from d_model 256
# its own Eigen kernels were faster on a 2-core Xeon (AVX-512): the 10M step 16% (the
# [4096, 320] x [320, 864] projections 250-290 -> 330-360 GFLOP/s), while at d_model 64-128
# YNNPACK's step was 4-13% faster (attention's small-head batched dots). The option is
# per compiled step, so it cannot pick per dot.
CPU_EIGEN_DOTS_MIN_D_MODEL = 256


def step_compiler_options(backend: str, d_model: int) -> dict:
    if backend == "cpu" and d_model >= CPU_EIGEN_DOTS_MIN_D_MODEL:
        return {"xla_cpu_experimental_ynn_fusion_type": ""}  # no library fusion: Eigen dots
    return {}


def default_model_kwargs(backend: str, n_layers: int) -> dict:
    if backend == "cpu" and n_layers <= CPU_UNROLL_MAX_LAYERS:
        return {"scan_unroll": n_layers}
    return {}


class TrainState:
    """Everything built from (config, mesh): graph, optimizer, shardings, abstract target."""

    def __init__(self, cfg: RunConfig, mesh, *, compute_dtype=None, model_kwargs=None) -> None:
        self.cfg, self.mesh = cfg, mesh
        backend = mesh.devices.flat[0].platform
        self.compute_dtype = compute_dtype_for(backend) if compute_dtype is None else compute_dtype
        kwargs = default_model_kwargs(backend, cfg.model.n_layers) | dict(model_kwargs or {})

        def build(seed) -> Transformer:
            with nnx.use_eager_sharding(False):
                return Transformer(cfg.model, rngs=nnx.Rngs(jax.random.key(seed)),
                                   compute_dtype=self.compute_dtype, **kwargs)

        self._build = build
        # Abstract first: shapes and logical axes without allocating anything.
        graphdef, abstract_params, *rest = nnx.split(nnx.eval_shape(lambda: build(cfg.seed)),
                                                     nnx.Param, ...)
        self.graphdef, self.rest = graphdef, rest[0]  # `...`: everything else, one State
        self.decay_mask = decay_mask(abstract_params)
        self.tx = build_optimizer(cfg, self.decay_mask)
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
        tx = self.tx

        @partial(jax.jit, out_shardings=(self.param_shardings, self.opt_shardings, replicated))
        def init(seed):
            params = nnx.split(build(seed), nnx.Param, ...)[1]
            return params, tx.init(params), jax.random.key_data(jax.random.key(seed))

        self._init = init

    def init(self, seed: int | None = None) -> dict:
        """Fresh state of the run with `seed` (default: the config's), created inside jit
        directly in its sharded layout; the seed is an argument, so every run of the shape
        shares one compiled program."""
        seed = self.cfg.seed if seed is None else seed
        params, opt_state, rng = self._init(
            mesh_lib.put_global(np.asarray(seed, np.int32), self.replicated))
        return {"params": params, "opt_state": opt_state, "rng": rng}

    def scalars(self) -> dict:
        """The run's step_scalars as f32 arrays, replicated: the step's last argument."""
        return {name: mesh_lib.put_global(np.asarray(v, np.float32), self.replicated)
                for name, v in step_scalars(self.cfg).items()}

    def model(self, params) -> Transformer:
        return nnx.merge(self.graphdef, params, self.rest)


def make_step_fn(ts: TrainState, *, fault_step: int | None = None):
    """jit(params, opt_state, step0, step1, batches_KxAxBxL1, scalars) -> (params, opt_state,
    ce_K, gnorm_K, lr_K): steps step0..step1-1 (at most K) on the first step1 - step0 batches;
    the outputs' entries past them are zeros. `scalars`: the run's `step_scalars`, as f32."""
    rep = ts.replicated
    options = step_compiler_options(ts.mesh.devices.flat[0].platform, ts.cfg.model.d_model)
    return jax.jit(
        multi_step_fn(ts, fault_step=fault_step), donate_argnums=(0, 1),
        compiler_options=options or None,
        in_shardings=(ts.param_shardings, ts.opt_shardings, rep, rep,
                      mesh_lib.batch_sharding(ts.mesh, 2, 4), rep),
        out_shardings=(ts.param_shardings, ts.opt_shardings, rep, rep, rep))


def multi_step_fn(ts: TrainState, *, fault_step: int | None = None):
    """The pure (unjitted) update of up to k steps. The run's STEP_SCALARS are an argument,
    not constants: one compiled program serves every run of the shape, whatever its budget,
    learning rate or warmup, and a replica group vmaps it over per-replica values."""
    cfg = ts.cfg
    z_loss = cfg.optim.z_loss

    def loss_fn(params, batch_BxL1):
        loss, metrics = loss_and_metrics(ts.model(params), batch_BxL1, z_loss=z_loss)
        return loss, metrics["ce"]

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def one_step(tx, scalars, carry, micro_AxBxL1):
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
        lr = scheduled_lr(step, cfg.schedule.kind, scalars["lr"], scalars)
        return (params, opt_state, step + 1), (ce, grad_norm, lr)

    def multi_step(params, opt_state, step0, step1, batches_KxAxBxL1, scalars):
        tx = build_optimizer(cfg, ts.decay_mask, scalars)
        # A loop of a traced length, not a scan of K: a chunk cut short (at the stop, a
        # mark or an unaligned resume) runs the same program, so a run compiles one step
        # function, and every step of it is the same machine code (a scan of another
        # length, 1 above all, rounds differently).
        def body(i, carry):
            state, ce_K, gnorm_K, lr_K = carry
            state, (ce, gnorm, lr) = one_step(tx, scalars, state, batches_KxAxBxL1[i])
            return state, ce_K.at[i].set(ce), gnorm_K.at[i].set(gnorm), lr_K.at[i].set(lr)

        # zeros_like, not zeros: under a group's shard_map the buffers then vary by lane, as
        # the metrics written into them do.
        zeros_K = jnp.zeros_like(batches_KxAxBxL1[:, 0, 0, 0], jnp.float32)
        (params, opt_state, _), ce_K, gnorm_K, lr_K = jax.lax.fori_loop(
            0, step1 - step0, body, ((params, opt_state, step0), zeros_K, zeros_K, zeros_K))
        return params, opt_state, ce_K, gnorm_K, lr_K

    return multi_step


def make_eval_fn(ts: TrainState):
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


def make_score_fn(ts: TrainState):
    """jit(params, tokens_BxL1, mask_BxL) -> per-row summed nats over the masked targets
    (position t predicts token t+1), for multiple-choice scoring (scaling.tasks)."""
    @partial(jax.jit, out_shardings=ts.replicated)
    def score(params, tokens_BxL1, mask_BxL):
        ce_BxL, _ = cross_entropy(ts.model(params)(tokens_BxL1[:, :-1]), tokens_BxL1[:, 1:])
        return jnp.sum(ce_BxL * mask_BxL, axis=1)

    return score


def score_rows(ts: TrainState, score_fn, params, tokens_RxL1: np.ndarray, mask_RxL: np.ndarray,
               batch_size: int) -> np.ndarray:
    """Summed masked nats of every row, batch_size rows at a time; the last batch is padded
    with empty rows, so every call has the one shape (one compilation)."""
    n_rows = tokens_RxL1.shape[0]
    n_pad = -n_rows % batch_size
    tokens_RxL1 = np.pad(np.asarray(tokens_RxL1, np.int32), ((0, n_pad), (0, 0)))
    mask_RxL = np.pad(np.asarray(mask_RxL, np.float32), ((0, n_pad), (0, 0)))
    shards = mesh_lib.n_data_shards(ts.mesh)
    sharding = (mesh_lib.batch_sharding(ts.mesh, 0, 2) if batch_size % shards == 0
                else ts.replicated)
    out = []
    for i in range(0, n_rows + n_pad, batch_size):
        tokens = mesh_lib.put_global(tokens_RxL1[i:i + batch_size], sharding)
        mask = mesh_lib.put_global(mask_RxL[i:i + batch_size], sharding)
        out.append(mesh_lib.fetch(score_fn(params, tokens, mask)))
    return np.concatenate(out)[:n_rows].astype(np.float64)
