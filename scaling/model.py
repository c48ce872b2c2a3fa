"""Decoder-only transformer (Flax NNX), the model family counted by `scaling.flops`.

Architecture: token embedding -> n_layers pre-norm blocks -> final RMSNorm -> unembedding
(the transposed embedding when `tie_embeddings`). A block is
`x + Attn(RMSNorm(x))` then `x + MLP(RMSNorm(x))`. Attention is causal multi-head
attention with rotary position embeddings (RoPE, theta 10 000, rotate-half pairing
(i, i + head_dim/2); an odd head_dim leaves its last channel unrotated) and optional
QK-norm (an RMSNorm with a learned head_dim scale on q and on k, before RoPE); it runs
through one of three kernels. `attention="auto"` (the default) picks:
- "cudnn": cuDNN's fused flash kernel via `jax.nn.dot_product_attention`, when the backend
  is GPU, the compute dtype bf16/fp16 and head_dim a multiple of 8 up to 128 (cuDNN's
  limits); NB: in jax 0.10 `implementation=None` always means XLA (the source has a TODO to
  auto-select), so "auto" asks for cuDNN itself, and falls back to XLA when cuDNN refuses;
- "chunked" on CPU: `chunked_causal_attention`, query blocks that each see only the keys
  up to their end, so the causal upper triangle is never computed and every block's
  scores stay in cache. XLA's kernel writes the whole B x H x L x L score tensor and reads
  it back once per softmax pass; on a 2-core CPU that made attention forward + backward
  1.5-3x slower than this (bench/attention_kernels.py);
- "xla": `jax.nn.dot_product_attention`'s XLA kernel, elsewhere. The MLP is SwiGLU (`down(silu(gate(x)) * up(x))`)
or GELU (`down(gelu_tanh(up(x)))`). No biases anywhere.

The n_layers blocks are stored stacked (leading "layers" axis) and applied with one
`jax.lax.scan`, so the traced program and compile time do not grow with depth.

Parameters (path in `nnx.state(model)`: shape, logical axes in the `out_sharding`
metadata; `nnx.get_partition_spec(nnx.state(model))` returns them as PartitionSpecs of
logical names for the mesh helper to map onto mesh axes):

    embed                 (V, D)        ("vocab", "embed")
    blocks.attn_norm      (NL, D)       ("layers", "embed")
    blocks.wq, wk, wv     (NL, D, H, K) ("layers", "embed", "heads", None)
    blocks.wo             (NL, H, K, D) ("layers", "heads", None, "embed")
    blocks.q_norm, k_norm (NL, K)       ("layers", None)                 [qk_norm only]
    blocks.mlp_norm       (NL, D)       ("layers", "embed")
    blocks.w_gate         (NL, D, F)    ("layers", "embed", "mlp")       [swiglu only]
    blocks.w_up           (NL, D, F)    ("layers", "embed", "mlp")
    blocks.w_down         (NL, F, D)    ("layers", "mlp", "embed")
    final_norm            (D,)          ("embed",)
    unembed               (D, V)        ("embed", "vocab")               [untied only]

(V vocab, D d_model, H n_heads, K head_dim, F d_ff, NL n_layers.) Variables are created
with `eager_sharding=False`, so building the model needs no mesh; place it by jitting the
constructor with out_shardings derived from these specs.

Initialisation (GPT-2 style embeddings; fan-in scaled matrices, so each projection of a
normalised input has unit-order outputs whatever the width, which helps a learning rate
chosen at one size carry to the next):
    embed              normal, std 0.02
    unembed (untied)   normal, std 0.02 (keeps initial logits small: loss starts ~ log V)
    wq, wk, wv, w_gate, w_up   normal, std 1/sqrt(fan_in)  (fan_in = D)
    wo, w_down         normal, std 1/sqrt(fan_in) / sqrt(2 n_layers)
                       (fan_in = H K, F; two residual branches per layer, GPT-2's scaling)
    every norm scale   ones
Compute: parameters are stored in `param_dtype` and cast to `compute_dtype` for the
matmuls; norms, softmax statistics and the logits are float32.

Parameterisation (`cfg.parameterization`). "sp", the standard one above: the best
learning rate shrinks as the model widens (Adam moves every hidden weight by ~lr per step,
so a D-wide matmul's output moves by ~lr x D). "mup": the Maximal Update
Parameterisation for Adam (Yang et al. 2022, "Tensor Programs V", Table 3, the
output-multiplier form), relative to `cfg.base_width` (where it equals "sp"), with
m = d_model / base_width:
    hidden matrices (wq, wk, wv, wo, w_gate, w_up, w_down)  init as above (1/sqrt(fan_in)),
                                                           Adam lr x 1/m
    embedding, unembedding, norm scales                    init as above, Adam lr x 1
    logits                                                 x 1/m (the output multiplier)
    attention logits                                       q.k x sqrt(64)/head_dim instead of
                                                           q.k / sqrt(head_dim) (1/head_dim, as muP
                                                           asks, equal to "sp" at head_dim 64; our
                                                           head_dim grows with width below 256)
Per-group learning rates are `lr_multipliers`; the trainer scales AdamW's updates (decay
included, as torch's per-group lr does) by them. Why muP and not CompleteP (Dey et al.
2025, muP plus a 1/depth residual-branch multiplier and depth-scaled rates): the issue is
width transfer, and CompleteP's depth rule changes the forward function of every block
("sp" runs would no longer be the same model at base width and depth 1 only); with the
ladder recipe depth and width grow together, so a depth rule is the next step, not
included here.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from scaling.model_config import ModelConfig

ROPE_THETA = 10_000.0
NORM_EPS = 1e-6
MUP_ATTENTION_HEAD_DIM = 64  # muP's 1/head_dim attention equals 1/sqrt(head_dim) here
MUP_HIDDEN = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")


def _param(rngs: nnx.Rngs, shape: tuple[int, ...], std: float | None, axes: tuple,
           dtype) -> nnx.Param:
    """A normal(std) parameter (ones when std is None) tagged with logical axis names."""
    if std is None:
        value = jnp.ones(shape, dtype)
    else:
        value = (std * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)
    return nnx.Param(value, out_sharding=axes, eager_sharding=False)


def rms_norm(x: jax.Array, scale: jax.Array) -> jax.Array:
    """RMSNorm over the last axis in float32; returns float32."""
    x = x.astype(jnp.float32)
    inv_rms = jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + NORM_EPS)
    scale = scale.astype(jnp.float32).reshape((1,) * (x.ndim - 1) + scale.shape)
    return x * inv_rms * scale


def rope_angles(seq_len: int, head_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin tables, each (L, head_dim // 2), in float32.

    NumPy at trace time, so they enter the program as constants: computed inside jit, XLA
    fused the cos/sin into every consumer and evaluated them once per element of the
    (B, L, H, K) activations, ~2% of a CPU training step at 100K parameters."""
    half = head_dim // 2
    exponent_half = np.arange(half, dtype=np.float32) * np.float32(2.0) / np.float32(head_dim)
    inv_freq_half = np.float32(1.0) / np.power(np.float32(ROPE_THETA), exponent_half)
    angle_LxHalf = np.arange(seq_len, dtype=np.float32)[:, None] * inv_freq_half[None, :]
    return np.cos(angle_LxHalf), np.sin(angle_LxHalf)


