"""The run driver: one run directory in, metrics/checkpoints/result out.

`train_run(run_dir)` trains (or resumes) the run of `run_dir/config.json` with the state and
step of `scaling.train_step`, the chunks of `scaling.dispatch` and the rules of
`scaling.divergence`: it resumes from the newest checkpoint that restores (dropping metrics
logged after it), evaluates every `eval_every` steps and at the end, checkpoints every
`checkpoint_every` steps, at `keep_steps` (WSD branch points, kept) and at the stop, and
fetches metrics one dispatch behind (the host never waits for the step it just dispatched)
into a `metrics.jsonl` line per `log_every` steps and at evals (which also measure the
run's `data.eval_sets` and `data.tasks`, scaling.evals). SIGTERM (or `max_steps`)
checkpoints and returns; the run stays "pending" and resumes. Test hook: with
SCALING_FAULT_NAN_AT_STEP=K the update that completes step K (1-based) gets NaN loss and
gradients (reliability tests); without the variable the hook is not even traced.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import jax
import numpy as np

from scaling import data as data_lib
from scaling import dispatch, runs, tracking
from scaling import mesh as mesh_lib
from scaling.checkpoint import CHECKPOINT_DIR, Checkpointer
from scaling.compile_cache import enable_compile_cache
from scaling.config import RunConfig
from scaling.divergence import Divergence, DivergenceMonitor
from scaling.errors import UserError
from scaling.evals import METRIC_PREFIXES, ExtraEvals
from scaling.fileio import append_jsonl, atomic_write_text, read_jsonl, sync_file, to_json
from scaling.flops import flops_all, param_counts
from scaling.global_batch import train_batches
from scaling.lock import RunLock, RunLocked
from scaling.schedules import validate as validate_schedule
from scaling.train_step import (
    TrainState,
    evaluate,
    make_eval_fn,
    make_score_fn,
    make_step_fn,
    score_rows,
)

FAULT_ENV = "SCALING_FAULT_NAN_AT_STEP"
HEARTBEAT_S = 10.0

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


def _is_multiple(step: int, period: int) -> bool:
    return period > 0 and step % period == 0


def _fmt_time(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class _Terminate:
    """SIGTERM sets `requested`, which the loop checks at every dispatch boundary."""

    requested = False

    def __enter__(self) -> _Terminate:
        try:
            self._previous = signal.signal(signal.SIGTERM, lambda *_: setattr(self, "requested", True))
        except ValueError:  # not the main thread: no handler, nothing to restore
            self._previous = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


@dataclass
class _MetricsLog:
    """Losses since the last metrics line (checkpointed, so lines after a resume agree with an
    uninterrupted run's), that line's step and time, and where steady throughput starts."""

    since: list[float]
    line_step: int
    line_time: float
    tokens_step: int  # tokens/s counts from here
    steady_time: float | None = None  # the first fetch: compile time is behind us from there
    steady_step: int = 0


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
    enable_compile_cache(cache_dir)
    run_dir = Path(run_dir)
    cfg = runs.load_run_config(run_dir)
    options = dict(peak_flops=peak_flops, max_steps=max_steps,
                   steps_per_dispatch=steps_per_dispatch, cache_dir=cache_dir,
                   keep_steps=keep_steps, fsdp=fsdp)
    if jax.process_index() != 0:  # one lock per run, held by the process that writes files
        return _Trainer(run_dir, cfg, progress=False, lock=None, **options).run()
    try:
        lock = RunLock(run_dir)
        lock.__enter__()
    except RunLocked as e:
        raise UserError(f"{run_dir}: {e}; is it already training?") from None
    try:
        return _Trainer(run_dir, cfg, progress=progress, lock=lock, **options).run()
    finally:
        lock.__exit__(None, None, None)


def failure_reason(e: BaseException) -> str:
    """The one-line reason a crashed run's status records."""
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]


