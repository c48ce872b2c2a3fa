"""Sweep specs: a TOML file parsed once into frozen dataclasses, every field validated.

A spec names a study: the data, the model family, the budgets, how each budget's grid of
sizes is laid out, the FLOP convention that sizes runs, the schedule, the hyper-parameter
recipe, seeds and how to launch. Unknown keys are errors (a typo must not silently fall
back to a default), and every error is one line naming the file and the field::

    examples/demo.toml: budgets.count: expected an integer >= 1, got 'x'

Example (every table optional except ``budgets``)::

    name = "demo"
    convention = "6N"            # 6N | kaplan | chinchilla | deepseek
    seeds = [0]

    [data]
    source = "stdlib"            # stdlib | text:PATH | synthetic[:...]
    tokenizer = "bytes"          # bytes | bpe:V  (sets the vocabulary)
    seq_len = 128
    eval_tokens = 65536
    max_epochs = 4.0             # refuse plans needing more passes over unique data

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

    [launcher]
    kind = "local"               # local | slurm
    workers = 1

    [tune]                       # optional: fit lr*(N, D) first (sweeps.tune); then
    cells = [[1e4, 20], [3e4, 20], [1e4, 80]]   # optim.recipe = "fitted:<name>" uses it
    lr_multipliers = [0.25, 0.5, 1, 2, 4]       # x the recipe's lr for each cell
    bootstrap = 200
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from scaling.errors import UserError

CONVENTIONS = ("6N", "kaplan", "chinchilla", "deepseek")
MAX_BUDGET = 1e30
DEFAULT_MUP_BASE_WIDTH = 64
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


# ----------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class DataSpec:
    source: str = "stdlib"
    tokenizer: str = "bytes"
    seq_len: int = 128
    eval_tokens: int = 65_536
    max_epochs: float | None = None


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
        from scaling.shapes import shape_recipe

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
    tune: TuneSpec | None = None
    path: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("path")
        if d["tune"] is None:  # specs without a [tune] block keep their digest
            d.pop("tune")
        d["optim"]["overrides"] = dict(self.optim.overrides)
        return d

    def digest(self) -> str:
        """Hash of what the spec plans (launcher options excluded: running the same study
        with more workers or on another cluster is still the same study)."""
        from scaling.runs import spec_hash

        d = self.to_dict()
        d.pop("launcher")
        return spec_hash(d)

    @property
    def vocab_size(self) -> int:
        return vocab_size_for(self.data)


def vocab_size_for(data: DataSpec) -> int:
    """The model vocabulary the tokenizer (or the synthetic source) implies."""
    from scaling.tokenizer import parse_tokenizer

    tokenizer = parse_tokenizer(data.tokenizer)  # the trainer parses it whatever the source
    if data.source.startswith("synthetic"):
        from scaling.corpus import parse_synthetic

        return int(parse_synthetic(data.source)["vocab"])
    return tokenizer.vocab_size


# ----------------------------------------------------------------------------- validation


class _Fields:
    """Reads one TOML table, recording which keys were used; leftovers are errors."""

    def __init__(self, d: Any, where: str) -> None:
        if not isinstance(d, dict):
            raise UserError(f"{where or 'spec'}: expected a table, got {_show(d)}")
        self.d, self.where, self.used = d, where, set()

    def _key(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, default: Any = None) -> Any:
        self.used.add(key)
        return self.d.get(key, default)

    def has(self, key: str) -> bool:
        return key in self.d

    def int(self, key: str, default: Any, lo: int | None = None, hi: int | None = None) -> Any:
        value = self.get(key, default)
        if value is None and default is None:
            return None
        bound = _bounds_text(lo, hi)
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{self._key(key)}: expected an integer{bound}, got {_show(value)}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise UserError(f"{self._key(key)}: expected an integer{bound}, got {value}")
        return value

    def float(self, key: str, default: Any, lo: float | None = None, hi: float | None = None,
              lo_open: bool = False) -> Any:
        value = self.get(key, default)
        if value is None and default is None:
            return None
        return _number(value, self._key(key), lo, hi, lo_open)

    def bool(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise UserError(f"{self._key(key)}: expected true or false, got {_show(value)}")
        return value

    def str(self, key: str, default: Any, choices: tuple[str, ...] | None = None) -> Any:
        value = self.get(key, default)
        if value is None and default is None:
            return None
        if not isinstance(value, str) or not value:
            raise UserError(f"{self._key(key)}: expected a non-empty string, got {_show(value)}")
        if choices and value not in choices:
            raise UserError(f"{self._key(key)}: expected one of {', '.join(choices)}, got {value!r}")
        return value

    def table(self, key: str) -> _Fields:
        return _Fields(self.get(key, {}), self._key(key))

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


def _bounds_text(lo: Any, hi: Any) -> str:
    if lo is not None and hi is not None:
        return f" in [{lo}, {hi}]"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def _number(value: Any, where: str, lo: float | None = None, hi: float | None = None,
            lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = "a number" + (f" > {lo}" if lo_open else _bounds_text(lo, hi))
        raise UserError(f"{where}: expected {kind}, got {_show(value)}")
    x = float(value)
    bad = (not math.isfinite(x) or (lo is not None and (x <= lo if lo_open else x < lo))
           or (hi is not None and x > hi))
    if bad:
        kind = "a finite number" + (f" > {lo}" if lo_open else "") + (
            _bounds_text(None if lo_open else lo, hi))
        raise UserError(f"{where}: expected {kind}, got {value!r}")
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
    return SweepSpec(**{**_shallow(spec), "path": str(path)})


def _shallow(spec: SweepSpec) -> dict:
    return {f: getattr(spec, f) for f in spec.__dataclass_fields__}


def parse_spec(d: dict) -> SweepSpec:
    """Validate a spec given as a dict (the parsed TOML)."""
    top = _Fields(d, "")
    name = top.str("name", None)
    if name is None:
        raise UserError("name: missing (the sweep's name, used as its runs directory)")
    if not set(name) <= NAME_CHARS or name.startswith("."):
        raise UserError(f"name: expected letters, digits, '-', '_' or '.' (not starting with "
                        f"'.'), got {name!r}")
    convention = top.str("convention", "6N", CONVENTIONS)
    seeds = _seeds(top)
    data = _data(top.table("data"))
    model = _model(top.table("model"))
    if not top.has("budgets"):
        raise UserError("budgets: missing (a list of FLOP budgets, or a table with values or "
                        "min/max/count)")
    budgets = _budgets(top)
    grid = _grid(top.table("grid"))
    schedule = _schedule(top.table("schedule"))
    optim = _optim(top.table("optim"))
    train = _train(top.table("train"))
    checks = _checks(top.table("checks"))
    launcher = _launcher(top.table("launcher"))
    tune = _tune(top.table("tune")) if top.has("tune") else None
    top.used.add("tune")
    top.done()
    spec = SweepSpec(name=name, budgets=budgets, convention=convention, seeds=seeds, data=data,
                     model=model, grid=grid, schedule=schedule, optim=optim, train=train,
                     checks=checks, launcher=launcher, tune=tune)
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
    if not (source == "stdlib" or source.startswith("text:") or source.startswith("synthetic")):
        raise UserError(f"data.source: expected 'stdlib', 'text:PATH' or 'synthetic[:...]', "
                        f"got {source!r}")
    if source.startswith("text:") and len(source) == len("text:"):
        raise UserError("data.source: 'text:' needs a path, e.g. 'text:corpus/'")
    out = DataSpec(
        source=source,
        tokenizer=t.str("tokenizer", "bytes"),
        seq_len=t.int("seq_len", 128, lo=2, hi=1 << 20),
        eval_tokens=t.int("eval_tokens", 65_536, lo=1),
        max_epochs=t.float("max_epochs", None, lo=0, lo_open=True),
    )
    t.done()
    return out


def _model(t: _Fields) -> ModelSpec:
    from scaling.shapes import PARAMETERIZATIONS, SHAPE_KINDS

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
    raw = top.get("budgets")
    if isinstance(raw, list):
        values = raw
        where = "budgets"
    else:
        t = _Fields(raw, "budgets")
        if t.has("values") and any(t.has(k) for k in ("min", "max", "count")):
            raise UserError("budgets: give either values or min/max/count, not both")
        if t.has("values"):
            values = t.get("values")
            where = "budgets.values"
            if not isinstance(values, list):
                raise UserError(f"budgets.values: expected a list of numbers, got {_show(values)}")
        else:
            for key in ("min", "max", "count"):
                if not t.has(key):
                    raise UserError(f"budgets.{key}: missing (or give budgets.values)")
            lo = t.float("min", None, lo=0, hi=MAX_BUDGET, lo_open=True)
            hi = t.float("max", None, lo=0, hi=MAX_BUDGET, lo_open=True)
            count = t.int("count", None, lo=1, hi=100)
            if hi < lo:
                raise UserError(f"budgets.max: expected >= budgets.min ({lo:g}), got {hi:g}")
            if count == 1 and hi != lo:
                raise UserError("budgets.count: expected >= 2 when min != max")
            t.done()
            return _log_spaced(lo, hi, count)
        t.done()
    if not values:
        raise UserError(f"{where}: expected at least one budget")
    out = [_number(v, f"{where}[{i}]", lo=0, hi=MAX_BUDGET, lo_open=True)
           for i, v in enumerate(values)]
    if len(set(out)) != len(out):
        raise UserError(f"{where}: expected distinct budgets")
    return tuple(sorted(out))


def _log_spaced(lo: float, hi: float, count: int) -> tuple[float, ...]:
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
        sizes=t.int("sizes", 7, lo=1, hi=100) if params is None else len(params),
        span=t.float("span", 30.0, lo=1.0, hi=1e6),
        center=t.str("center", "chinchilla", ("chinchilla", "fit")),
        tokens_per_param=t.float("tokens_per_param", 20.0, lo=0, lo_open=True),
        params=params,
    )
    if out.sizes > 1 and out.span == 1.0 and params is None:
        raise UserError("grid.span: expected > 1 with more than one size")
    t.done()
    return out


def _schedule(t: _Fields) -> ScheduleSpec:
    from scaling.config import SCHEDULES

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
    from sweeps import hparams

    recipe = t.str("recipe", "deepseek")
    if recipe.startswith(hparams.FITTED_PREFIX):  # resolved when planning (the law may not
        sweep = recipe[len(hparams.FITTED_PREFIX):]  # exist yet: this spec's [tune] fits it)
        if not sweep or not set(sweep) <= NAME_CHARS or sweep.startswith("."):
            raise UserError(f"optim.recipe: expected fitted:<sweep name>, got {recipe!r}")
    else:
        hparams.get_recipe(recipe)
    overrides = {}
    for key in hparams.OVERRIDABLE:
        if key == "weight_decay" or not t.has(key):  # weight_decay: a spec field, below
            continue
        value = t.get(key)
        default = getattr(hparams.DEEPSEEK, key)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise UserError(f"optim.{key}: expected true or false, got {_show(value)}")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UserError(f"optim.{key}: expected an integer >= 0, got {_show(value)}")
        else:
            fraction = key in ("beta2_ref", "beta2_min", "beta2_max")
            value = _number(value, f"optim.{key}", lo=0, hi=1.0 if fraction else None,
                            lo_open=key in ("wd_timescale", "beta2_ref_tokens"))
        overrides[key] = value
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
    out = TuneSpec(cells=tuple(out_cells), lr_multipliers=tuple(mults),
                   bootstrap=t.int("bootstrap", 200, lo=0, hi=100_000),
                   level=t.float("level", 0.8, lo=0, hi=1, lo_open=True))
    if out.level >= 1:
        raise UserError(f"tune.level: expected a fraction in (0, 1), got {out.level}")
    t.done()
    return out


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
        workers=t.int("workers", 1, lo=1, hi=1024),
        threads_per_worker=t.int("threads_per_worker", None, lo=1),
        partition=t.str("partition", None),
        time_min=t.int("time_min", 60, lo=1),
        cpus_per_task=t.int("cpus_per_task", 1, lo=1),
        gpus_per_task=t.int("gpus_per_task", 0, lo=0),
        mem_gb=t.float("mem_gb", None, lo=0, lo_open=True),
        array_parallelism=t.int("array_parallelism", 64, lo=1),
        account=t.str("account", None),
        qos=t.str("qos", None),
        constraint=t.str("constraint", None),
        max_requeues=t.int("max_requeues", 3, lo=0),
    )
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(out, key)
        # these reach sbatch as option values; keep them to what Slurm names can be
        if value is not None and not set(value) <= NAME_CHARS | set(",&|:[]*"):
            raise UserError(f"launcher.{key}: unexpected characters in {value!r}")
    t.done()
    return out


# ----------------------------------------------------------------------------- planning


def plan_spec(spec: SweepSpec, *, centers: dict[float, float] | None = None) -> list:
    """Every run of the spec as sweeps.plan.PlannedConfig (`.planned`: the grid point,
    `.config`: its RunConfig), budget by budget, smallest size first. Design checks run
    here: an error finding raises UserError (see sweeps.checks)."""
    from sweeps.plan import plan_sweep

    return list(plan_sweep(spec, centers=centers).runs)
