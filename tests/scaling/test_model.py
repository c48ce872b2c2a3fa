"""scaling.model: shapes, causality, jit, parameter counts, an independent float64 reference
forward pass (covers scan-over-layers, RoPE, QK-norm, SwiGLU/GELU, tied/untied), loss."""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling.model import (
    Transformer,
    apply_rope,
    attention_implementation,
    chunked_causal_attention,
    count_params,
    dense,
    loss_and_metrics,
    rope_angles,
)
from scaling.shapes import ModelConfig


@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    # Scoped, not global: pytest-xdist runs other modules' tests in this process afterwards.
    with jax.numpy_rank_promotion("raise"):
        yield

LOGICAL_AXES = {"layers", "vocab", "embed", "heads", "mlp", None}


def tiny(**changes) -> ModelConfig:
    base = dict(vocab_size=61, seq_len=16, n_layers=2, d_model=24, n_heads=3, head_dim=8,
                d_ff=40)
    return ModelConfig(**{**base, **changes})


def build(cfg: ModelConfig, seed: int = 0, **kwargs) -> Transformer:
    return Transformer(cfg, rngs=nnx.Rngs(seed), **kwargs)


def apply(model: Transformer, tokens_BxL) -> jax.Array:
    """Jitted forward (eager op-by-op dispatch is slow); test_jit_matches_eager covers eager."""
    graphdef, state = nnx.split(model)
    return _apply_jit(graphdef, state, tokens_BxL)


@jax.jit(static_argnums=0)
def _apply_jit(graphdef, state, tokens_BxL):
    return nnx.merge(graphdef, state)(tokens_BxL)


def tokens(cfg: ModelConfig, batch: int = 2, length: int | None = None, seed: int = 1):
    length = cfg.seq_len if length is None else length
    return jax.random.randint(jax.random.key(seed), (batch, length), 0, cfg.vocab_size,
                              dtype=jnp.int32)


def expected_param_count(cfg: ModelConfig) -> int:
    """The counting contract of scaling/flops.py, written out independently."""
    d, v, a, f, nl = cfg.d_model, cfg.vocab_size, cfg.n_heads * cfg.head_dim, cfg.d_ff, cfg.n_layers
    per_layer = 4 * d * a + 2 * d + (3 if cfg.mlp == "swiglu" else 2) * d * f
    per_layer += 2 * cfg.head_dim if cfg.qk_norm else 0
    return v * d + nl * per_layer + d + (0 if cfg.tie_embeddings else d * v)


def abstract_count(cfg: ModelConfig) -> int:
    model = nnx.eval_shape(lambda: build(cfg))
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param))))


# ---------------------------------------------------------------------------------------
# Independent reference: plain numpy float64, one layer at a time, explicit mask and
# complex-number RoPE.

def _rms(x, scale):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-6) * scale