class _Trainer:
    def __init__(self, run_dir: Path, cfg: RunConfig, *, peak_flops, max_steps, progress,
                 steps_per_dispatch, cache_dir, keep_steps, fsdp, lock) -> None:
        self.run_dir, self.cfg, self.lock = run_dir, cfg, lock
        self.peak_flops_arg, self.max_steps, self.progress = peak_flops, max_steps, progress
        self.steps_per_dispatch, self.cache_dir, self.fsdp = steps_per_dispatch, cache_dir, fsdp
        self.keep_steps = tuple(sorted(int(s) for s in keep_steps))
        self.main = jax.process_index() == 0
        self.stop = cfg.n_steps if not max_steps else min(cfg.n_steps, int(max_steps))
        self.tokens_per_step = cfg.batch_size * cfg.model.seq_len
        self.diverged: Divergence | None = None
        self.last_eval: dict | None = None

    # -- output

    def say(self, msg: str) -> None:
        if self.progress and self.main:
            print(msg, file=sys.stderr, flush=True)

    def status(self, state: str, **fields) -> None:
        if self.main:
            runs.write_status(self.run_dir, state, **fields)

    def _write_metrics(self, record: dict) -> None:
        """The one place a metrics line is written (and shown)."""
        if self.main:
            append_jsonl(self.run_dir / runs.METRICS_FILE, record, durable=False)
            self.tracker.log(record)
        remaining = (self.stop - record["step"]) * self.tokens_per_step / max(record["tokens_per_s"], 1e-9)
        line = (f"step {record['step']}/{self.cfg.n_steps}  loss {record['train_loss']:.4f}  "
                f"lr {record['lr']:.2e}  {record['tokens_per_s']:,.0f} tok/s  "
                f"ETA {_fmt_time(remaining)}")
        if "eval_loss" in record:
            line += f"  eval {record['eval_loss']:.4f} ({record['eval_bpb']:.4f} bpb)"
            line += "".join(f"  {k[5:-9]} acc {v:.3f}" for k, v in record.items()
                            if k.startswith("task/") and k.endswith("/accuracy"))
        self.say(line)

    # -- the run: start, loop, end

    def run(self) -> dict:
        try:
            return self._run()
        except UserError:
            raise
        except BaseException as e:
            reason = failure_reason(e)
            self.status("failed", reason=reason, pid=None)
            raise

    def _run(self) -> dict:
        cfg = self.cfg
        self.mesh = mesh_lib.make_mesh(self.fsdp)
        mesh_lib.check_batch(cfg.batch_size, cfg.grad_accum, self.mesh)
        if cfg.n_steps < 1:
            raise UserError(f"n_steps: expected a positive integer, got {cfg.n_steps}")
        validate_schedule(cfg.schedule, cfg.n_steps)
        existing = runs.read_result(self.run_dir)
        if existing is not None and runs.read_status(self.run_dir)["state"] == "done":
            self.say(f"{self.run_dir}: already done (eval_loss {existing.get('eval_loss')})")
            return existing
        self.token_data = data_lib.load_tokens(cfg.data, seq_len=cfg.model.seq_len,
                                               cache_dir=self.cache_dir)
        if self.token_data.vocab_size > cfg.model.vocab_size:
            raise UserError(f"model.vocab_size: expected at least the tokenizer's "
                            f"{self.token_data.vocab_size}, got {cfg.model.vocab_size}")
        # Eval sets and task files are checked here, before this run writes anything.
        self.extra = ExtraEvals.load(cfg.data, self.token_data, seq_len=cfg.model.seq_len,
                                     batch_size=cfg.batch_size, vocab_size=cfg.model.vocab_size,
                                     cache_dir=self.cache_dir)
        self._record_corpus_hash(self.token_data.corpus_hash)
        self._announce()
        self.ts = ts = TrainState(cfg, self.mesh)
        fault = os.environ.get(FAULT_ENV)
        step_fn = make_step_fn(ts, fault_step=int(fault) if fault else None)
        self.eval_fn = make_eval_fn(ts)
        self.score_fn = make_score_fn(ts)
        self.eval_batches = data_lib.eval_batches(
            self.token_data.valid, eval_tokens=cfg.data.eval_tokens, batch_size=cfg.batch_size,
            seq_len=cfg.model.seq_len)
        with Checkpointer(self.run_dir / CHECKPOINT_DIR, keep_steps=self.keep_steps) as ckpt:
            step = self._restore(ckpt)
            self.status("running", step=step, reason=None)
            with _Terminate() as term:
                step = self._loop(step, step_fn, ckpt, term)
            wall = self.elapsed_before + time.time() - self.t_start
        self.tracker.close()
        if self.diverged is not None:
            return self._end_early("diverged", self.diverged.step, self.diverged.reason)
        if step < cfg.n_steps:
            why = "SIGTERM" if term.requested else f"max_steps={self.max_steps}"
            return self._end_early("stopped", step, f"stopped by {why} at step {step}; "
                                   "checkpointed, rerun to resume")
        return self._end_done(step, wall)

    def _announce(self) -> None:
        cfg = self.cfg
        self.counts = param_counts(cfg.model)
        self.by_convention = flops_all(cfg.model)
        fpt = self.by_convention.get(cfg.convention)
        if fpt is None:
            raise UserError(f"convention: expected one of {', '.join(self.by_convention)}, "
                            f"got {cfg.convention!r}")
        self.fpt = fpt
        backend = jax.default_backend()
        k = self.steps_per_dispatch or dispatch.auto_steps_per_dispatch(fpt * self.tokens_per_step, backend)
        self.k = dispatch.aligned_steps_per_dispatch(k, (cfg.log_every, cfg.eval_every, cfg.checkpoint_every))
        self.n_dev = len(jax.devices())
        self.peak = self.peak_flops_arg if self.peak_flops_arg else device_peak_flops()
        self.say(
            f"run {self.run_dir.name}: N={self.counts['total']:,} params "
            f"({self.counts['non_embedding']:,} non-embedding), D={cfg.n_tokens:,} tokens, "
            f"C={fpt * cfg.n_tokens:.3e} FLOPs ({cfg.convention}), "
            f"batch {cfg.batch_size}x{cfg.model.seq_len} (grad_accum {cfg.grad_accum}), "
            f"lr {cfg.optim.lr:g} {cfg.schedule.kind}, {cfg.n_steps} steps, {self.n_dev} "
            f"{backend} device(s), {self.k} step(s)/dispatch")

    def _restore(self, ckpt: Checkpointer, at: int | None = None, fresh=None) -> int:
        """Resume from the newest checkpoint that restores, or from step `at` (0: fresh);
        a fresh start takes `fresh` as its state when given (a replica group inits them all)."""
        restored = None if at == 0 else ckpt.restore(self.ts.abstract, at)
        self.tracker = tracking.start(self.run_dir, step=restored[0] if restored else 0,
                                      main=self.main)
        if restored is None:
            self.state, meta, step = self.ts.init() if fresh is None else fresh, {}, 0
        else:
            step, self.state, meta = restored
            self.say(f"resuming from step {step}")
            _truncate_metrics(self.run_dir / runs.METRICS_FILE, step, self.main)
        self.elapsed_before = float(meta.get("wall_time_s", 0.0))
        self.monitor = DivergenceMonitor.from_meta(meta, self.cfg.n_steps)
        self.t_start = time.time()
        self.log = _MetricsLog(list(meta.get("log_since", [])), int(meta.get("log_step", step)),
                               self.t_start, step, None, step)
        return step

    def _loop(self, step: int, step_fn, ckpt: Checkpointer, term: _Terminate) -> int:
        """Dispatch chunks until the stop, a divergence or SIGTERM; returns the step reached."""
        cfg = self.cfg
        periods = (self.k, cfg.log_every, cfg.eval_every, cfg.checkpoint_every)
        marks = tuple(s for s in self.keep_steps if step < s < self.stop)
        batch_sharding = mesh_lib.batch_sharding(self.mesh, 2, 4)
        scalars = self.ts.scalars()
        pending, last_beat = None, self.t_start
        while step < self.stop:
            end = dispatch.chunk_end(step, self.stop, self.k, periods, marks)
            # Always k batches (the ones past `end` unused): one program for every chunk.
            batches = train_batches(
                self.token_data.train, batch_sharding, first_step=step, n_steps=self.k,
                seed=cfg.seed, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                seq_len=cfg.model.seq_len)
            step0, step1 = (mesh_lib.put_global(np.asarray(s, np.int32), self.ts.replicated)
                            for s in (step, end))
            params, opt_state, *outputs = step_fn(
                self.state["params"], self.state["opt_state"], step0, step1, batches, scalars)
            self.state = {**self.state, "params": params, "opt_state": opt_state}
            if pending is not None:
                self._process(pending)
            pending, step = (step, end, *outputs), end
            if self.diverged is not None:
                return step
            is_eval = _is_multiple(end, cfg.eval_every) or end == cfg.n_steps
            is_ckpt = _is_multiple(end, cfg.checkpoint_every) or end in self.keep_steps or end == self.stop
            stop_now = mesh_lib.any_process(term.requested)  # all processes stop at one step
            if is_eval or is_ckpt or stop_now:
                self._process(pending, self._evaluate() if is_eval else None)
                pending = None
                if self.diverged is not None:
                    return step
                if is_ckpt or stop_now:
                    self._save(ckpt, end)
                if stop_now:
                    return step
            last_beat = self._heartbeat(step, last_beat)
        if pending is not None:
            self._process(pending)
        return step

    def _process(self, chunk: tuple, extra: dict | None = None) -> None:
        """Fetch a dispatched chunk's metrics, check divergence, write its metrics line."""
        s0, s1, *outputs = chunk
        ce_K, gn_K, lr_K = (mesh_lib.fetch(x)[:s1 - s0] for x in outputs)
        now = time.time()
        if self.log.steady_time is None:
            self.log.steady_time, self.log.steady_step = now, s1
        for i, (ce, gn) in enumerate(zip(ce_K.tolist(), gn_K.tolist(), strict=True)):
            self.diverged = self.monitor.observe(s0 + i + 1, ce, gn)
            if self.diverged is not None:
                return
            self.log.since.append(ce)
        if extra:
            self.last_eval = extra
        if not (_is_multiple(s1, self.cfg.log_every) or extra or s1 == self.cfg.n_steps):
            return
        tokens_per_s = ((s1 - self.log.tokens_step) * self.tokens_per_step
                        / max(now - self.log.line_time, 1e-9))
        self._write_metrics({
            "step": s1, "tokens": s1 * self.tokens_per_step, "flops": s1 * self.tokens_per_step * self.fpt,
            "train_loss": float(np.mean(self.log.since)), "lr": float(lr_K[-1]),
            "grad_norm": float(gn_K[-1]), "tokens_per_s": tokens_per_s,
            "mfu": tokens_per_s * self.fpt / (self.peak * self.n_dev) if self.peak else None,
            **(extra or {})})
        self.log = replace(self.log, since=[], line_step=s1, line_time=now, tokens_step=s1)

    def _evaluate(self) -> dict:
        params = self.state["params"]
        loss = evaluate(self.ts, self.eval_fn, params, self.eval_batches)
        extra = self.extra.evaluate(
            lambda batches: evaluate(self.ts, self.eval_fn, params, batches),
            lambda tokens, mask: score_rows(self.ts, self.score_fn, params, tokens, mask,
                                            self.cfg.batch_size))
        return {"eval_loss": loss, "eval_bpb": loss / math.log(2) / self.token_data.bytes_per_token,
                **extra}

    def _sync_metrics(self) -> None:
        """Make the metrics logged so far durable before a checkpoint or the end vouches for
        them (a resume keeps the lines up to its checkpoint's step and logs the rest again)."""
        if self.main:
            sync_file(self.run_dir / runs.METRICS_FILE)

    def _save(self, ckpt: Checkpointer, step: int) -> None:
        self._sync_metrics()
        ckpt.save(step, self.state, {
            "step": step, "run_name": self.run_dir.name,
            "wall_time_s": self.elapsed_before + time.time() - self.t_start,
            **self.monitor.to_meta(), "log_since": self.log.since, "log_step": self.log.line_step})

    def _heartbeat(self, step: int, last_beat: float) -> float:
        if time.time() - last_beat <= HEARTBEAT_S:
            return last_beat
        if self.main:
            runs.heartbeat(self.run_dir, step)
            if self.lock is not None:
                self.lock.touch()
        return time.time()

    def _end_early(self, result_state: str, step: int, reason: str) -> dict:
        """A diverged run (status "diverged") or a stopped one (status "pending": it resumes)."""
        self._sync_metrics()
        extra = {"heartbeat": None} if result_state == "stopped" else {}
        self.status("pending" if extra else "diverged", step=step, reason=reason, pid=None, **extra)
        self.say(reason if extra else f"diverged: {reason}")
        return {"state": result_state, "step": step, "reason": reason}

    def _end_done(self, step: int, wall: float) -> dict:
        last_eval = self.last_eval or self._evaluate()  # resumed at the very end: not recorded
        steady_s = time.time() - self.log.steady_time if self.log.steady_time else 0.0
        steady_tokens = (step - self.log.steady_step) * self.tokens_per_step
        n_tokens = self.cfg.n_tokens
        result = {
            "eval_loss": last_eval["eval_loss"], "eval_bpb": last_eval["eval_bpb"],
            "n_params": self.counts["total"], "n_params_non_embedding": self.counts["non_embedding"],
            "n_tokens": n_tokens, "flops": self.fpt * n_tokens,
            "flops_by_convention": {c: f * n_tokens for c, f in self.by_convention.items()},
            "budget": self.cfg.budget, "steps": self.cfg.n_steps,
            "epochs": float(data_lib.epochs(n_tokens, self.token_data)),
            "wall_time_s": wall,
            "tokens_per_s": steady_tokens / steady_s if steady_s > 0 and steady_tokens > 0
            else n_tokens / max(wall, 1e-9),
            "corpus_hash": self.token_data.corpus_hash,
            "unigram_entropy": float(data_lib.unigram_entropy(self.token_data.train)),
            **{k: v for k, v in last_eval.items() if k.startswith(METRIC_PREFIXES)},
            **self.extra.describe(),
        }
        self._sync_metrics()
        if self.main:
            runs.write_result(self.run_dir, result)
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
    atomic_write_text(path, "".join(to_json(r, indent=None) + "\n" for r in kept))
