"""Slurm launcher (submitit): one job-array task per unfinished run.

Each task runs ``python -m sweeps.launch.worker RUN_DIR`` (the same worker as the local
launcher: it takes the run's lock, skips a finished run and resumes an interrupted one), so
a task that Slurm kills and requeues simply continues from the trainer's last checkpoint.

Multi-node: ``launcher.nodes`` x ``launcher.tasks_per_node`` processes per run (one per node,
or one per GPU), all started by srun in the job step (submitit's nodes/tasks_per_node).
Process 0 runs the worker as above; every other process runs the trainer alone, without the
lock (`scaling.train` takes it only in process 0, which also writes every record). The
trainers join one `jax.distributed` job from Slurm's environment (`scaling.mesh`) and save
checkpoints collectively through orbax, so requeue and resume are unchanged. Outside Slurm
(submitit's local executor) the coordinator is passed explicitly (JAX_COORDINATOR_ADDRESS).

Preemption and time limits: the task is a submitit ``Checkpointable``. When Slurm signals
the end of its time (or a preemption), submitit calls `TrainTask.checkpoint`, which sends
SIGTERM to the worker (the trainer saves a checkpoint and exits) and asks submitit to
requeue the same task; ``scontrol requeue`` works as well, since the next attempt resumes
from whatever checkpoint is on disk. ``launcher.max_requeues`` bounds submitit's requeues.

The launcher polls the run directories (not only Slurm) for progress, so it works with any
accounting setup, and returns when every task has ended.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from scaling import runs
from scaling.errors import UserError
from scaling.host_env import tuned_environ
from sweeps.launch.local import Progress
from sweeps.launch.submitit_quiet import submitit
from sweeps.launch.worker import DEFAULT_TRAIN_CMD, EXIT_LOCKED, EXIT_TERMINATED

WAIT_LOCKED_S = 5.0
TERMINATED_GRACE_S = 120.0
FINISHED = ("done", "diverged")


def _task_env() -> tuple[int, int, dict[str, str]]:
    """(this task's global rank, the number of tasks, extra environment for the trainer)."""
    try:
        env = submitit.JobEnvironment()
        rank, n_tasks = env.global_rank, env.num_tasks
    except RuntimeError:  # called outside a submitit job (tests): one process
        return 0, 1, {}
    if n_tasks == 1 or os.environ.get("SLURM_STEP_ID") is not None:
        return rank, n_tasks, {}  # in an srun step jax reads Slurm's variables itself
    # submitit's local executor: the same port rule as jax's Slurm detection
    port = int(env.job_id.split("_")[0]) % 2**12 + (65535 - 2**12 + 1)
    return rank, n_tasks, {"JAX_COORDINATOR_ADDRESS": f"{env.hostnames[0]}:{port}",
                           "JAX_NUM_PROCESSES": str(n_tasks), "JAX_PROCESS_ID": str(rank)}


def _rejoin(run_dir: str, rc: int) -> bool:
    """A process > 0 whose trainer failed while the run goes on tries again: its
    jax.distributed.initialize times out when process 0's trainer starts late (a WSD branch
    waiting for its stable run, a lock held elsewhere); process 0 settles the run's fate."""
    return rc != EXIT_TERMINATED and runs.effective_state(run_dir) not in runs.TERMINAL_STATES


class TrainTask(submitit.helpers.Checkpointable):
    """Callable run by each array task; Checkpointable so preemption requeues it."""

    def __init__(self, train_cmd: Sequence[str] | None = None,
                 python: str = sys.executable) -> None:
        self.train_cmd = list(train_cmd) if train_cmd is not None else None
        self.python = python
        self._proc: subprocess.Popen | None = None
        self._checkpointing = False

    def __call__(self, run_dir: str) -> str:
        rank, _, extra_env = _task_env()
        if rank == 0:
            cmd = [self.python, "-m", "sweeps.launch.worker", run_dir]
            if self.train_cmd is not None:
                cmd += ["--", *self.train_cmd]
            log = None
        elif runs.effective_state(run_dir) in FINISHED:
            return runs.effective_state(run_dir)  # process 0's worker skips it as well
        else:
            cmd = [*(self.train_cmd or DEFAULT_TRAIN_CMD), run_dir]
            log = Path(run_dir) / f"train.rank{rank}.log"
        env = tuned_environ({**os.environ, **extra_env})
        while True:
            rc = self._run_child(cmd, env, log)
            if rc == EXIT_TERMINATED and not self._checkpointing:
                # Slurm is stopping this task (requeue, preemption, scancel): the trainer has
                # checkpointed; wait for the kill instead of reporting an unfinished run as
                # this attempt's result, so the requeued attempt is the one that counts.
                time.sleep(TERMINATED_GRACE_S)
            if rc != EXIT_LOCKED and not (rank and rc and _rejoin(run_dir, rc)):
                break
            time.sleep(WAIT_LOCKED_S)  # another launcher is training it: wait for its end
        state = runs.effective_state(run_dir)
        if state in ("failed",):
            raise RuntimeError(f"{Path(run_dir).name} failed: {runs.read_status(run_dir)['reason']}")
        return state

    def _run_child(self, cmd: list[str], env: dict[str, str], log: Path | None) -> int:
        out = open(log, "ab") if log is not None else None  # noqa: SIM115 - closed below
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env=env, stdout=out,
                                          stderr=subprocess.STDOUT if out else None)
            return self._proc.wait()
        finally:
            self._proc = None
            if out is not None:
                out.close()

    def checkpoint(self, run_dir: str):
        self._checkpointing = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the trainer checkpoints and exits
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        return submitit.helpers.DelayedSubmission(TrainTask(self.train_cmd, self.python), run_dir)

    def __getstate__(self) -> dict:
        return {"train_cmd": self.train_cmd, "python": self.python}

    def __setstate__(self, state: dict) -> None:
        TrainTask.__init__(self, **state)