def apply_rope(x_BxLxHxK: jax.Array, cos_LxHalf: jax.Array | np.ndarray,
               sin_LxHalf: jax.Array | np.ndarray) -> jax.Array:
    """Rotate channel pairs (i, i + K//2) by position-dependent angles (float32 math)."""
    half = cos_LxHalf.shape[-1]
    x = x_BxLxHxK.astype(jnp.float32)
    x1, x2, rest = x[..., :half], x[..., half:2 * half], x[..., 2 * half:]
    cos = cos_LxHalf[None, :, None, :]
    sin = sin_LxHalf[None, :, None, :]
    rotated = [x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest]
    return jnp.concatenate(rotated, axis=-1).astype(x_BxLxHxK.dtype)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul_transposed_grad(x_TxC, w_CxO, out_dtype):
    return jnp.matmul(x_TxC, w_CxO, preferred_element_type=out_dtype)


def _matmul_fwd(x_TxC, w_CxO, out_dtype):
    return _matmul_transposed_grad(x_TxC, w_CxO, out_dtype), (x_TxC, w_CxO)


def _matmul_bwd(out_dtype, residuals, g_TxO):
    x_TxC, w_CxO = residuals
    g_TxO = g_TxO.astype(x_TxC.dtype)
    dx_TxC = jnp.matmul(g_TxO, w_CxO.T, preferred_element_type=jnp.float32)
    # The weight gradient contracts the token axis, the leading axis of both operands; an
    # explicit transpose of the narrower one makes it a plain row-major matmul.
    if x_TxC.shape[1] <= g_TxO.shape[1]:
        dw_CxO = jnp.matmul(x_TxC.T, g_TxO, preferred_element_type=jnp.float32)
    else:
        dw_CxO = jnp.matmul(g_TxO.T, x_TxC, preferred_element_type=jnp.float32).T
    return dx_TxC.astype(x_TxC.dtype), dw_CxO.astype(w_CxO.dtype)


