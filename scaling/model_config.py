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
PARAMETERIZATIONS = ("sp", "mup")
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
    # "sp" (standard) or "mup" (see scaling.model: output multiplier, attention 1/head_dim,
    # per-group Adam learning rates), which needs the width the base lr was tuned at.
    parameterization: str = "sp"
    base_width: int | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "seq_len", "n_layers", "d_model", "n_heads", "head_dim", "d_ff"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"model.{name}: expected a positive integer, got {value!r}")
        if self.mlp not in MLP_KINDS:
            raise ValueError(f"model.mlp: expected one of {', '.join(MLP_KINDS)}, got {self.mlp!r}")
        if self.parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"model.parameterization: expected one of "
                             f"{', '.join(PARAMETERIZATIONS)}, got {self.parameterization!r}")
        if self.parameterization == "mup":
            b = self.base_width
            if not isinstance(b, int) or isinstance(b, bool) or b < 1:
                raise ValueError(f"model.base_width: expected a positive integer under mup, got {b!r}")
        elif self.base_width is not None:
            raise ValueError("model.base_width: only mup takes a base width")

    @property
    def width_mult(self) -> float:
        """d_model / base_width under muP (1 under the standard parameterisation)."""
        if self.parameterization != "mup":
            return 1.0
        assert self.base_width is not None  # __post_init__ requires it under mup
        return self.d_model / self.base_width

    @property
    def d_attn(self) -> int:
        return self.n_heads * self.head_dim

    def to_dict(self) -> dict:
        return drop_default_parameterization(asdict(self))


def drop_default_parameterization(d: dict) -> dict:
    """The model dict without the parameterisation fields when they are the standard
    default, so configs (and run-name digests) from before muP existed stay the same."""
    if d.get("parameterization") == "sp" and d.get("base_width") is None:
        d = {k: v for k, v in d.items() if k not in ("parameterization", "base_width")}
    return d