def make_executor(folder: str | os.PathLike, launcher, name: str, cluster: str | None = "slurm"):
    extra = {"slurm_max_num_timeout": launcher.max_requeues} if cluster == "slurm" else {}
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster, **extra)
    params = dict(timeout_min=launcher.time_min, cpus_per_task=launcher.cpus_per_task,
                  name=name, slurm_array_parallelism=launcher.array_parallelism,
                  nodes=launcher.nodes, tasks_per_node=launcher.tasks_per_node)
    if launcher.gpus_per_task:
        params["gpus_per_node"] = launcher.gpus_per_task * launcher.tasks_per_node
    if launcher.mem_gb:
        params["mem_gb"] = launcher.mem_gb
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(launcher, key)
        if value:
            params[f"slurm_{key}"] = value
    if cluster != "slurm":
        params = {k: v for k, v in params.items() if not k.startswith("slurm_") and k != "nodes"}
    executor.update_parameters(**params)
    return executor


def _settle_job(d: Path, job) -> str:
    """A finished job's run state; a task's exception is the run's failure."""
    try:
        job.result()
    except Exception as e:  # noqa: BLE001 - a task's failure is the run's
        if runs.effective_state(d) not in runs.TERMINAL_STATES:
            runs.write_status(d, "failed", reason=f"slurm job {job.job_id}: "
                              f"{str(e).strip().splitlines()[-1][:300]}")
    return runs.effective_state(d)


def _poll(pending: dict, progress: Progress) -> None:
    """One look at every pending job: settle the finished ones, update the others' states."""
    for d, job in list(pending.items()):
        if job.done():
            del pending[d]
            progress.running.discard(d)
            progress.states[d] = _settle_job(d, job)
            continue
        state = runs.effective_state(d)
        progress.states[d] = state if state != "interrupted" else "pending"
        if state == "running":
            progress.running.add(d)


def run_slurm(run_dirs: Sequence[str | os.PathLike], launcher, sweep_dir: str | os.PathLike, *,
              train_cmd: Sequence[str] | None = None,
              on_update: Callable[[Progress], None] | None = None, poll_s: float = 2.0,
              cluster: str | None = "slurm") -> dict[Path, str]:
    """Submit every unfinished run as one job array and wait for all of them."""
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise UserError("--launcher slurm: sbatch is not on PATH (not a Slurm login node?); "
                        "use --launcher local")
    dirs = [Path(d).resolve() for d in run_dirs]
    progress = Progress(total=len(dirs))
    for d in dirs:
        state = runs.effective_state(d)
        progress.states[d] = state if state in FINISHED else "pending"
    todo = [d for d in dirs if progress.states[d] not in FINISHED]
    pending = {}
    if todo:
        executor = make_executor(Path(sweep_dir).resolve() / ".slurm" / "%j", launcher,
                                 name=f"scaling-{Path(sweep_dir).name}", cluster=cluster)
        jobs = executor.map_array(TrainTask(train_cmd), [str(d) for d in todo])
        pending = dict(zip(todo, jobs, strict=True))
    while pending:
        _poll(pending, progress)
        if on_update is not None:
            on_update(progress)
        if pending:
            time.sleep(poll_s)
    if on_update is not None:
        on_update(progress)
    return progress.states