def _rope_ref(x_LxHxK):
    seq_len, _, k = x_LxHxK.shape
    half = k // 2
    freq = 10_000.0 ** (-2.0 * np.arange(half) / k)
    rot = np.exp(1j * np.arange(seq_len)[:, None] * freq[None, :])[:, None, :]
    z = (x_LxHxK[..., :half] + 1j * x_LxHxK[..., half:2 * half]) * rot
    return np.concatenate([z.real, z.imag, x_LxHxK[..., 2 * half:]], axis=-1)


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def reference_logits(model: Transformer, tokens_BxL) -> np.ndarray:
    cfg = model.cfg
    p = {k: np.asarray(v, np.float64) for k, v in model.blocks.stacked().items()}
    embed = np.asarray(model.embed[...], np.float64)
    out = []
    for seq in np.asarray(tokens_BxL):
        x = embed[seq]
        length = len(seq)
        mask = np.tril(np.ones((length, length), bool))
        for i in range(cfg.n_layers):  # unrolled: one layer per iteration
            h = _rms(x, p["attn_norm"][i])
            q, k, v = (np.einsum("ld,dhk->lhk", h, p[w][i]) for w in ("wq", "wk", "wv"))
            if cfg.qk_norm:
                q, k = _rms(q, p["q_norm"][i]), _rms(k, p["k_norm"][i])
            q, k = _rope_ref(q), _rope_ref(k)
            scores = np.einsum("lhk,mhk->hlm", q, k) / np.sqrt(cfg.head_dim)
            scores = np.where(mask[None], scores, -np.inf)
            att = np.exp(scores - scores.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            x = x + np.einsum("hlm,mhk,hkd->ld", att, v, p["wo"][i])
            h = _rms(x, p["mlp_norm"][i])
            up = h @ p["w_up"][i]
            if cfg.mlp == "swiglu":
                g = h @ p["w_gate"][i]
                act = g / (1 + np.exp(-g)) * up
            else:
                act = _gelu_tanh(up)
            x = x + act @ p["w_down"][i]
        h = _rms(x, np.asarray(model.final_norm[...], np.float64))
        unembed = embed.T if cfg.tie_embeddings else np.asarray(model.unembed[...], np.float64)
        out.append(h @ unembed)
    return np.stack(out)


VARIANTS = {
    "swiglu-tied": {},
    "gelu-untied": dict(mlp="gelu", tie_embeddings=False),
    "qknorm-swiglu": dict(qk_norm=True),
    "odd-head-dim-3-layers": dict(head_dim=7, n_layers=3),
    "seq-70-in-4-uneven-query-blocks": dict(seq_len=70),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_matches_float64_reference(variant):
    cfg = tiny(**VARIANTS[variant])
    model = build(cfg)
    # Perturb the norm scales away from 1 so a wrong or missing scale would show.
    for name in ("attn_norm", "mlp_norm") + (("q_norm", "k_norm") if cfg.qk_norm else ()):
        var = getattr(model.blocks, name)
        var[...] = 1.0 + 0.3 * jax.random.normal(jax.random.key(7), var[...].shape)
    tok = tokens(cfg)
    got = np.asarray(apply(model, tok))
    want = reference_logits(model, tok)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)


def test_output_shape_and_dtype():
    cfg = tiny()
    logits = apply(build(cfg), tokens(cfg, batch=3, length=11))
    assert logits.shape == (3, 11, cfg.vocab_size)
    assert logits.dtype == jnp.float32


def test_causal_outputs_and_gradients():
    cfg = tiny()
    model = build(cfg)
    tok = tokens(cfg, batch=1)
    t = 9
    changed = tok.at[0, t].set((tok[0, t] + 1) % cfg.vocab_size)
    a, b = apply(model, tok), apply(model, changed)
    np.testing.assert_array_equal(np.asarray(a[:, :t]), np.asarray(b[:, :t]))
    assert not np.allclose(np.asarray(a[:, t:]), np.asarray(b[:, t:]))

    # Gradients: with distinct tokens and an untied unembedding, the logits at position
    # `pos` must not depend on the embedding rows of later tokens.
    cfg = tiny(tie_embeddings=False)
    model = build(cfg)
    tok = jax.random.permutation(jax.random.key(3), cfg.vocab_size)[None, :cfg.seq_len]
    tok = tok.astype(jnp.int32)
    graphdef, state = nnx.split(model)
    pos = 6

    def logit_sum(state):
        return nnx.merge(graphdef, state)(tok)[0, pos].sum()

    grad_VxD = jax.jit(jax.grad(logit_sum))(state)["embed"][...]
    grad_LxD = grad_VxD[tok[0]]
    assert float(jnp.abs(grad_LxD[pos + 1:]).max()) == 0.0
    assert float(jnp.abs(grad_LxD[:pos + 1]).min(axis=1).max()) > 0.0


def test_jit_matches_eager():
    cfg = tiny(qk_norm=True)
    model = build(cfg)
    tok = tokens(cfg)
    eager = model(tok)
    graphdef, state = nnx.split(model)
    jitted = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t))(state, tok)
    np.testing.assert_allclose(np.asarray(eager), np.asarray(jitted), rtol=1e-5, atol=1e-5)


def test_param_count_contract_random_shapes():
    rng = np.random.default_rng(0)
    for _ in range(12):
        cfg = ModelConfig(
            vocab_size=int(rng.integers(2, 400)), seq_len=int(rng.integers(1, 64)),
            n_layers=int(rng.integers(1, 6)), d_model=int(rng.integers(1, 80)),
            n_heads=int(rng.integers(1, 6)), head_dim=int(rng.integers(1, 24)),
            d_ff=int(rng.integers(1, 200)), mlp=str(rng.choice(["swiglu", "gelu"])),
            tie_embeddings=bool(rng.integers(2)), qk_norm=bool(rng.integers(2)))
        assert abstract_count(cfg) == expected_param_count(cfg), cfg


