"""Sweep specs: a TOML file parsed once into frozen dataclasses, every field validated.

A spec names a study: the data, the model family, the budgets, how each budget's grid of
sizes is laid out, the FLOP convention that sizes runs, the schedule, the hyper-parameter
recipe, seeds and how to launch. Unknown keys are errors (a typo must not silently fall
back to a default), and every error is one line naming the file and the field::

    examples/demo.toml: budgets.count: expected an integer >= 1, got 'x'

Example (every table optional except ``budgets``)::

    name = "demo"
    # label = "dclm"             # what this ladder varies (data set, architecture, optimiser):
                                 # recorded in every run; `scaling fit`/`compare` group by it
    convention = "6N"            # 6N | kaplan | chinchilla | deepseek
    seeds = [0]

    [data]
    source = "stdlib"            # stdlib | text:PATH | parquet:PATH | hf:NAME[:CONFIG][:SPLIT]
                                 # | hf-disk:PATH | tokens:PATH | synthetic[:...]
    tokenizer = "bytes"          # bytes | bpe:V | json:PATH (a tokenizer.json; sets the vocabulary)
    # text_column = "text"       # parquet:, hf:, hf-disk: the column holding the text
    # vocab_size = 50257         # tokens: required, the ids' vocabulary (checked)
    seq_len = 128
    eval_tokens = 65536
    max_epochs = 4.0             # refuse plans needing more passes over unique data
    eval_sets = { prose = "text:docs/" }   # extra held-out sets: name -> source (scaling.evals)
    tasks = { next_line = "data/tasks/stdlib_next_line.jsonl" }   # multiple choice (scaling.tasks)

    [model]
    mlp = "swiglu"               # swiglu | gelu
    tie_embeddings = true
    qk_norm = false
    shape = "solver"             # solver (exact counts) | ladder (one dial: depth)
    # aspect_ratio = 8.0         # ladder only: d_model / n_layers (default 64)
    parameterization = "sp"      # sp | mup (lr transfers across width; scaling.model)
    # base_width = 64            # mup only: the width where mup equals sp

    [budgets]
    values = [1e11, 3e11, 1e12]  # or: min = 1e11, max = 1e12, count = 3 (log-spaced)

    [grid]
    sizes = 6                    # sizes per budget, log-spaced over `span`
    span = 30.0                  # largest / smallest N of a budget
    center = "chinchilla"        # chinchilla (tokens_per_param) | fit (earlier budgets' fit)
    tokens_per_param = 20.0
    # params = [1e4, 3e4, 1e5]   # explicit sizes instead, the same for every budget

    [schedule]
    kind = "cosine"              # cosine | constant | wsd
    final_lr_frac = 0.1
    decay_frac = 0.2             # wsd: cooldown share of each run
    share_stable = true          # wsd: one stable run per size, only cooldowns added

    [optim]
    recipe = "deepseek"          # see sweeps.hparams (deepseek | tiny-bytes | constant)
    # lr = 1e-2; batch_size = 4  # fixed values win over the recipe
    # weight_decay = 0.1; beta2 = 0.95  # likewise (default: the recipe's, 0.1 and 0.95)
    # warmup_tokens_per_param = 1.0     # Porian et al. 2024 options, see sweeps.hparams
    # beta2_ref_tokens = 524288; wd_timescale = 0.2

    [train]
    log_every = 10
    eval_every = 0               # 0: only at the end
    checkpoint_every = 0         # 0: only at the end (and on SIGTERM)

    [checks]
    min_steps = 100              # warn below this many optimiser steps
    min_sizes = 5
    strict = false               # true: every warning refuses the plan

    [tracking]                   # optional: pip install 'scaling-suite[tracking]'
    trackers = ["tensorboard"]   # wandb | tensorboard
    # project = "demo"; wandb_mode = "offline"   # then: wandb sync RUNS/NAME/*/wandb/offline-run-*

    [launcher]
    kind = "local"               # local | slurm
    workers = 1
    # nodes = 2; tasks_per_node = 4  # slurm: one JAX process per node or per GPU
    # group_replicas = false     # local: runs differing only in lr, seed, ... train as one vmapped group

    [tune]                       # optional: fit lr*(N, D) first (sweeps.tune); then
    cells = [[1e4, 20], [3e4, 20], [1e4, 80]]   # optim.recipe = "fitted:<name>" uses it
    lr_multipliers = [0.25, 0.5, 1, 2, 4]       # x the recipe's lr for each cell
    # batch_sizes = [4, 8, 16]   # also tune the batch (sequences; multiples of grad_accum):
                                 # lr*(N, D, B) and B*(C), which the fitted recipe then uses
    # recipe = "tiny-bytes"      # the recipe tuned around (default optim.recipe; required
                                 # when optim.recipe is this spec's own "fitted:<name>")
    bootstrap = 200
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from analysis.lr_law import TUNE_SUFFIX
from scaling.config import METRIC_NAME_PATTERN, SCHEDULES, DataConfig, named_values
from scaling.corpus import parse_synthetic
from scaling.errors import UserError, positive_number
from scaling.evals import check_data_inputs
from scaling.flops import CONVENTIONS
from scaling.model_config import DEFAULT_SEQ_LEN, PARAMETERIZATIONS
from scaling.shapes import SHAPE_KINDS, shape_recipe
from scaling.sources import scheme
from scaling.tokenizer import parse_tokenizer
from scaling.tracking import check_installed
from sweeps import hparams
from sweeps.grid import MAX_BUDGET, MIN_SIZES
from sweeps.ownership import spec_hash

NAME_PATTERN = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"  # a sweep's name is a directory name
SLURM_PATTERN = r"[A-Za-z0-9._,&|:\[\]*-]+"  # what Slurm names can be (they reach sbatch)
BUDGET: dict[str, Any] = {"lo": 0, "hi": MAX_BUDGET, "lo_open": True}  # bounds of one FLOP budget
DEFAULT_MUP_BASE_WIDTH = 64
# optim.recipe: a named recipe, or "fitted:<sweep>" (a [tune] block's law, read when planning)
RECIPE_PATTERN = f"(?:{'|'.join(hparams.RECIPES)}|{hparams.FITTED_PREFIX}{NAME_PATTERN})"


# ----------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class DataSpec:
    source: str = "stdlib"
    tokenizer: str = "bytes"
    seq_len: int = DEFAULT_SEQ_LEN
    eval_tokens: int = 65_536
    max_epochs: float | None = None
    text_column: str = "text"
    vocab_size: int | None = None
    eval_sets: tuple[tuple[str, str], ...] = ()  # (name, source), sorted: scaling.evals
    tasks: tuple[tuple[str, str], ...] = ()  # (name, JSONL path), sorted: scaling.tasks


@dataclass(frozen=True)
class ModelSpec:
    mlp: str = "swiglu"
    tie_embeddings: bool = True
    qk_norm: bool = False
    shape: str = "solver"  # scaling.shapes.SHAPE_KINDS
    aspect_ratio: float | None = None  # ladder only; None: scaling.shapes.DEFAULT_LADDER_ASPECT
    parameterization: str = "sp"  # sp | mup (scaling.model)
    base_width: int | None = None  # mup only: the d_model the lr was tuned at (default 64)

    @property
    def shape_recipe(self):
        """The scaling.shapes recipe these fields name (its .name goes into every run)."""
        return shape_recipe(self.shape, self.aspect_ratio)


@dataclass(frozen=True)
class GridSpec:
    sizes: int = 7
    span: float = 30.0
    center: str = "chinchilla"
    tokens_per_param: float = 20.0
    params: tuple[float, ...] | None = None


@dataclass(frozen=True)
class ScheduleSpec:
    kind: str = "cosine"
    final_lr_frac: float = 0.1
    decay_frac: float = 0.2
    warmup_steps: int | None = None  # None: the recipe's share of each run
    share_stable: bool = True


@dataclass(frozen=True)
class OptimSpec:
    recipe: str = "deepseek"
    lr: float | None = None
    batch_size: int | None = None
    weight_decay: float | None = None  # None: the recipe's (sweeps.hparams.Recipe.weight_decay_for)
    beta1: float = 0.9
    beta2: float | None = None  # None: the recipe's (sweeps.hparams.Recipe.beta2_for)
    grad_clip: float = 1.0
    z_loss: float = 0.0
    overrides: tuple[tuple[str, Any], ...] = ()  # recipe clamps (sweeps.hparams.OVERRIDABLE)


@dataclass(frozen=True)
class TuneSpec:
    """A learning-rate tuning block (sweeps.tune): each cell (target N, tokens per parameter)
    is trained at base lr x each multiplier; the fitted law becomes recipe "fitted:<name>"."""

    cells: tuple[tuple[float, float], ...] = ()
    lr_multipliers: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    bootstrap: int = 200
    level: float = 0.8
    batch_sizes: tuple[int, ...] = ()  # sequences per step, each cell x lr grid; () : the recipe's
    recipe: str | None = None  # the named recipe tuned around (None: optim.recipe)


@dataclass(frozen=True)
class TrainSpec:
    log_every: int = 10
    eval_every: int = 0
    checkpoint_every: int = 0
    grad_accum: int = 1


@dataclass(frozen=True)
class ChecksSpec:
    min_steps: int = 100
    min_sizes: int = 5
    strict: bool = False


@dataclass(frozen=True)
class LauncherSpec:
    kind: str = "local"
    workers: int = 1
    threads_per_worker: int | None = None  # None: the CPU cores divided between workers
    partition: str | None = None
    time_min: int = 60
    cpus_per_task: int = 1
    gpus_per_task: int = 0
    mem_gb: float | None = None
    array_parallelism: int = 64
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    max_requeues: int = 3
    nodes: int = 1  # Slurm only: nodes x tasks_per_node JAX processes per run
    tasks_per_node: int = 1  # one per node, or one per GPU (then gpus_per_task = 1)
    # local: runs differing only in lr/seed/... train as one vmapped group (scaling.replicas);
    # off by default until it is measured faster than separate runs (BENCHMARKS.md)
    group_replicas: bool = False


@dataclass(frozen=True)
class TrackingSpec:
    trackers: tuple[str, ...] = ()  # wandb | tensorboard (the `tracking` extra)
    project: str | None = None  # W&B project (default: the sweep's name)
    entity: str | None = None
    wandb_mode: str | None = None  # online | offline (None: W&B's own setting, WANDB_MODE)

    def for_run(self, sweep_name: str) -> dict | None:
        """The ``tracking`` block of a run's config.json (scaling.tracking reads it)."""
        if not self.trackers:
            return None
        return {"trackers": list(self.trackers), "project": self.project or sweep_name,
                "group": sweep_name, "entity": self.entity, "wandb_mode": self.wandb_mode}


