"""A replica group: runs that differ only in scalar hyper-parameters (scaling.replica_groups),
trained in one process by one jitted step vmapped over a leading replica axis.

Only the state and the step are shared. The parameters and optimizer states of the R runs
are stacked along a new leading axis, the step's scalars (lr, weight decay, betas, eps,
clip norm, the schedule's numbers) go in as [R] arrays, and each replica reads its own batches (they depend
on its seed), so one dispatch advances every run by the same k steps its solo run would
take. Everything else is per run, done by scaling.train's own `_Trainer` (one per replica,
fed its replica's slice of every dispatch): its RunLock, metrics.jsonl, divergence monitor,
status, checkpoints and result.json, in the exact formats of a solo run, so a run trained in
a group can be resumed alone and the other way round.

On CPU the group's lanes are split over the cores: the process starts with one XLA host
device per usable core (`request_cpu_devices`, before anything touches a device), the
lanes are padded with copies of the first to a multiple of the device count (the copies'
outputs are dropped), and the step runs under `shard_map`, each device advancing its own
lanes with no communication. A tiny model's solo step keeps about one core busy (XLA:CPU
splits only large ops over threads), so this is what puts the second core to work.

A replica that diverges is marked diverged at once and drops out of the bookkeeping (its
lane keeps computing: lanes never mix, and dropping it would recompile); the others go on.
A group resumes from the newest checkpoint step all its runs have (a kill between two of
their saves leaves them one checkpoint apart). Numerics: see tests/scaling/test_replicas.py
for what holds against solo runs on CPU (vmap turns each matmul into a batched one).
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from scaling import data as data_lib
from scaling import dispatch, runs
from scaling import mesh as mesh_lib
from scaling.checkpoint import CHECKPOINT_DIR, Checkpointer
from scaling.compile_cache import enable_compile_cache
from scaling.errors import UserError
from scaling.evals import ExtraEvals
from scaling.lock import RunLock, RunLocked
from scaling.replica_groups import group_key
from scaling.schedules import validate as validate_schedule
from scaling.train import (
    FAULT_ENV,
    HEARTBEAT_S,
    _is_multiple,
    _Terminate,
    _Trainer,
    _truncate_metrics,
    failure_reason,
    train_run,
)
from scaling.train_step import (
    TrainState,
    make_eval_fn,
    make_score_fn,
    multi_step_fn,
    step_scalars,
)


def train_group(run_dirs, *, peak_flops: float | None = None, max_steps: int | None = None,
                progress: bool = True, steps_per_dispatch: int | None = None,
                cache_dir: str | os.PathLike | None = None) -> dict[str, dict]:
    """Train or resume the runs of `run_dirs` as one replica group; {run_dir: result}.

    Each result is what `scaling.train.train_run` returns for that run. One run trains alone.
    """
    dirs = [Path(d) for d in run_dirs]
    if len({d.resolve() for d in dirs}) != len(dirs):
        raise UserError("RUN_DIR: a run directory is named twice")
    if len(dirs) == 1:
        return {str(dirs[0]): train_run(dirs[0], peak_flops=peak_flops, max_steps=max_steps,
                                        progress=progress, steps_per_dispatch=steps_per_dispatch,
                                        cache_dir=cache_dir)}
    request_cpu_devices(len(dirs))
    enable_compile_cache(cache_dir)
    cfgs = [runs.load_run_config(d) for d in dirs]
    for d, cfg in zip(dirs, cfgs, strict=True):
        if runs.read_config_json(d).get("wsd"):
            raise UserError(f"{d}: a WSD stable run or branch trains alone, not in a group")
        if group_key(cfg) != group_key(cfgs[0]):
            raise UserError(f"{d}: differs from {dirs[0].name} in more than the scalar "
                            "hyper-parameters (lr, weight decay, betas, eps, clip, seed); "
                            "it cannot train in its group")
    with ExitStack() as stack:
        locks = []
        for d in dirs:
            lock = RunLock(d)
            try:
                stack.enter_context(lock)
            except RunLocked as e:
                raise UserError(f"{d}: {e}; is it already training?") from None
            locks.append(lock)
        members = [_Trainer(d, cfg, peak_flops=peak_flops, max_steps=max_steps, progress=False,
                            steps_per_dispatch=steps_per_dispatch, cache_dir=cache_dir,
                            keep_steps=(), fsdp=1, lock=lock)
                   for d, cfg, lock in zip(dirs, cfgs, locks, strict=True)]
        return _Group(members, progress=progress, cache_dir=cache_dir).run()


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def request_cpu_devices(n_replicas: int) -> None:
    """One XLA host device per usable core (at most one per replica), if the backends have
    not started yet and the user set no device count of their own; otherwise nothing (a
    library caller that already ran JAX keeps the devices it has, and the group its one)."""
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return
    try:
        jax.config.update("jax_num_cpu_devices", max(1, min(usable_cores(), n_replicas)))
    except RuntimeError:  # the backends are up already
        pass


def group_devices() -> list:
    """The devices a group's lanes are split over: every local CPU device on CPU, else the
    first device (on accelerators one device is far from busy with a group of tiny runs)."""
    if jax.default_backend() == "cpu":
        return list(jax.local_devices())
    return jax.local_devices()[:1]


def n_lanes(n_replicas: int, n_devices: int) -> int:
    """Lanes of a group of n_replicas over n_devices: the next multiple of the device count."""
    return -(-n_replicas // n_devices) * n_devices


def lane_sharding(devices: list) -> NamedSharding:
    return NamedSharding(Mesh(np.asarray(devices), ("replicas",)), PartitionSpec("replicas"))


def pad_lanes(rows: list, lanes: int) -> list:
    """`rows` (one per replica) padded to `lanes` with copies of the first."""
    return [*rows, *[rows[0]] * (lanes - len(rows))]


def stack_trees(trees: list):
    """One tree of host arrays whose leaves are the trees' leaves stacked along a new
    leading axis (for a device_put to the lanes: no program to compile per leaf shape)."""
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def init_group(ts: TrainState, seeds: list[int]) -> dict:
    """The fresh states of runs of `ts`'s shape with these seeds, stacked: each run's own
    `ts.init(seed)` (one compiled program for them all, and for their solo runs)."""
    return stack_trees([ts.init(seed) for seed in seeds])


def make_group_step_fn(ts: TrainState, *, devices: list | None = None,
                       fault_step: int | None = None):
    """jit(params_R, opt_state_R, step0, step1, batches_RxKxAxBxL1, scalars_R) ->
    (params_R, opt_state_R, ce_RxK, gnorm_RxK, lr_RxK), as scaling.train_step.make_step_fn
    for each lane; `scalars_R` maps STEP_SCALARS to [R].
    With several `devices`, R (a multiple of their number) is split over them (`shard_map`,
    each device its own lanes); the state then lives in `lane_sharding(devices)`."""
    step = jax.vmap(multi_step_fn(ts, fault_step=fault_step), in_axes=(0, 0, None, None, 0, 0))
    if devices is not None and len(devices) > 1:
        lanes = lane_sharding(devices).spec
        step = jax.shard_map(step, mesh=lane_sharding(devices).mesh,
                             in_specs=(lanes, lanes, PartitionSpec(), PartitionSpec(), lanes,
                                       lanes),
                             out_specs=lanes)
    return jax.jit(step, donate_argnums=(0, 1))


def group_scalars(cfgs: list, lanes: int) -> dict[str, np.ndarray]:
    """The runs' step_scalars as f32 [lanes] arrays (padded with the first run's)."""
    rows = pad_lanes([step_scalars(c) for c in cfgs], lanes)
    return {name: np.asarray([r[name] for r in rows], np.float32) for name in rows[0]}


def _unstack_fn(n: int, device):
    """The first n lanes of a stacked state as n trees on `device` (the runs' own)."""
    unstack = jax.jit(lambda tree: [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(n)])
    return lambda tree: unstack(jax.device_put(tree, SingleDeviceSharding(device)))


class _Group:
    def __init__(self, members: list[_Trainer], *, progress: bool, cache_dir) -> None:
        self.members, self.progress, self.cache_dir = members, progress, cache_dir
        self.results: dict[str, dict] = {}

    def say(self, msg: str) -> None:
        if self.progress:
            print(msg, file=sys.stderr, flush=True)

    def run(self) -> dict[str, dict]:
        try:
            return self._run()
        except UserError:
            raise
        except BaseException as e:
            reason = failure_reason(e)
            for m in self.members:
                if str(m.run_dir) not in self.results:
                    m.status("failed", reason=reason, pid=None)
            raise

    def _run(self) -> dict[str, dict]:
        live = self._prepare()
        if not live:
            return self.results
        first = live[0]
        fault = os.environ.get(FAULT_ENV)
        step_fn = make_group_step_fn(first.ts, devices=self.devices,
                                     fault_step=int(fault) if fault else None)
        scalars = group_scalars([m.cfg for m in live], self.lanes)
        self.unstack = _unstack_fn(len(live), self.devices[0])
        with ExitStack() as stack:
            ckpts = [stack.enter_context(Checkpointer(m.run_dir / CHECKPOINT_DIR)) for m in live]
            step = self._restore(live, ckpts)
            for m in live:
                m.status("running", step=step, reason=None)
            with _Terminate() as term:
                step = self._loop(live, ckpts, step, step_fn, scalars, term)
        self._finish(live, step, term)
        return self.results

    def _prepare(self) -> list[_Trainer]:
        """Validate, load the data once, build each replica's state: the runs to train."""
        if jax.default_backend() != "cpu" and jax.device_count() != 1:
            raise UserError(f"replica groups train on one device, found {jax.device_count()}; "
                            "train the runs alone or limit the devices (CUDA_VISIBLE_DEVICES)")
        self.devices = group_devices()
        mesh = mesh_lib.make_mesh(1, self.devices[:1])  # each run's own state, eval and saves
        live = []
        for m in self.members:
            m.mesh = mesh
            if m.cfg.n_steps < 1:
                raise UserError(f"{m.run_dir}: n_steps: expected a positive integer, got {m.cfg.n_steps}")
            validate_schedule(m.cfg.schedule, m.cfg.n_steps)
            existing = runs.read_result(m.run_dir)
            if existing is not None and runs.read_status(m.run_dir)["state"] == "done":
                self.results[str(m.run_dir)] = existing
            else:
                live.append(m)
        if not live:
            return live
        first = live[0]
        cfg = first.cfg
        token_data = data_lib.load_tokens(cfg.data, seq_len=cfg.model.seq_len, cache_dir=self.cache_dir)
        if token_data.vocab_size > cfg.model.vocab_size:
            raise UserError(f"model.vocab_size: expected at least the tokenizer's "
                            f"{token_data.vocab_size}, got {cfg.model.vocab_size}")
        eval_batches = data_lib.eval_batches(token_data.valid, eval_tokens=cfg.data.eval_tokens,
                                             batch_size=cfg.batch_size, seq_len=cfg.model.seq_len)
        # The group shares its data config, so its eval sets and tasks too (checked before
        # any run writes anything, as a run alone does).
        extra = ExtraEvals.load(cfg.data, token_data, seq_len=cfg.model.seq_len,
                                batch_size=cfg.batch_size, vocab_size=cfg.model.vocab_size,
                                cache_dir=self.cache_dir)
        for m in live:
            m.token_data = token_data
            m.extra = extra
            m._record_corpus_hash(token_data.corpus_hash)
            m._announce()
            m.ts = TrainState(m.cfg, mesh)
            m.eval_batches = eval_batches
        # One eval function for all: the model's graph does not depend on the seed.
        eval_fn, score_fn = make_eval_fn(first.ts), make_score_fn(first.ts)
        for m in live:
            m.eval_fn, m.score_fn = eval_fn, score_fn
        self.lanes = n_lanes(len(live), len(self.devices))
        self.say(f"group of {len(live)} runs ({', '.join(m.run_dir.name for m in live)}): "
                 f"N={first.counts['total']:,} params, {cfg.n_steps} steps, batch "
                 f"{cfg.batch_size}x{cfg.model.seq_len}, {first.k} step(s)/dispatch, "
                 f"{self.lanes} lanes on {len(self.devices)} device(s)")
        return live

    def _finish(self, live: list[_Trainer], step: int, term: _Terminate) -> None:
        """Each run that did not diverge: done (result.json) or stopped (pending, resumes)."""
        for m in live:
            if m.diverged is not None:
                continue  # marked when it diverged
            if step < m.cfg.n_steps:
                why = "SIGTERM" if term.requested else f"max_steps={m.max_steps}"
                result = m._end_early("stopped", step, f"stopped by {why} at step {step}; "
                                      "checkpointed, rerun to resume")
            else:
                result = m._end_done(step, m.elapsed_before + time.time() - m.t_start)
                self.say(f"{m.run_dir.name}: done, eval loss {result['eval_loss']:.4f}")
            self.results[str(m.run_dir)] = result
        if any(m.diverged is None for m in live) and step < live[0].cfg.n_steps:
            self.say(f"group stopped at step {step}; checkpointed, rerun to resume")

    def _restore(self, live: list[_Trainer], ckpts: list[Checkpointer]) -> int:
        """All runs at the newest step every one of them has a checkpoint for (0: fresh)."""
        newest = [max(c.steps(), default=0) for c in ckpts]
        at = min(newest)
        for m, c in zip(live, ckpts, strict=True):
            if at and at not in c.steps():
                raise UserError(f"{m.run_dir}: no checkpoint at step {at}, where the rest of its "
                                f"group resumes (it has {c.steps()}); train it alone")
        seeds = pad_lanes([m.cfg.seed for m in live], self.lanes)
        fresh = init_group(live[0].ts, seeds) if at == 0 else None
        for m, c in zip(live, ckpts, strict=True):
            m._restore(c, at, fresh={} if at == 0 else None)  # the stacked state is `fresh`
            if at == 0:
                _truncate_metrics(m.run_dir / runs.METRICS_FILE, 0, True)
        if at:
            self.say(f"resuming from step {at}")
        stacked = stack_trees(pad_lanes([m.state for m in live], self.lanes)) if fresh is None else fresh
        self.state = jax.device_put(stacked, lane_sharding(self.devices))
        for m in live:
            m.state = {}  # the stacked copy is the one that trains
        return at

    def _loop(self, live, ckpts, step: int, step_fn, scalars, term) -> int:
        first = live[0]
        cfg, k, stop = first.cfg, first.k, first.stop
        periods = (k, cfg.log_every, cfg.eval_every, cfg.checkpoint_every)
        pending, last_beat = None, time.time()
        while step < stop:
            end = dispatch.chunk_end(step, stop, k, periods, ())
            batches = np.stack(pad_lanes([dispatch.chunk_batches(m.token_data.train, m.cfg,
                                                                 step, step + k) for m in live],
                                         self.lanes))
            params, opt_state, *outputs = step_fn(
                self.state["params"], self.state["opt_state"], np.asarray(step, np.int32),
                np.asarray(end, np.int32), batches, scalars)
            self.state = {**self.state, "params": params, "opt_state": opt_state}
            if pending is not None:
                self._process(live, pending)
            pending, step = (step, end, *outputs), end
            if all(m.diverged is not None for m in live):
                return step
            is_eval = _is_multiple(end, cfg.eval_every) or end == cfg.n_steps
            is_ckpt = _is_multiple(end, cfg.checkpoint_every) or end == stop
            stop_now = term.requested
            if is_eval or is_ckpt or stop_now:
                self._boundary(live, ckpts, pending, is_eval, is_ckpt or stop_now)
                pending = None
                if stop_now or all(m.diverged is not None for m in live):
                    return step
            if time.time() - last_beat > HEARTBEAT_S:
                for m in live:
                    if m.diverged is None:
                        runs.heartbeat(m.run_dir, step)
                        m.lock.touch()
                last_beat = time.time()
        if pending is not None:
            self._process(live, pending)
        self._unstack_into(live)
        return step

    def _boundary(self, live, ckpts, pending: tuple, is_eval: bool, save: bool) -> None:
        """At an eval or checkpoint step: each replica's own state, eval, metrics, checkpoint."""
        self._unstack_into(live)
        evals = [m._evaluate() if is_eval and m.diverged is None else None for m in live]
        self._process(live, pending, evals)
        if save:
            for m, c in zip(live, ckpts, strict=True):
                if m.diverged is None:
                    m._save(c, pending[1])

    def _unstack_into(self, live: list[_Trainer]) -> None:
        for m, state in zip(live, self.unstack(self.state), strict=True):
            m.state = state

    def _process(self, live: list[_Trainer], chunk: tuple, evals: list | None = None) -> None:
        """Each live replica's slice of a dispatched chunk through its own bookkeeping; a
        replica that diverges here is marked diverged at once."""
        s0, s1, *outputs = chunk
        ce_RxK, gn_RxK, lr_RxK = (mesh_lib.fetch(x)[:, :s1 - s0] for x in outputs)
        for i, m in enumerate(live):
            if m.diverged is not None:
                continue
            m._process((s0, s1, ce_RxK[i], gn_RxK[i], lr_RxK[i]), evals[i] if evals else None)
            if m.diverged is not None:
                self.results[str(m.run_dir)] = m._end_early("diverged", m.diverged.step,
                                                            m.diverged.reason)
                self.say(f"{m.run_dir.name}: diverged: {m.diverged.reason}")
        logged = [m for m in live if m.diverged is None and m.log.line_step == s1]
        if logged and (_is_multiple(s1, logged[0].cfg.log_every) or evals):
            losses = [float(np.mean(ce_RxK[live.index(m)])) for m in logged]
            self.say(f"step {s1}/{logged[0].cfg.n_steps}  loss {min(losses):.4f}..{max(losses):.4f} "
                     f"({len(logged)} runs)")
