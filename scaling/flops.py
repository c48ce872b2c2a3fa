"""Parameter counts and training FLOPs of one `ModelConfig`, under named conventions.

Everything here is a pure function of a `ModelConfig` (and a token count or budget).
FLOPs are *training* FLOPs (forward + backward), per token unless a name says otherwise;
the FLOPs of a run are `flops_per_token(cfg, convention) * n_tokens`.

Parameter groups (the model family of `scaling/model_config.py`, no biases anywhere):
  embedding    vocab_size x d_model
  attention    n_layers * 4 * d_model * d_attn            (Wq, Wk, Wv, Wo; d_attn = n_heads*head_dim)
  mlp          n_layers * 3 * d_model * d_ff  (SwiGLU)  or  n_layers * 2 * d_model * d_ff (GELU)
  norms        n_layers * 2 * d_model + d_model (final)  [+ n_layers * 2 * head_dim with QK-norm]
  unembedding  d_model x vocab_size, or 0 when tied to the embedding
  total = sum of the groups;  non_embedding = total - embedding - unembedding.

Conventions (`CONVENTIONS`); which N each uses matters, so it is spelled out:
  "6N"          6 * N_total. The usual C = 6 N D with N the total parameter count (Chinchilla's
                choice of N). Counts the embedding matrix as if it were a matmul.
  "kaplan"      6 * N_nonemb + 6 * n_layers * seq_len * d_attn. Kaplan et al. 2020 (arXiv
                2001.08361) Table 1: C_forward = 2 N + 2 n_layer n_ctx d_attn with N the
                non-embedding count; backward = 2 x forward. Excludes embedding and logits.
  "chinchilla"  Hoffmann et al. 2022 (arXiv 2203.15556) Appendix F, forward pass per token:
                embeddings 2 V d; per layer QKV 2*3 d d_attn, K@Q logits 2 L d_attn, softmax
                3 H L, softmax@V 2 L d_attn, output projection 2 d_attn d, dense block
                2 * (#FFW matrices) d d_ff; final logits 2 d V; backward = 2 x forward.
                The paper's dense block has 2 matrices; SwiGLU has 3, so we count 3 for it.
                Attention is not halved for the causal mask (the paper does not).
  "deepseek"    72 n_layers d_model^2 + 12 n_layers d_model seq_len. DeepSeek LLM 2024 (arXiv
                2401.02954) Sec. 3.1, "non-embedding FLOPs/token" M: excludes the vocabulary
                computation; assumes 12 d_model^2 weights per layer (d_attn = d_model, 4x FFW
                or 8/3x SwiGLU), i.e. it does not read d_ff or the head layout.

`flops_breakdown` splits each convention into weight matmuls, attention (the seq_len-dependent
score/softmax/value work), and embedding/logits, which sum to its total.
"""

from __future__ import annotations

from scaling.errors import UserError
from scaling.model_config import ModelConfig, mlp_matrices

CONVENTIONS = ("6N", "kaplan", "chinchilla", "deepseek")
BREAKDOWN_PARTS = ("weight_matmuls", "attention", "embedding", "total")

# FLOPs of the backward pass are taken as twice the forward pass (Kaplan; Chinchilla App. F).
_TRAIN_OVER_FORWARD = 3


def check_convention(convention: str, where: str = "convention") -> str:
    """The canonical spelling of a FLOP convention, or a one-line UserError naming `where`."""
    if isinstance(convention, str):
        for name in CONVENTIONS:
            if convention.lower() == name.lower():
                return name
    raise UserError(f"{where}: expected one of {', '.join(CONVENTIONS)}, got {convention!r}")


def param_counts(cfg: ModelConfig) -> dict[str, int]:
    """Parameter counts by group (see the module docstring); the groups sum to "total"."""
    d, n_layers = cfg.d_model, cfg.n_layers
    embedding = cfg.vocab_size * d
    attention = n_layers * 4 * d * cfg.d_attn
    mlp = n_layers * mlp_matrices(cfg.mlp) * d * cfg.d_ff
    norms = n_layers * 2 * d + d + (n_layers * 2 * cfg.head_dim if cfg.qk_norm else 0)
    unembedding = 0 if cfg.tie_embeddings else cfg.vocab_size * d
    total = embedding + attention + mlp + norms + unembedding
    return {
        "embedding": embedding,
        "attention": attention,
        "mlp": mlp,
        "norms": norms,
        "unembedding": unembedding,
        "total": total,
        "non_embedding": total - embedding - unembedding,
    }


def flops_breakdown(cfg: ModelConfig, convention: str) -> dict[str, float]:
    """Training FLOPs per token under `convention`, split into BREAKDOWN_PARTS.

    "weight_matmuls": products with weight matrices inside the blocks (the 6N-like part);
    "attention": score, softmax and value products, which grow with seq_len;
    "embedding": embedding and logits; "total": their sum.
    """
    convention = check_convention(convention)
    counts = param_counts(cfg)
    d, n_layers, seq_len, d_attn = cfg.d_model, cfg.n_layers, cfg.seq_len, cfg.d_attn
    if convention == "6N":
        weight = 6.0 * counts["non_embedding"]
        attention = 0.0
        embedding = 6.0 * (counts["embedding"] + counts["unembedding"])
    elif convention == "kaplan":
        weight = 6.0 * counts["non_embedding"]
        attention = 6.0 * n_layers * seq_len * d_attn
        embedding = 0.0
    elif convention == "chinchilla":
        per_layer_weight = (2 * 3 * d * d_attn  # Q, K, V projections
                            + 2 * d_attn * d  # output projection
                            + 2 * mlp_matrices(cfg.mlp) * d * cfg.d_ff)  # dense block
        per_layer_attention = (2 * seq_len * d_attn  # K @ Q logits
                               + 3 * cfg.n_heads * seq_len  # softmax
                               + 2 * seq_len * d_attn)  # softmax @ V
        weight = float(_TRAIN_OVER_FORWARD * n_layers * per_layer_weight)
        attention = float(_TRAIN_OVER_FORWARD * n_layers * per_layer_attention)
        # App. F counts the embedding lookup as a matmul, and the logits separately, even
        # when the two share one matrix.
        embedding = float(_TRAIN_OVER_FORWARD * (2 * cfg.vocab_size * d + 2 * d * cfg.vocab_size))
    else:  # deepseek
        weight = 72.0 * n_layers * d * d
        attention = 12.0 * n_layers * d * seq_len
        embedding = 0.0
    return {"weight_matmuls": weight, "attention": attention, "embedding": embedding,
            "total": weight + attention + embedding}


def flops_per_token(cfg: ModelConfig, convention: str) -> float:
    """Training (forward + backward) FLOPs per token under `convention`."""
    return flops_breakdown(cfg, convention)["total"]


def flops_all(cfg: ModelConfig) -> dict[str, float]:
    """Training FLOPs per token under every convention, keyed by name."""
    return {name: flops_per_token(cfg, name) for name in CONVENTIONS}


def run_flops(cfg: ModelConfig, n_tokens: float, convention: str) -> float:
    """Training FLOPs of a run of `n_tokens` tokens."""
    return flops_per_token(cfg, convention) * n_tokens


def tokens_for_budget(cfg: ModelConfig, budget: float, convention: str) -> float:
    """Exact (unrounded) token count at which `cfg` spends `budget` FLOPs; callers round."""
    return budget / flops_per_token(cfg, convention)