_matmul_transposed_grad.defvjp(_matmul_fwd, _matmul_bwd)


def dense(x: jax.Array, w: jax.Array, n_contract: int = 1, out_dtype=None) -> jax.Array:
    """Contract the last `n_contract` axes of x with the first `n_contract` axes of w
    (e.g. x_BxLxD, w_DxHxK -> BxLxHxK), in w's dtype, accumulating in `out_dtype`.

    On CPU through a custom VJP: XLA:CPU computed each weight gradient (a contraction over
    the B x L token rows of two row-major activations) by first writing one activation
    transposed from inside an elementwise fusion (a strided store) and handing the dot to
    Eigen; with the narrower operand transposed explicitly the same gradient is a plain
    matmul. MLP forward + backward 1.4-1.6x faster at d_model 64-320 (2-core Xeon).
    Elsewhere a plain einsum."""
    lead, contract, out = x.shape[:-n_contract], w.shape[:n_contract], w.shape[n_contract:]
    if jax.default_backend() != "cpu":
        x_axes = "abcdefgh"[:len(lead)] + "pqrs"[:n_contract]
        w_axes = "pqrs"[:n_contract] + "wxyz"[:len(out)]
        return jnp.einsum(f"{x_axes},{w_axes}->{x_axes[:len(lead)]}{w_axes[n_contract:]}", x, w,
                          preferred_element_type=out_dtype)
    x_TxC = x.reshape(math.prod(lead), math.prod(contract))
    w_CxO = w.reshape(math.prod(contract), math.prod(out))
    return _matmul_transposed_grad(x_TxC, w_CxO, out_dtype).reshape(*lead, *out)


ATTENTION_KINDS = ("auto", "xla", "cudnn", "chunked")
# Query blocks of chunked attention: n blocks waste 1/(2 n) of the score work on the
# causal triangle, more blocks make thinner matmuls. No count won everywhere on 2 CPU cores
# (bench/attention_kernels.py: 4, 8 and 16 each best somewhere at L 128-1024, head_dim
# 16-64); 8 was the best compromise in repeated runs. Blocks keep at least 16 queries.
CHUNKED_BLOCKS = 8
CHUNKED_MIN_BLOCK = 16