def test_param_count_matches_flops_module():
    flops = pytest.importorskip("scaling.flops")
    for changes in ({}, dict(tie_embeddings=False), dict(mlp="gelu", qk_norm=True)):
        cfg = tiny(**changes)
        assert count_params(build(cfg)) == flops.param_counts(cfg)["total"]


def test_tied_vs_untied_and_gelu_counts():
    cfg = tiny()
    tied = count_params(build(cfg))
    untied = count_params(build(tiny(tie_embeddings=False)))
    assert untied - tied == cfg.d_model * cfg.vocab_size
    gelu = count_params(build(tiny(mlp="gelu")))
    assert tied - gelu == cfg.n_layers * cfg.d_model * cfg.d_ff
    qk = count_params(build(tiny(qk_norm=True)))
    assert qk - tied == cfg.n_layers * 2 * cfg.head_dim
    assert tied == expected_param_count(cfg)


def test_qk_norm_makes_attention_invariant_to_query_key_scale():
    tok = tokens(tiny())
    for qk_norm, invariant in ((True, True), (False, False)):
        model = build(tiny(qk_norm=qk_norm))
        before = np.asarray(apply(model, tok))
        model.blocks.wq[...] = model.blocks.wq[...] * 5.0
        model.blocks.wk[...] = model.blocks.wk[...] * 0.3
        after = np.asarray(apply(model, tok))
        assert np.allclose(before, after, rtol=1e-4, atol=1e-4) == invariant


def test_rope_depends_only_on_relative_position():
    k = 10
    cos, sin = rope_angles(64, k)
    q_1x1x1xK = jax.random.normal(jax.random.key(0), (1, 1, 1, k))
    k_1x1x1xK = jax.random.normal(jax.random.key(1), (1, 1, 1, k))

    def at(x, pos):
        return apply_rope(x, cos[pos:pos + 1], sin[pos:pos + 1])[0, 0, 0]

    dots = [float(at(q_1x1x1xK, m) @ at(k_1x1x1xK, m - 3)) for m in (3, 10, 40, 63)]
    np.testing.assert_allclose(dots, dots[0], rtol=1e-5)
    assert abs(float(at(q_1x1x1xK, 10) @ at(k_1x1x1xK, 2)) - dots[0]) > 1e-3
    np.testing.assert_allclose(float(jnp.linalg.norm(at(q_1x1x1xK, 37))),
                               float(jnp.linalg.norm(q_1x1x1xK)), rtol=1e-5)


def test_loss_at_init_near_log_vocab_and_z_loss():
    cfg = tiny(vocab_size=256, d_model=32, n_heads=4, head_dim=8)
    model = build(cfg)
    batch = tokens(cfg, batch=4, length=cfg.seq_len + 1)
    graphdef, state = nnx.split(model)
    loss_fn = jax.jit(lambda s, b, z: loss_and_metrics(nnx.merge(graphdef, s), b, z_loss=z))
    loss, metrics = loss_fn(state, batch, 0.0)
    assert abs(float(loss) - math.log(256)) < 0.1
    untied = build(tiny(vocab_size=256, d_model=32, n_heads=4, head_dim=8, tie_embeddings=False))
    untied_loss, _ = loss_and_metrics(untied, batch)
    assert abs(float(untied_loss) - math.log(256)) < 0.1
    assert float(metrics["ce"]) == float(loss)

    # Independent cross-entropy and z-loss from the logits.
    logits = np.asarray(apply(model, batch[:, :-1]), np.float64)
    logz = np.log(np.exp(logits).sum(-1))
    targets = np.asarray(batch[:, 1:])
    ce = np.mean(logz - np.take_along_axis(logits, targets[..., None], -1)[..., 0])
    z_loss, metrics_z = loss_fn(state, batch, 1e-2)
    np.testing.assert_allclose(float(metrics_z["ce"]), ce, rtol=1e-5)
    np.testing.assert_allclose(float(z_loss), ce + 1e-2 * np.mean(logz ** 2), rtol=1e-5)


def test_bf16_compute_keeps_float32_logits_and_params():
    cfg = tiny()
    tok = tokens(cfg)
    f32 = build(cfg)
    bf16 = build(cfg, compute_dtype=jnp.bfloat16)
    out = apply(bf16, tok)
    assert out.dtype == jnp.float32
    assert bf16.blocks.wq[...].dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), np.asarray(apply(f32, tok)), atol=0.1)
    half = build(cfg, param_dtype=jnp.bfloat16, compute_dtype=jnp.bfloat16)
    assert half.embed[...].dtype == jnp.bfloat16 and apply(half, tok).dtype == jnp.float32


