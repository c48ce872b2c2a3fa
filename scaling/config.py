"""RunConfig: everything that determines one training run, as frozen dataclasses.

`config.json` in a run directory is `RunConfig.to_dict()` plus derived, informational
fields (parameter counts by group, FLOPs under every convention, corpus hash) that
`from_dict` ignores on the way back in. The run name is a pure function of the config,
so the same grid point always maps to the same directory (the resume key).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from scaling.errors import UserError
from scaling.flops import param_counts
from scaling.model_config import ModelConfig, drop_default_parameterization

SCHEDULES = ("cosine", "constant", "wsd")
_DATA_ADDED = {"text_column": "text", "vocab_size": None}  # DataConfig keys added later


@dataclass(frozen=True)
class DataConfig:
    source: str = "stdlib"  # scaling.sources: stdlib | text: | parquet: | hf: | hf-disk: | tokens: | synthetic
    tokenizer: str = "bytes"  # "bytes" | "bpe:V" | "json:PATH"
    eval_tokens: int = 65_536  # held-out tokens, the same for every run of a sweep
    max_epochs: float | None = None  # refuse plans needing more passes over unique data
    text_column: str = "text"  # parquet:, hf:, hf-disk: the column holding the text
    vocab_size: int | None = None  # tokens: the vocabulary the ids were made with
    # (name, source) pairs, sorted by name: extra held-out sets (scaling.evals); a dict is
    # accepted too. config.json holds them as {name: source} and omits them when empty.
    eval_sets: tuple[tuple[str, str], ...] = ()
    tasks: tuple[tuple[str, str], ...] = ()  # (name, JSONL path): scaling.tasks

    def __post_init__(self) -> None:
        object.__setattr__(self, "eval_sets", named_values(self.eval_sets, "data.eval_sets"))
        object.__setattr__(self, "tasks", named_values(self.tasks, "data.tasks"))


METRIC_NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"  # part of a metric key: no "/"


def named_values(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    """{name: string} (or (name, string) pairs) as sorted pairs; UserError naming `where`."""
    pairs = value.items() if isinstance(value, dict) else value
    try:
        pairs = [(k, v) for k, v in pairs]
    except (TypeError, ValueError):
        raise UserError(f"{where}: expected a table of name = string") from None
    for name, text in pairs:
        if not isinstance(name, str) or not re.fullmatch(METRIC_NAME_PATTERN, name):
            raise UserError(f"{where}: name {name!r}: expected letters, digits, '_', '-' or '.'")
        if not isinstance(text, str) or not text:
            raise UserError(f"{where}.{name}: expected a non-empty string, got {text!r}")
    if len({name for name, _ in pairs}) != len(pairs):
        raise UserError(f"{where}: a name is given twice")
    return tuple(sorted(pairs))


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 3e-3  # peak learning rate
    weight_decay: float = 0.1  # decoupled (AdamW), applied to matrices only
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # global-norm clipping; 0 disables
    z_loss: float = 0.0  # coefficient of the log(Z)^2 penalty, for small-model stability


@dataclass(frozen=True)
class ScheduleConfig:
    kind: str = "cosine"  # "cosine" (warmup, cosine to final_lr_frac) | "constant" | "wsd"
    warmup_steps: int = 0
    final_lr_frac: float = 0.1  # Chinchilla: cosine to 10% over the run's own horizon
    decay_frac: float = 0.2  # wsd: the cooldown's share of the run (1-sqrt shape)
    stable_steps: int | None = None  # wsd branch: length of the shared stable phase


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    batch_size: int = 16  # sequences per optimizer step (across all devices, all micro-batches)
    grad_accum: int = 1  # micro-batches per step
    n_steps: int = 100
    seed: int = 0
    eval_every: int = 0  # 0: only at the end
    log_every: int = 10
    checkpoint_every: int = 0  # 0: only at the end (and on SIGTERM)
    sweep: str = ""  # name of the sweep this run belongs to, "" for a lone run
    budget: float | None = None  # nominal FLOP budget this run was sized for
    convention: str = "6N"  # FLOP convention used to size it

    @property
    def n_tokens(self) -> int:
        return self.n_steps * self.batch_size * self.model.seq_len

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"] = drop_default_parameterization(d["model"])  # digests stay as before muP
        for key in ("eval_sets", "tasks"):  # absent when empty: older run names stay valid
            d["data"][key] = dict(getattr(self.data, key))
            if not d["data"][key]:
                del d["data"][key]
        return d

    @classmethod
    def from_dict(cls, d: dict, *, where: str = "config") -> RunConfig:
        """Build from a dict, ignoring the derived keys that `config.json` adds."""
        if not isinstance(d, dict):
            raise UserError(f"{where}: expected a JSON object")
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {k: v for k, v in d.items() if k in known}
        sections = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig,
                    "schedule": ScheduleConfig}
        for name, klass in sections.items():
            if name in kwargs:
                kwargs[name] = _build(klass, kwargs[name], f"{where}.{name}")
        if "model" not in kwargs:
            raise UserError(f"{where}.model: missing")
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise UserError(f"{where}: {e}") from None

    def run_name(self) -> str:
        """Parseable name: budget, size, tokens, then a hash of the full config.

        e.g. `c1.0e+12_n123456_d9.9e+06_L4_D128_3f2a9c1b` (see sweeps.grid.parse_run_name).
        """
        n_params = param_counts(self.model)["total"]
        budget = f"c{self.budget:.1e}_" if self.budget else ""
        d = self.to_dict()
        for key, default in _DATA_ADDED.items():  # runs made before these keys keep their names
            if d["data"].get(key) == default:
                d["data"].pop(key)
        digest = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]
        return (f"{budget}n{n_params}_d{self.n_tokens:.1e}_L{self.model.n_layers}"
                f"_D{self.model.d_model}_{digest}")

    def with_(self, **changes: Any) -> RunConfig:
        return replace(self, **changes)


def _build(klass: type, d: Any, where: str) -> Any:
    if isinstance(d, klass):
        return d
    if not isinstance(d, dict):
        raise UserError(f"{where}: expected a table/object")
    names = {f.name for f in fields(klass)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r} (expected one of {', '.join(sorted(names))})")
    try:
        return klass(**d)
    except (TypeError, ValueError) as e:
        raise UserError(f"{where}: {e}") from None