def attention_implementation(kind: str, compute_dtype, head_dim: int) -> str:
    """Resolve "auto": "cudnn" where its fused kernel applies, "chunked" on CPU, else "xla"."""
    if kind != "auto":
        return kind
    backend = jax.default_backend()
    if backend == "cpu":
        return "chunked"
    eligible = (backend == "gpu"
                and jnp.dtype(compute_dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
                and head_dim % 8 == 0 and head_dim <= 128)
    return "cudnn" if eligible else "xla"


def chunked_causal_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK,
                             n_blocks: int = CHUNKED_BLOCKS) -> jax.Array:
    """Causal softmax(q k^T / sqrt(K)) v, one query block at a time.

    Block i (queries a..b) scores only keys 0..b, so the work is L^2 (1 + 1/n) / 2 instead
    of L^2, and each block's scores (B x H x (b - a) x b) are small enough to stay in cache
    through the mask, softmax and value product. Scores and softmax in float32, like XLA's
    kernel; the blocks are a static Python loop (n_blocks score/value dot pairs)."""
    seq_len, head_dim = q_BxLxHxK.shape[1], q_BxLxHxK.shape[-1]
    n_blocks = max(1, min(n_blocks, seq_len // CHUNKED_MIN_BLOCK))
    edges = [i * seq_len // n_blocks for i in range(n_blocks + 1)]
    scale = jnp.asarray(head_dim ** -0.5, q_BxLxHxK.dtype)
    # Heads ahead of positions: each block's dots then have contiguous (B, H) batch dims.
    q_BxHxLxK = jnp.einsum("blhk->bhlk", q_BxLxHxK * scale)
    k_BxHxLxK = jnp.einsum("blhk->bhlk", k_BxLxHxK)
    v_BxHxLxK = jnp.einsum("blhk->bhlk", v_BxLxHxK)
    outs = []
    for start, end in zip(edges[:-1], edges[1:], strict=True):
        s_BxHxQxS = jnp.einsum("bhqk,bhsk->bhqs", q_BxHxLxK[:, :, start:end],
                               k_BxHxLxK[:, :, :end], preferred_element_type=jnp.float32)
        causal_QxS = np.arange(start, end)[:, None] >= np.arange(end)[None, :]
        p_BxHxQxS = jax.nn.softmax(jnp.where(causal_QxS, s_BxHxQxS, -jnp.inf), axis=-1)
        outs.append(jnp.einsum("bhqs,bhsk->bhqk", p_BxHxQxS.astype(v_BxHxLxK.dtype),
                               v_BxHxLxK[:, :, :end]))
    return jnp.einsum("bhlk->blhk", jnp.concatenate(outs, axis=2))


def attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, kind: str, compute_dtype) -> jax.Array:
    impl = attention_implementation(kind, compute_dtype, q_BxLxHxK.shape[-1])
    if impl == "chunked":
        return chunked_causal_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK)
    if impl == "cudnn" and kind == "auto":
        try:
            return jax.nn.dot_product_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, is_causal=True,
                                                implementation="cudnn")
        except (NotImplementedError, RuntimeError):  # old cuDNN / GPU: use XLA's kernel
            impl = "xla"
    return jax.nn.dot_product_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, is_causal=True,
                                        implementation="cudnn" if impl == "cudnn" else "xla")


def block_forward(layer: dict, x_BxLxD: jax.Array, cfg: ModelConfig,
                  cos_LxHalf: jax.Array | np.ndarray, sin_LxHalf: jax.Array | np.ndarray,
                  compute_dtype, attention_kind: str = "auto") -> jax.Array:
    """One pre-norm block. `layer` holds one layer's slice of the stacked parameters."""
    def w(name):
        return layer[name].astype(compute_dtype)

    h_BxLxD = rms_norm(x_BxLxD, layer["attn_norm"]).astype(compute_dtype)
    q_BxLxHxK = dense(h_BxLxD, w("wq"))
    k_BxLxHxK = dense(h_BxLxD, w("wk"))
    v_BxLxHxK = dense(h_BxLxD, w("wv"))
    if cfg.qk_norm:
        q_BxLxHxK = rms_norm(q_BxLxHxK, layer["q_norm"]).astype(compute_dtype)
        k_BxLxHxK = rms_norm(k_BxLxHxK, layer["k_norm"]).astype(compute_dtype)
    if cfg.parameterization == "mup":  # the kernels divide by sqrt(K); muP wants c / K
        q_BxLxHxK = q_BxLxHxK * jnp.asarray(math.sqrt(MUP_ATTENTION_HEAD_DIM / cfg.head_dim),
                                            q_BxLxHxK.dtype)
    q_BxLxHxK = apply_rope(q_BxLxHxK, cos_LxHalf, sin_LxHalf)
    k_BxLxHxK = apply_rope(k_BxLxHxK, cos_LxHalf, sin_LxHalf)
    att_BxLxHxK = attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, attention_kind, compute_dtype)
    x_BxLxD = x_BxLxD + dense(att_BxLxHxK, w("wo"), 2).astype(x_BxLxD.dtype)

    h_BxLxD = rms_norm(x_BxLxD, layer["mlp_norm"]).astype(compute_dtype)
    up_BxLxF = dense(h_BxLxD, w("w_up"))
    if cfg.mlp == "swiglu":
        gate_BxLxF = dense(h_BxLxD, w("w_gate"))
        act_BxLxF = jax.nn.silu(gate_BxLxF) * up_BxLxF
    else:
        act_BxLxF = jax.nn.gelu(up_BxLxF)
    out_BxLxD = dense(act_BxLxF, w("w_down"))
    return x_BxLxD + out_BxLxD.astype(x_BxLxD.dtype)