def test_remat_and_unroll_do_not_change_outputs():
    cfg = tiny(n_layers=4)
    tok = tokens(cfg)
    plain = apply(build(cfg), tok)
    for kwargs in (dict(remat=True), dict(scan_unroll=2)):
        np.testing.assert_allclose(np.asarray(apply(build(cfg, **kwargs), tok)), np.asarray(plain),
                                   rtol=1e-5, atol=1e-5)


def test_sharding_metadata_on_every_param():
    model = build(tiny(qk_norm=True, tie_embeddings=False))
    specs = nnx.get_partition_spec(nnx.state(model, nnx.Param))
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    assert len(leaves) == len(spec_leaves) == 14
    for value, spec in zip(leaves, spec_leaves, strict=True):
        assert len(spec) == value.ndim
        assert set(spec) <= LOGICAL_AXES
    # stacked block parameters lead with the layers axis
    for name, var in vars(model.blocks).items():
        if isinstance(var, nnx.Param):
            assert var.get_metadata()["out_sharding"][0] == "layers", name


def test_program_size_does_not_grow_with_depth():
    """The scan keeps one traced copy of a block: the jaxpr is the same size at 2 and 16
    layers (compile time follows; measured in the report)."""
    sizes = []
    for n_layers in (2, 16):
        graphdef, state = nnx.split(build(tiny(n_layers=n_layers)))
        jaxpr = jax.make_jaxpr(lambda s, g=graphdef: nnx.merge(g, s)(tokens(tiny())))(state)
        sizes.append(len(str(jaxpr)))
    assert abs(sizes[1] - sizes[0]) < 0.02 * sizes[0], sizes


def test_attention_implementation_choice(monkeypatch):
    assert attention_implementation("auto", jnp.float32, 64) == "chunked"  # CPU here
    # jax 0.10's implementation=None never picks cuDNN, so "auto" must ask for it itself.
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert attention_implementation("auto", jnp.bfloat16, 64) == "cudnn"
    assert attention_implementation("auto", jnp.float16, 128) == "cudnn"
    assert attention_implementation("auto", jnp.float32, 64) == "xla"  # cuDNN: half only
    assert attention_implementation("auto", jnp.bfloat16, 36) == "xla"  # not a multiple of 8
    assert attention_implementation("auto", jnp.bfloat16, 256) == "xla"
    assert attention_implementation("xla", jnp.bfloat16, 64) == "xla"
    with pytest.raises(ValueError, match="attention"):
        build(tiny(), attention="flash")


@pytest.mark.parametrize("seq_len", [1, 15, 16, 33, 128, 257])
def test_chunked_attention_matches_xla_kernel_values_and_gradients(seq_len):
    # 257 = 8 uneven query blocks; 15 = one block (fewer than 16 queries per block).
    keys = jax.random.split(jax.random.key(seq_len), 4)
    q, k, v, g = (jax.random.normal(key, (2, seq_len, 3, 8)) for key in keys)

    def xla(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla")

    np.testing.assert_allclose(np.asarray(chunked_causal_attention(q, k, v)),
                               np.asarray(xla(q, k, v)), rtol=2e-5, atol=2e-5)
    grads = jax.vjp(chunked_causal_attention, q, k, v)[1](g)
    want = jax.vjp(xla, q, k, v)[1](g)
    for got_i, want_i in zip(grads, want, strict=True):
        np.testing.assert_allclose(np.asarray(got_i), np.asarray(want_i), rtol=1e-4, atol=1e-4)


def plain_causal_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK):
    """The textbook formula: full masked scores, softmax, values (the reference)."""
    seq_len, head_dim = q_BxLxHxK.shape[1], q_BxLxHxK.shape[-1]
    s_BxHxLxS = jnp.einsum("blhk,bshk->bhls", q_BxLxHxK, k_BxLxHxK) / math.sqrt(head_dim)
    causal_LxS = jnp.tril(jnp.ones((seq_len, seq_len), bool))
    p_BxHxLxS = jax.nn.softmax(jnp.where(causal_LxS, s_BxHxLxS, -jnp.inf), axis=-1)
    return jnp.einsum("bhls,bshk->blhk", p_BxHxLxS, v_BxLxHxK)