@dataclass(frozen=True)
class SweepSpec:
    name: str
    budgets: tuple[float, ...]
    convention: str = "6N"
    seeds: tuple[int, ...] = (0,)
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    grid: GridSpec = field(default_factory=GridSpec)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    checks: ChecksSpec = field(default_factory=ChecksSpec)
    launcher: LauncherSpec = field(default_factory=LauncherSpec)
    tracking: TrackingSpec = field(default_factory=TrackingSpec)
    tune: TuneSpec | None = None
    label: str | None = None  # names this ladder for per-label fits and `scaling compare`
    path: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("path")
        if d["label"] is None:
            d.pop("label")
        if d["tune"] is None:  # specs without a [tune] block keep their digest
            d.pop("tune")
        d["optim"]["overrides"] = dict(self.optim.overrides)
        return d

    def digest(self) -> str:
        """Hash of what the spec plans (launcher options excluded: running the same study
        with more workers or on another cluster is still the same study)."""
        d = self.to_dict()
        d.pop("launcher")
        for key, default in (("text_column", "text"), ("vocab_size", None), ("eval_sets", ()),
                             ("tasks", ())):
            if d["data"][key] == default:  # keys added later: older specs keep their hash
                d["data"].pop(key)
        d.pop("tracking")  # watching the curves elsewhere does not change them
        d.pop("label", None)  # naming the ladder does not change what it trains
        for key, default in (("batch_sizes", ()), ("recipe", None)):
            if d.get("tune") is not None and d["tune"][key] == default:
                d["tune"].pop(key)  # added later: older tune specs keep their hash
        return spec_hash(d)

    @property
    def vocab_size(self) -> int:
        return vocab_size_for(self.data)


