"""ModelConfig: the shape of one decoder-only transformer (the model family).

What `scaling/model.py` builds, `scaling/flops.py` counts and `scaling/shapes.py` solves for:
token embedding (vocab_size x d_model); n_layers pre-norm blocks, each with
RMSNorm (scale only) -> causal multi-head attention with RoPE (Wq, Wk, Wv: d_model x
n_heads*head_dim, Wo: n_heads*head_dim x d_model, no biases; optional QK-norm with a
head_dim scale each for q and k) -> RMSNorm -> MLP (SwiGLU: three d_model x d_ff matrices;
GELU: two), no biases; a final RMSNorm; an unembedding (d_model x vocab_size) unless tied.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

MLP_KINDS = ("swiglu", "gelu")
# Tokens per training sequence when a spec, a plan or the grid names none (the demo's CPU
# scale). `scaling recommend` defaults to Chinchilla's 2048 instead: it sizes models for the
# paper's setting, not for this suite's runs.
DEFAULT_SEQ_LEN = 128


def mlp_matrices(mlp: str) -> int:
    return 3 if mlp == "swiglu" else 2


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    seq_len: int
    n_layers: int
    d_model: int
    n_heads: int
    head_dim: int
    d_ff: int
    mlp: str = "swiglu"
    tie_embeddings: bool = True
    qk_norm: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "seq_len", "n_layers", "d_model", "n_heads", "head_dim", "d_ff"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"model.{name}: expected a positive integer, got {value!r}")
        if self.mlp not in MLP_KINDS:
            raise ValueError(f"model.mlp: expected one of {', '.join(MLP_KINDS)}, got {self.mlp!r}")

    @property
    def d_attn(self) -> int:
        return self.n_heads * self.head_dim

    def to_dict(self) -> dict:
        return asdict(self)