@pytest.mark.parametrize(("seq_len", "n_blocks"), [(64, 4), (100, 8), (96, 3), (40, 1)])
def test_chunked_attention_gradients_equal_plain_attention(seq_len, n_blocks):
    # The chunked kernel's gradients (block slicing, per-block softmax) must be jax.grad's
    # of the plain masked formula. The loss weights every output differently, so a wrong
    # causal mask or a misplaced key-block gradient shows.
    keys = jax.random.split(jax.random.key(seq_len + n_blocks), 4)
    q, k, v, w = (jax.random.normal(key, (2, seq_len, 3, 16)) for key in keys)

    def loss(attention, q, k, v):
        return jnp.sum(w * jnp.tanh(attention(q, k, v)))

    chunked = partial(chunked_causal_attention, n_blocks=n_blocks)
    got = jax.jit(jax.grad(partial(loss, chunked), argnums=(0, 1, 2)))(q, k, v)
    want = jax.grad(partial(loss, plain_causal_attention), argnums=(0, 1, 2))(q, k, v)
    for got_i, want_i in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(got_i), np.asarray(want_i), rtol=1e-4, atol=2e-5)
    # Future keys get no gradient from past queries: the last key's only query is itself.
    q_last_only = jax.grad(lambda k: jnp.sum(chunked(q, k, v)[:, :-1]))(k)
    np.testing.assert_array_equal(np.asarray(q_last_only[:, -1]), 0.0)


def test_dense_custom_vjp_equals_autodiff_of_einsum():
    # dense's CPU weight gradients are hand-written matmuls (both operand orders).
    keys = jax.random.split(jax.random.key(3), 4)
    x = jax.random.normal(keys[0], (2, 5, 6, 4))
    w_wide = jax.random.normal(keys[1], (6, 4, 9))    # contraction 24 > output 9
    w_narrow = jax.random.normal(keys[2], (6, 4, 40))  # contraction 24 <= output 40
    for w in (w_wide, w_narrow):
        g = jax.random.normal(keys[3], (2, 5, w.shape[-1]))
        got = jax.grad(lambda x, w, g=g: jnp.sum(g * dense(x, w, 2)), argnums=(0, 1))(x, w)
        want = jax.grad(lambda x, w, g=g: jnp.sum(g * jnp.einsum("abcd,cdo->abo", x, w)),
                        argnums=(0, 1))(x, w)
        for got_i, want_i in zip(got, want, strict=True):
            np.testing.assert_allclose(np.asarray(got_i), np.asarray(want_i), rtol=1e-5,
                                       atol=1e-5)


def test_chunked_attention_in_the_model_equals_the_xla_kernel():
    cfg = tiny(seq_len=100)
    tok = tokens(cfg)
    np.testing.assert_allclose(np.asarray(apply(build(cfg, attention="chunked"), tok)),
                               np.asarray(apply(build(cfg, attention="xla"), tok)),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_learns_markov_source_down_to_its_entropy_floor(tmp_path):
    """End to end with scaling.data: a 1-layer model trained briefly approaches the exact
    entropy rate of the synthetic order-1 Markov source and beats the unigram baseline
    (a target off by one position or a leaky mask could not land here)."""
    optax = pytest.importorskip("optax")
    from scaling.config import DataConfig
    from scaling.data import eval_batches, load_tokens, train_batch, unigram_entropy

    data = load_tokens(DataConfig(source="synthetic:tokens=100000,vocab=32,alpha=0.3"),
                       seq_len=32, cache_dir=tmp_path)
    cfg = ModelConfig(vocab_size=32, seq_len=32, n_layers=1, d_model=32, n_heads=2,
                      head_dim=16, d_ff=64)
    graphdef, state = nnx.split(build(cfg))
    tx = optax.adam(1e-2)
    opt_state = tx.init(state)

    def loss_fn(state, batch):
        return loss_and_metrics(nnx.merge(graphdef, state), batch)[0]

    @jax.jit
    def step(state, opt_state, batch):
        grads = jax.grad(loss_fn)(state, batch)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(state, updates), opt_state

    for k in range(300):
        batch = train_batch(data.train, seed=0, step=k, batch_size=16, seq_len=32)
        state, opt_state = step(state, opt_state, jnp.asarray(batch))
    eval_fn = jax.jit(loss_fn)
    batches = eval_batches(data.valid, eval_tokens=8192, batch_size=16, seq_len=32)
    eval_loss = float(np.mean([float(eval_fn(state, jnp.asarray(b))) for b in batches]))
    assert data.entropy_floor - 0.05 < eval_loss < data.entropy_floor + 0.2
    assert eval_loss < unigram_entropy(data.valid) - 0.5