class Blocks(nnx.Module):
    """The n_layers blocks' parameters, stacked along a leading "layers" axis."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        nl, d, h, k, f = cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.head_dim, cfg.d_ff
        in_std = 1.0 / math.sqrt(d)
        out_scale = 1.0 / math.sqrt(2 * nl)
        pd = param_dtype
        self.attn_norm = _param(rngs, (nl, d), None, ("layers", "embed"), pd)
        self.wq = _param(rngs, (nl, d, h, k), in_std, ("layers", "embed", "heads", None), pd)
        self.wk = _param(rngs, (nl, d, h, k), in_std, ("layers", "embed", "heads", None), pd)
        self.wv = _param(rngs, (nl, d, h, k), in_std, ("layers", "embed", "heads", None), pd)
        self.wo = _param(rngs, (nl, h, k, d), out_scale / math.sqrt(h * k),
                         ("layers", "heads", None, "embed"), pd)
        if cfg.qk_norm:
            self.q_norm = _param(rngs, (nl, k), None, ("layers", None), pd)
            self.k_norm = _param(rngs, (nl, k), None, ("layers", None), pd)
        self.mlp_norm = _param(rngs, (nl, d), None, ("layers", "embed"), pd)
        if cfg.mlp == "swiglu":
            self.w_gate = _param(rngs, (nl, d, f), in_std, ("layers", "embed", "mlp"), pd)
        self.w_up = _param(rngs, (nl, d, f), in_std, ("layers", "embed", "mlp"), pd)
        self.w_down = _param(rngs, (nl, f, d), out_scale / math.sqrt(f),
                             ("layers", "mlp", "embed"), pd)

    def stacked(self) -> dict[str, jax.Array]:
        names = ["attn_norm", "wq", "wk", "wv", "wo", "mlp_norm", "w_up", "w_down"]
        names += ["q_norm", "k_norm"] if hasattr(self, "q_norm") else []
        names += ["w_gate"] if hasattr(self, "w_gate") else []
        return {name: getattr(self, name)[...] for name in names}


class Transformer(nnx.Module):
    """`model(tokens_BxL int32) -> logits_BxLxV float32`. See the module docstring."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, compute_dtype=jnp.float32,
                 param_dtype=jnp.float32, remat: bool = False, scan_unroll: int = 1,
                 attention: str = "auto"):
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"attention: expected one of {ATTENTION_KINDS}, got {attention!r}")
        self.cfg = cfg
        self.attention = attention
        self.compute_dtype = compute_dtype
        # remat trades recompute for activation memory (long sequences, big batches);
        # scan_unroll > 1 lets XLA fuse across layers at the cost of compile time.
        self.remat = remat
        self.scan_unroll = scan_unroll
        self.embed = _param(rngs, (cfg.vocab_size, cfg.d_model), 0.02, ("vocab", "embed"),
                            param_dtype)
        self.blocks = Blocks(cfg, rngs=rngs, param_dtype=param_dtype)
        self.final_norm = _param(rngs, (cfg.d_model,), None, ("embed",), param_dtype)
        if not cfg.tie_embeddings:
            self.unembed = _param(rngs, (cfg.d_model, cfg.vocab_size), 0.02, ("embed", "vocab"),
                                  param_dtype)

    def __call__(self, tokens_BxL: jax.Array) -> jax.Array:
        cfg, dtype = self.cfg, self.compute_dtype
        seq_len = tokens_BxL.shape[1]
        cos_LxHalf, sin_LxHalf = rope_angles(seq_len, cfg.head_dim)
        embed_VxD = self.embed[...]
        x_BxLxD = jnp.take(embed_VxD, tokens_BxL, axis=0).astype(dtype)

        def body(x_BxLxD, layer):
            return block_forward(layer, x_BxLxD, cfg, cos_LxHalf, sin_LxHalf, dtype,
                                 self.attention), None

        if self.remat:
            body = jax.checkpoint(body)
        x_BxLxD, _ = jax.lax.scan(body, x_BxLxD, self.blocks.stacked(), unroll=self.scan_unroll)
        h_BxLxD = rms_norm(x_BxLxD, self.final_norm[...]).astype(dtype)
        if cfg.tie_embeddings:
            logits_BxLxV = dense(h_BxLxD, embed_VxD.astype(dtype).T, out_dtype=jnp.float32)
        else:
            logits_BxLxV = dense(h_BxLxD, self.unembed[...].astype(dtype), out_dtype=jnp.float32)
        logits_BxLxV = logits_BxLxV.astype(jnp.float32)
        if cfg.parameterization == "mup":  # the output multiplier 1 / width_mult
            logits_BxLxV = logits_BxLxV * (1.0 / cfg.width_mult)
        return logits_BxLxV