def vocab_size_for(data: DataSpec) -> int:
    """The model vocabulary the tokenizer (or the synthetic source) implies."""
    tokenizer = parse_tokenizer(data.tokenizer)  # the trainer parses it whatever the source
    if data.source.startswith("tokens:"):
        if data.vocab_size is None:
            raise UserError("data.vocab_size: required with a tokens: source (the vocabulary "
                            "the ids were made with)")
        return int(data.vocab_size)
    if data.source.startswith("synthetic"):
        return int(parse_synthetic(data.source)["vocab"])
    return tokenizer.vocab_size


# ----------------------------------------------------------------------------- validation


class _Fields:
    """Reads one TOML table, recording which keys were used; leftovers are errors.

    Given a `schema` dict instead (a dry run, see `json_schema`), every typed read writes its
    key's JSON Schema there (type, bounds, choices, default) and returns the default.
    """

    def __init__(self, d: Any, where: str, schema: dict | None = None) -> None:
        if not isinstance(d, dict):
            raise UserError(f"{where or 'spec'}: expected a table, got {_show(d)}")
        self.d, self.where, self.schema = d, where, schema
        self.used: set = set()

    def _read(self, key: str, default: Any, **schema: Any) -> tuple[Any, bool]:
        """(value, whether to check it): a dry run records `key`'s schema and gives the
        default unchecked, as does an absent key whose default is None."""
        if self.schema is not None:
            self.schema[key] = {k: v for k, v in {**schema, "default": default}.items()
                                if v is not None}
            return default, False
        value = self.get(key, default)
        return value, not (value is None and default is None)

    def _key(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, default: Any = None) -> Any:
        self.used.add(key)
        return self.d.get(key, default)

    def has(self, key: str) -> bool:
        return key in self.d

    def table(self, key: str) -> _Fields:
        if self.schema is None:
            return _Fields(self.get(key, {}), self._key(key))
        self.schema[key] = {"type": "object", "additionalProperties": False, "properties": {}}
        return _Fields({}, self._key(key), self.schema[key]["properties"])

    def int(self, key: str, default: Any, lo: int | None = None, hi: int | None = None) -> Any:
        value, check = self._read(key, default, type="integer", minimum=lo, maximum=hi)
        if check and (isinstance(value, bool) or not isinstance(value, int)
                      or (lo is not None and value < lo) or (hi is not None and value > hi)):
            raise UserError(f"{self._key(key)}: expected an integer{_bounds_text(lo, hi)}, got "
                            f"{_show(value)}")
        return value

    def float(self, key: str, default: Any, lo: float | None = None, hi: float | None = None,
              lo_open: bool = False) -> Any:
        value, check = self._read(key, default, type="number", **_number_schema(lo, hi, lo_open))
        return _number(value, self._key(key), lo, hi, lo_open) if check else value

    def bool(self, key: str, default: bool | None) -> Any:
        value, check = self._read(key, default, type="boolean")
        if check and not isinstance(value, bool):
            raise UserError(f"{self._key(key)}: expected true or false, got {_show(value)}")
        return value

    def str(self, key: str, default: Any, choices: tuple[str, ...] | None = None,
            pattern: str | None = None) -> Any:
        value, check = self._read(key, default, type="string", minLength=1,
                                  enum=list(choices or ()) or None,
                                  pattern=pattern and f"^{pattern}$")
        if not check:
            return value
        if not isinstance(value, str) or not value:
            raise UserError(f"{self._key(key)}: expected a non-empty string, got {_show(value)}")
        if choices and value not in choices:
            raise UserError(f"{self._key(key)}: expected one of {', '.join(choices)}, got {value!r}")
        if pattern and not re.fullmatch(pattern, value):
            raise UserError(f"{self._key(key)}: unexpected characters in {value!r}")
        return value

    def done(self) -> None:
        unknown = sorted(set(self.d) - self.used)
        if unknown:
            expected = ", ".join(sorted(self.used))
            raise UserError(f"{self._key(unknown[0])}: unknown key (expected one of {expected})")


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _bounds_text(lo: Any, hi: Any, lo_open: bool = False) -> str:
    lo_text, hi_text = (x if isinstance(x, int) else f"{x:g}" for x in (lo or 0, hi or 0))
    if lo is not None and hi is not None:
        return f" > {lo_text} and <= {hi_text}" if lo_open else f" in [{lo_text}, {hi_text}]"
    if lo is not None:
        return f" > {lo_text}" if lo_open else f" >= {lo_text}"
    return f" <= {hi_text}" if hi is not None else ""


