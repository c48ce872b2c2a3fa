"""Experiment tracking (optional): Weights & Biases and TensorBoard event files.

A run tracks when its config.json has a ``tracking`` block (written by `scaling sweep` from
the spec's ``[tracking]`` table)::

    "tracking": {"trackers": ["tensorboard", "wandb"], "project": "demo",
                 "group": "demo", "wandb_mode": "offline"}

The trainer calls `start` once it knows the step it starts from, `Tracker.log` with every
record it appends to metrics.jsonl, and `Tracker.close` at the end of the attempt. Only
process 0 tracks. Both trackers get the same records as metrics.jsonl, keyed by the
optimiser step, and the resolved config (config.json).

Resume: the tracker's run id is kept in RUN_DIR/tracking.json, so a resumed run continues
the same W&B run (``resume="allow"`` with the same id) and the same TensorBoard directory
(RUN_DIR/tensorboard). A resume starts from a checkpoint that may be older than the last
logged step: TensorBoard is told to drop the later events (a SessionLog START at that step,
what ``purge_step`` does in other writers); W&B's own step only grows, so its metrics are
plotted against the ``step`` field (``define_metric``) and the retrained steps appear twice.

Offline W&B runs (``wandb_mode = "offline"``, or WANDB_MODE=offline) stay in
RUN_DIR/wandb/offline-run-*; upload them later with ``wandb sync RUN_DIR/wandb/offline-run-*``.

The packages are the ``tracking`` extra (``pip install 'scaling-suite[tracking]'``); a
tracker named whose package is missing is a UserError before anything is written.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from scaling import runs
from scaling.errors import UserError
from scaling.fileio import atomic_write_json, read_json_object

TRACKERS = {"wandb": "wandb", "tensorboard": "tensorboard"}  # tracker -> package it needs
STATE_FILE = "tracking.json"
TENSORBOARD_DIR = "tensorboard"


def check_installed(trackers, where: str = "tracking.trackers") -> None:
    """UserError naming the first tracker that is unknown or whose package is missing."""
    for name in trackers:
        if name not in TRACKERS:
            raise UserError(f"{where}: expected some of {', '.join(TRACKERS)}, got {name!r}")
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise UserError(f"{where}: {name!r} needs the {TRACKERS[name]} package, which is not "
                            f"installed (pip install 'scaling-suite[tracking]')")


class Tracker:
    """The trackers of one training attempt; a no-op when the run tracks nothing."""

    def __init__(self, sinks: list | None = None) -> None:
        self.sinks = sinks or []

    def log(self, record: dict) -> None:
        scalars = {k: float(v) for k, v in record.items()
                   if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)}
        for sink in self.sinks:
            sink.log(int(record["step"]), scalars)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
        self.sinks = []


def start(run_dir: str | os.PathLike, *, step: int, main: bool = True) -> Tracker:
    """Open (or continue) the trackers named in the run's config.json; `step` is the step
    this attempt starts from (0, or the checkpoint it resumes)."""
    run_dir = Path(run_dir)
    config = runs.read_config_json(run_dir)
    settings = config.get("tracking") or {}
    trackers = list(settings.get("trackers") or [])
    if not trackers or not main:
        return Tracker()
    check_installed(trackers, f"{run_dir / runs.CONFIG_FILE}: tracking.trackers")
    state = _read_state(run_dir)
    sinks = []
    if "tensorboard" in trackers:
        sinks.append(_TensorBoard(run_dir / TENSORBOARD_DIR, config, step))
    if "wandb" in trackers:
        if not state.get("wandb_id"):
            state["wandb_id"] = secrets.token_hex(4)  # W&B ids: lowercase letters and digits
            atomic_write_json(run_dir / STATE_FILE, state)  # before the run exists anywhere
        sinks.append(_WandB(run_dir, config, settings, state["wandb_id"]))
    return Tracker(sinks)


def _read_state(run_dir: Path) -> dict:
    if not (run_dir / STATE_FILE).exists():
        return {}
    return read_json_object(run_dir / STATE_FILE)


class _TensorBoard:
    """Event files through the tensorboard package's own writer (no TensorFlow, no torch)."""

    def __init__(self, logdir: Path, config: dict, step: int) -> None:
        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._event_pb2 = event_pb2
        logdir.mkdir(parents=True, exist_ok=True)
        self.writer = EventFileWriter(str(logdir))
        if step > 0:  # steps after the checkpoint are retrained: TensorBoard drops the
            # old events from the START's step on (the checkpoint's own step was logged once)
            self._add(event_pb2.Event(step=step + 1, session_log=event_pb2.SessionLog(
                status=event_pb2.SessionLog.START)))
        else:
            self._text("config", "```json\n" + json.dumps(config, indent=2, default=str) + "\n```")

    def _add(self, event) -> None:
        event.wall_time = time.time()
        self.writer.add_event(event)

    def _text(self, tag: str, text: str) -> None:
        from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING, string_val=[text.encode()],
            tensor_shape=tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]))
        meta = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text"))
        value = summary_pb2.Summary.Value(tag=tag, metadata=meta, tensor=tensor)
        self._add(self._event_pb2.Event(step=0, summary=summary_pb2.Summary(value=[value])))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        from tensorboard.compat.proto import summary_pb2

        values = [summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in scalars.items()]
        self._add(self._event_pb2.Event(step=step, summary=summary_pb2.Summary(value=values)))

    def close(self) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, run_dir: Path, config: dict, settings: dict, run_id: str) -> None:
        import wandb

        kwargs: dict[str, Any] = {}
        if settings.get("wandb_mode"):
            kwargs["mode"] = settings["wandb_mode"]
        if settings.get("entity"):
            kwargs["entity"] = settings["entity"]
        self.run = wandb.init(
            project=settings.get("project") or "scaling-suite", group=settings.get("group"),
            name=run_dir.name, id=run_id, resume="allow", dir=str(run_dir),
            config={k: v for k, v in config.items() if k != "tracking"},
            settings=wandb.Settings(console="off"), **kwargs)
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log({"step": step, **scalars})

    def close(self) -> None:
        self.run.finish()