def lr_multipliers(params, cfg: ModelConfig):
    """Per-parameter learning-rate factors, a tree shaped like `params` (nnx Params):
    1 / width_mult for muP's hidden matrices (MUP_HIDDEN), 1 for everything else and for
    every parameter under "sp"."""
    hidden = 1.0 / cfg.width_mult

    def one(path, v):
        name = getattr(path[-1], "key", getattr(path[-1], "name", None))
        return v.replace(hidden if name in MUP_HIDDEN else 1.0)

    return jax.tree_util.tree_map_with_path(one, params,
                                            is_leaf=lambda x: isinstance(x, nnx.Variable))


def cross_entropy(logits_BxLxV: jax.Array, targets_BxL: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-token cross-entropy (nats) and log-partition log Z, both (B, L) float32."""
    logits_BxLxV = logits_BxLxV.astype(jnp.float32)
    logz_BxL = jax.nn.logsumexp(logits_BxLxV, axis=-1)
    target_logit_BxL = jnp.take_along_axis(logits_BxLxV, targets_BxL[..., None], axis=-1)[..., 0]
    return logz_BxL - target_logit_BxL, logz_BxL


def loss_and_metrics(model: Transformer, batch_BxL1: jax.Array,
                     z_loss: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean next-token cross-entropy (nats) of batch[:, :-1] -> batch[:, 1:], plus
    `z_loss * mean(log Z ** 2)` when z_loss > 0 (PaLM's stabiliser; it keeps the softmax
    normaliser near 1). Returns (loss, {"ce", "z_loss"}) where "ce" excludes the penalty."""
    inputs_BxL = batch_BxL1[:, :-1]
    targets_BxL = batch_BxL1[:, 1:]
    ce_BxL, logz_BxL = cross_entropy(model(inputs_BxL), targets_BxL)
    ce = jnp.mean(ce_BxL)
    if isinstance(z_loss, int | float) and z_loss == 0:  # static zero: skip the extra pass
        z_term = jnp.zeros((), jnp.float32)
    else:  # a traced coefficient works too
        z_term = z_loss * jnp.mean(jnp.square(logz_BxL))
    return ce + z_term, {"ce": ce, "z_loss": z_term}


def count_params(model: nnx.Module) -> int:
    """Number of scalar parameters (nnx.Param leaves) in a built model."""
    state = nnx.state(model, nnx.Param)
    return int(sum(x.size for x in jax.tree.leaves(state)))