def _number_schema(lo: Any, hi: Any, lo_open: bool) -> dict:
    return {"exclusiveMinimum" if lo_open else "minimum": lo, "maximum": hi}


def _number(value: Any, where: str, lo: float | None = None, hi: float | None = None,
            lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"{where}: expected a number{_bounds_text(lo, hi, lo_open)}, got "
                        f"{_show(value)}")
    x = float(value)
    bad = (not math.isfinite(x) or (lo is not None and (x <= lo if lo_open else x < lo))
           or (hi is not None and x > hi))
    if bad:
        raise UserError(f"{where}: expected a finite number{_bounds_text(lo, hi, lo_open)}, got "
                        f"{value!r}")
    return x


# ----------------------------------------------------------------------------- parsing


def load_spec(path: str | os.PathLike) -> SweepSpec:
    """Read and validate a sweep spec; every problem is a one-line UserError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: spec file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: expected a TOML file, got a directory") from None
    except PermissionError:
        raise UserError(f"{path}: cannot read (permission denied)") from None
    try:
        d = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: malformed TOML ({e})") from None
    try:
        spec = parse_spec(d)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    return replace(spec, path=str(path))


def parse_spec(d: dict) -> SweepSpec:
    """Validate a spec given as a dict (the parsed TOML)."""
    top = _Fields(d, "")
    name = top.get("name")
    if name is None:
        raise UserError("name: missing (the sweep's name, used as its runs directory)")
    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
        raise UserError(f"name: expected letters, digits, '-', '_' or '.' (not starting with "
                        f"'.'), got {name!r}")
    if name.endswith(TUNE_SUFFIX):
        raise UserError(f"name: {name!r} ends in {TUNE_SUFFIX!r}, the suffix of a [tune] "
                        "block's own runs; choose another name")
    label = top.get("label")
    if label is not None and not (isinstance(label, str) and re.fullmatch(NAME_PATTERN, label)
                                  and label != "labels"):
        raise UserError(f"label: expected letters, digits, '-', '_' or '.' (not starting with "
                        f"'.'; not 'labels'), got {label!r}")
    convention = top.str("convention", "6N", CONVENTIONS)
    seeds = _seeds(top)
    if not top.has("budgets"):
        raise UserError("budgets: missing (a list of FLOP budgets, or a table with values or "
                        "min/max/count)")
    budgets = _budgets(top)
    tables: dict[str, Any] = {key: read(top.table(key)) for key, read in TABLES.items()}
    tables["tune"] = _tune(top.table("tune")) if top.has("tune") else None
    top.used.add("tune")
    top.done()
    _check_tune(tables["tune"], tables["optim"], tables["train"], name)
    spec = SweepSpec(name=name, budgets=budgets, convention=convention, seeds=seeds,
                     label=label, **tables)
    spec.vocab_size  # noqa: B018  (validates the tokenizer / synthetic source now)
    return spec


def _seeds(top: _Fields) -> tuple[int, ...]:
    top.used.update(("seed", "seeds"))
    if top.has("seed") and top.has("seeds"):
        raise UserError("seeds: give either seed or seeds, not both")
    if top.has("seed"):
        return (top.int("seed", 0, lo=0),)
    seeds = top.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds:
        raise UserError(f"seeds: expected a non-empty list of integers >= 0, got {_show(seeds)}")
    for i, s in enumerate(seeds):
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise UserError(f"seeds[{i}]: expected an integer >= 0, got {s!r}")
    if len(set(seeds)) != len(seeds):
        raise UserError("seeds: expected distinct values")
    return tuple(seeds)


def _data(t: _Fields) -> DataSpec:
    source = t.str("source", "stdlib")
    kind = scheme(source)  # one line naming data.source for an unknown scheme or no path
    out = DataSpec(
        source=source,
        tokenizer=t.str("tokenizer", "bytes"),
        seq_len=t.int("seq_len", DEFAULT_SEQ_LEN, lo=2, hi=1 << 20),
        eval_tokens=t.int("eval_tokens", 65_536, lo=1),
        max_epochs=t.float("max_epochs", None, lo=0, lo_open=True),
        text_column=t.str("text_column", "text"),
        vocab_size=t.int("vocab_size", None, lo=2, hi=2**32),
        eval_sets=_named_table(t, "eval_sets", "a data source, any data.source scheme (scaling.sources)"),
        tasks=_named_table(t, "tasks", "a JSONL task file (context, choices, answer)"),
    )
    if kind == "tokens" and out.vocab_size is None:
        raise UserError("data.vocab_size: required with a tokens: source (the vocabulary "
                        "the ids were made with, e.g. 50257 for GPT-2)")
    if kind != "tokens" and out.vocab_size is not None:
        raise UserError("data.vocab_size: only for a tokens: source (the tokenizer sets "
                        "the vocabulary)")
    t.done()
    if t.schema is None:  # a missing source or a bad task line refuses the spec up front
        check_data_inputs(DataConfig(source=out.source, text_column=out.text_column,
                                     eval_sets=out.eval_sets, tasks=out.tasks))
    return out


def _named_table(t: _Fields, key: str, what: str) -> tuple[tuple[str, str], ...]:
    """`key = {name = "..."}`: named strings (metric names: no '/')."""
    if t.schema is not None:
        t.schema[key] = {"type": "object", "description": f"name -> {what}",
                         "propertyNames": {"pattern": f"^{METRIC_NAME_PATTERN}$"},
                         "additionalProperties": {"type": "string", "minLength": 1}}
        return ()
    value = t.get(key, {})
    if not isinstance(value, dict):
        raise UserError(f"{t._key(key)}: expected a table of name = {what}, got {_show(value)}")
    return named_values(value, t._key(key))


def _model(t: _Fields) -> ModelSpec:
    out = ModelSpec(mlp=t.str("mlp", "swiglu", ("swiglu", "gelu")),
                    tie_embeddings=t.bool("tie_embeddings", True),
                    qk_norm=t.bool("qk_norm", False),
                    shape=t.str("shape", "solver", SHAPE_KINDS),
                    aspect_ratio=t.float("aspect_ratio", None, lo=1.0, hi=1024.0),
                    parameterization=t.str("parameterization", "sp", PARAMETERIZATIONS),
                    base_width=t.int("base_width", None, lo=1))
    if out.parameterization == "mup" and out.base_width is None:
        out = replace(out, base_width=DEFAULT_MUP_BASE_WIDTH)
    if out.parameterization == "sp" and out.base_width is not None:
        raise UserError("model.base_width: only parameterization = \"mup\" takes a base width")
    t.done()
    out.shape_recipe  # noqa: B018  (validates shape with aspect_ratio now)
    return out


def _budgets(top: _Fields) -> tuple[float, ...]:
    values, where = top.get("budgets"), "budgets"
    if not isinstance(values, list):
        t = _Fields(values, "budgets")
        if t.has("values") and any(t.has(k) for k in ("min", "max", "count")):
            raise UserError("budgets: give either values or min/max/count, not both")
        if not t.has("values"):
            for key in ("min", "max", "count"):
                if not t.has(key):
                    raise UserError(f"budgets.{key}: missing (or give budgets.values)")
            return _budget_range(t)
        values, where = t.get("values"), "budgets.values"
        t.done()
        if not isinstance(values, list):
            raise UserError(f"budgets.values: expected a list of numbers, got {_show(values)}")
    if not values:
        raise UserError(f"{where}: expected at least one budget")
    out = [_number(v, f"{where}[{i}]", **BUDGET) for i, v in enumerate(values)]
    if len(set(out)) != len(out):
        raise UserError(f"{where}: expected distinct budgets")
    return tuple(sorted(out))


def _budget_range(t: _Fields) -> tuple[float, ...]:
    """budgets = {min, max, count}: `count` budgets log-spaced from min to max."""
    lo, hi = t.float("min", None, **BUDGET), t.float("max", None, **BUDGET)
    count = t.int("count", None, lo=1, hi=100)
    t.done()
    if t.schema is not None:
        return ()
    if hi < lo:
        raise UserError(f"budgets.max: expected >= budgets.min ({lo:g}), got {hi:g}")
    if count == 1 and hi != lo:
        raise UserError("budgets.count: expected >= 2 when min != max")
    if count == 1:
        return (lo,)
    step = (math.log10(hi) - math.log10(lo)) / (count - 1)
    # 4 significant digits: budgets become readable names (3.162e11) and stable hashes
    return tuple(float(f"{10 ** (math.log10(lo) + i * step):.4g}") for i in range(count))


def _grid(t: _Fields) -> GridSpec:
    params = t.get("params")
    if params is not None:
        if not isinstance(params, list) or len(params) < 1:
            raise UserError(f"grid.params: expected a non-empty list of parameter counts, "
                            f"got {_show(params)}")
        params = tuple(sorted(_number(p, f"grid.params[{i}]", lo=1) for i, p in enumerate(params)))
        if t.has("sizes") or t.has("span"):
            raise UserError("grid.params: give either explicit params or sizes/span, not both")
    out = GridSpec(
        sizes=t.int("sizes", 7, lo=MIN_SIZES) if params is None else len(params),
        span=t.float("span", 30.0, lo=1, hi=1e6, lo_open=True),
        center=t.str("center", "chinchilla", ("chinchilla", "fit")),
        tokens_per_param=t.float("tokens_per_param", 20.0, lo=0, lo_open=True),
        params=params,
    )
    t.done()
    return out


def _schedule(t: _Fields) -> ScheduleSpec:
    out = ScheduleSpec(
        kind=t.str("kind", "cosine", SCHEDULES),
        final_lr_frac=t.float("final_lr_frac", 0.1, lo=0.0, hi=1.0),
        decay_frac=t.float("decay_frac", 0.2, lo=0.0, hi=1.0, lo_open=True),
        warmup_steps=t.int("warmup_steps", None, lo=0),
        share_stable=t.bool("share_stable", True),
    )
    t.done()
    return out


def _optim(t: _Fields) -> OptimSpec:
    recipe = t.str("recipe", "deepseek", pattern=None if t.schema is None else RECIPE_PATTERN)
    if recipe.startswith(hparams.FITTED_PREFIX):  # resolved when planning (the law may not
        sweep = recipe[len(hparams.FITTED_PREFIX):]  # exist yet: this spec's [tune] fits it)
        if not re.fullmatch(NAME_PATTERN, sweep):
            raise UserError(f"optim.recipe: expected fitted:<sweep name>, got {recipe!r}")
    else:
        hparams.get_recipe(recipe)
    overrides = {}
    for key in hparams.OVERRIDABLE:  # the recipe's clamps, typed as the recipe's own fields
        if key == "weight_decay" or not (t.has(key) or t.schema is not None):
            continue
        default = getattr(hparams.DEEPSEEK, key)
        if isinstance(default, bool):
            overrides[key] = t.bool(key, None)
        elif isinstance(default, int):
            overrides[key] = t.int(key, None, lo=0)
        else:
            fraction = key in ("beta2_ref", "beta2_min", "beta2_max")
            overrides[key] = t.float(key, None, lo=0, hi=1.0 if fraction else None,
                                     lo_open=key in ("wd_timescale", "beta2_ref_tokens"))
    out = OptimSpec(
        recipe=recipe,
        lr=t.float("lr", None, lo=0, lo_open=True),
        batch_size=t.int("batch_size", None, lo=1),
        weight_decay=t.float("weight_decay", None, lo=0),
        beta1=t.float("beta1", 0.9, lo=0, hi=1),
        beta2=t.float("beta2", None, lo=0, hi=1),
        grad_clip=t.float("grad_clip", 1.0, lo=0),
        z_loss=t.float("z_loss", 0.0, lo=0),
        overrides=tuple(sorted(overrides.items())),
    )
    t.done()
    return out


def _tune(t: _Fields) -> TuneSpec:
    bootstrap = t.int("bootstrap", 200, lo=0, hi=100_000)
    level = t.float("level", 0.8, lo=0, hi=1, lo_open=True)
    t.used.update(("cells", "lr_multipliers", "batch_sizes"))
    if t.schema is not None:  # the lists are written by json_schema
        t.str("recipe", None, choices=tuple(hparams.RECIPES))
        return TuneSpec()
    cells = t.get("cells")
    if not isinstance(cells, list) or not cells:
        raise UserError(f"tune.cells: expected a non-empty list of [n_params, tokens_per_param] "
                        f"pairs, got {_show(cells)}")
    out_cells = []
    for i, cell in enumerate(cells):
        if not isinstance(cell, list) or len(cell) != 2:
            raise UserError(f"tune.cells[{i}]: expected [n_params, tokens_per_param], "
                            f"got {_show(cell)}")
        out_cells.append((_number(cell[0], f"tune.cells[{i}][0]", lo=1),
                          _number(cell[1], f"tune.cells[{i}][1]", lo=0, lo_open=True)))
    mults = t.get("lr_multipliers", list(TuneSpec.lr_multipliers))
    if not isinstance(mults, list) or len(mults) < 3:
        raise UserError(f"tune.lr_multipliers: expected a list of >= 3 positive numbers, "
                        f"got {_show(mults)}")
    mults = sorted(_number(m, f"tune.lr_multipliers[{i}]", lo=0, lo_open=True)
                   for i, m in enumerate(mults))
    if len(set(mults)) != len(mults):
        raise UserError("tune.lr_multipliers: expected distinct values")
    if level >= 1:
        raise UserError(f"tune.level: expected a fraction in (0, 1), got {level}")
    batches = t.get("batch_sizes", [])
    if not isinstance(batches, list) or 0 < len(batches) < 3:
        raise UserError(f"tune.batch_sizes: expected a list of >= 3 positive integers "
                        f"(sequences per step), got {_show(batches)}")
    for i, b in enumerate(batches):
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise UserError(f"tune.batch_sizes[{i}]: expected a positive integer (sequences "
                            f"per step), got {b!r}")
    if len(set(batches)) != len(batches):
        raise UserError("tune.batch_sizes: expected distinct values")
    recipe = t.str("recipe", None, choices=tuple(hparams.RECIPES))
    t.done()
    return TuneSpec(cells=tuple(out_cells), lr_multipliers=tuple(mults), bootstrap=bootstrap,
                    level=level, batch_sizes=tuple(sorted(batches)), recipe=recipe)


def _check_tune(tune: TuneSpec | None, optim: OptimSpec, train: TrainSpec, name: str) -> None:
    """What the [tune] block needs of the rest of the spec: batches that split into
    train.grad_accum micro-batches, and a named recipe to tune around."""
    if tune is None:
        return
    for i, b in enumerate(tune.batch_sizes):
        if b % train.grad_accum:
            raise UserError(f"tune.batch_sizes[{i}]: expected a multiple of train.grad_accum "
                            f"({train.grad_accum}), got {b}")
    if tune.recipe is None and optim.recipe.startswith(hparams.FITTED_PREFIX):
        raise UserError(f"tune.recipe: required when optim.recipe is {optim.recipe!r} (the "
                        f"named recipe whose lr the multipliers scale, e.g. \"tiny-bytes\"; "
                        f"\"fitted:{name}\" is what the block fits)")


def _train(t: _Fields) -> TrainSpec:
    out = TrainSpec(log_every=t.int("log_every", 10, lo=1),
                    eval_every=t.int("eval_every", 0, lo=0),
                    checkpoint_every=t.int("checkpoint_every", 0, lo=0),
                    grad_accum=t.int("grad_accum", 1, lo=1))
    t.done()
    return out


def _checks(t: _Fields) -> ChecksSpec:
    out = ChecksSpec(min_steps=t.int("min_steps", 100, lo=1),
                     min_sizes=t.int("min_sizes", 5, lo=1),
                     strict=t.bool("strict", False))
    t.done()
    return out


def _launcher(t: _Fields) -> LauncherSpec:
    out = LauncherSpec(
        kind=t.str("kind", "local", ("local", "slurm")),
        workers=t.int("workers", 1, lo=1),
        threads_per_worker=t.int("threads_per_worker", None, lo=1),
        partition=t.str("partition", None, pattern=SLURM_PATTERN),
        time_min=t.int("time_min", 60, lo=1),
        cpus_per_task=t.int("cpus_per_task", 1, lo=1),
        gpus_per_task=t.int("gpus_per_task", 0, lo=0),
        mem_gb=t.float("mem_gb", None, lo=0, lo_open=True),
        array_parallelism=t.int("array_parallelism", 64, lo=1),
        account=t.str("account", None, pattern=SLURM_PATTERN),
        qos=t.str("qos", None, pattern=SLURM_PATTERN),
        constraint=t.str("constraint", None, pattern=SLURM_PATTERN),
        max_requeues=t.int("max_requeues", 3, lo=0),
        nodes=t.int("nodes", 1, lo=1, hi=4096),
        tasks_per_node=t.int("tasks_per_node", 1, lo=1, hi=1024),
        group_replicas=t.bool("group_replicas", False),
    )
    check_launcher(out, out.kind)
    t.done()
    return out


def check_launcher(launcher: LauncherSpec, kind: str) -> None:
    """Several processes per run are started by srun: only the Slurm launcher has them."""
    for key in ("nodes", "tasks_per_node"):
        value = getattr(launcher, key)
        if value > 1 and kind != "slurm":
            raise UserError(f"launcher.{key}: {value} processes per run need the Slurm launcher "
                            f"(launcher.kind = \"slurm\"), got launcher {kind!r}")


def _tracking(t: _Fields) -> TrackingSpec:
    trackers = t.get("trackers", [])
    if isinstance(trackers, str):
        trackers = [trackers]
    if not isinstance(trackers, list) or not all(isinstance(x, str) for x in trackers):
        raise UserError(f"tracking.trackers: expected a list of tracker names, got {trackers!r}")
    out = TrackingSpec(trackers=tuple(dict.fromkeys(trackers)),
                       project=t.str("project", None), entity=t.str("entity", None),
                       wandb_mode=t.str("wandb_mode", None, ("online", "offline")))
    t.done()
    check_installed(out.trackers)  # a missing package is a spec error: nothing written yet
    return out


# ----------------------------------------------------------------------------- planning


TABLES = {"data": _data, "model": _model, "grid": _grid, "schedule": _schedule, "optim": _optim,
          "train": _train, "checks": _checks, "launcher": _launcher,
          "tracking": _tracking}


# ----------------------------------------------------------------------------- schema, CLI


def json_schema() -> dict:
    """The JSON Schema (2020-12) of the spec TOML, from the readers above run dry (each key's
    type, bounds, choices and default, as validated) plus the keys read by hand (name,
    seeds, budgets, grid.params). docs/spec.schema.json is its output, for editors."""
    props: dict = {}
    top = _Fields({}, "", props)
    props["name"] = {"type": "string", "pattern": f"^{NAME_PATTERN}$"}
    props["label"] = {"type": "string", "pattern": f"^{NAME_PATTERN}$", "not": {"const": "labels"}}
    top.str("convention", "6N", CONVENTIONS)
    top.int("seed", None, lo=0)
    props["seeds"] = {"type": "array", "items": {"type": "integer", "minimum": 0},
                      "minItems": 1, "uniqueItems": True, "default": [0]}
    _budget_range(top.table("budgets"))
    budget_range = {**props.pop("budgets"), "required": ["min", "max", "count"]}
    values = {"type": "array", "items": {"type": "number", **_number_schema(**BUDGET)},
              "minItems": 1, "uniqueItems": True}
    props["budgets"] = {"oneOf": [values, budget_range, {
        "type": "object", "additionalProperties": False, "properties": {"values": values},
        "required": ["values"]}]}
    for key, read in TABLES.items():
        read(top.table(key))
    props["grid"]["properties"]["params"] = {
        "type": "array", "items": {"type": "number", "minimum": 1}, "minItems": 1}
    _tune(top.table("tune"))
    props["tune"]["required"] = ["cells"]
    props["tune"]["properties"]["cells"] = {"type": "array", "minItems": 1, "items": {
        "type": "array", "minItems": 2, "maxItems": 2,
        "prefixItems": [{"type": "number", "minimum": 1}, {"type": "number", "exclusiveMinimum": 0}]}}
    props["tune"]["properties"]["lr_multipliers"] = {
        "type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 3,
        "uniqueItems": True, "default": list(TuneSpec.lr_multipliers)}
    props["tune"]["properties"]["batch_sizes"] = {
        "type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 3,
        "uniqueItems": True}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "scaling-suite sweep spec (validated by sweeps/spec.py)", "type": "object",
            "required": ["name", "budgets"], "additionalProperties": False, "properties": props,
            "not": {"required": ["seed", "seeds"]}}


def _cli_value(text: str) -> Any:
    value: Any = text
    with contextlib.suppress(ValueError):  # "7" -> 7, "1e18" -> 1e18, "x" stays text
        value = float(text)
        value = int(text)
    return value


def check_number(text: str, where: str, *, integer: bool = False, lo: Any = None,
                 hi: Any = None, lo_open: bool = False) -> Any:
    """A command-line number checked as spec numbers are, the one-line error naming `where`."""
    if integer:
        return _Fields({where: _cli_value(text)}, "").int(where, None, lo, hi)
    return _number(_cli_value(text), where, lo, hi, lo_open)


def check_argument(text: str, key: str, where: str) -> Any:
    """A command-line value checked as the spec's `key` ("grid.sizes", "budgets") is: the
    same type and bounds, the one-line error naming `where` (e.g. "--sizes")."""
    if key == "budgets":  # a positive number first, in the words of every FLOP argument
        return _number(positive_number(text, where, " of FLOPs"), where, **BUDGET)
    table, _, name = key.partition(".")
    try:
        return getattr(TABLES[table](_Fields({name: _cli_value(text)}, table)), name)
    except UserError as e:
        raise UserError(str(e).replace(f"{key}:", f"{where}:", 1)) from None
