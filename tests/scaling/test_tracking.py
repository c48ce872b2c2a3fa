"""Experiment tracking: offline W&B and TensorBoard event files get metrics.jsonl's records
and the resolved config; a run trained in two attempts (a max-steps stop, then a resume)
continues the same tracker run; a tracker whose package is missing is refused up front."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # importlib mode: helpers are not on the path
from train_helpers import make_run, read_metrics  # noqa: E402

from scaling import runs, tracking
from scaling.train import train_run
from scaling_cli.main import main

wandb_pb = pytest.importorskip("wandb.proto.wandb_internal_pb2")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def wandb_records(path: Path) -> list:
    """The protobuf records of a .wandb file: W&B's 7-byte header, then LevelDB's log format
    (32 KiB blocks of chunks, each with a 7-byte header: crc32c, length, type)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunk, out = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if n == 0 and kind == 0:
            break
        chunk += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):  # FULL or LAST
            record = wandb_pb.Record()
            record.ParseFromString(chunk)
            out.append(record)
            chunk = b""
    return out


def test_two_attempts_continue_one_tracker_run(tmp_path, monkeypatch):
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = make_run(tmp_path, n_steps=16, log_every=4)
    runs.update_config_fields(run, tracking={
        "trackers": ["tensorboard", "wandb"], "project": "t", "group": "g",
        "wandb_mode": "offline"})
    cache = tmp_path / "cache"
    assert train_run(run, max_steps=8, progress=False, cache_dir=cache)["state"] == "stopped"
    run_id = json.loads((run / tracking.STATE_FILE).read_text())["wandb_id"]
    train_run(run, progress=False, cache_dir=cache)
    assert json.loads((run / tracking.STATE_FILE).read_text())["wandb_id"] == run_id
    metrics = read_metrics(run)
    assert [r["step"] for r in metrics] == [4, 8, 12, 16]

    attempts = sorted((run / "wandb").glob("offline-run-*"))
    assert len(attempts) == 2 and all(a.name.endswith(f"-{run_id}") for a in attempts)
    logged, config = [], None
    for attempt in attempts:
        for record in wandb_records(next(attempt.glob("run-*.wandb"))):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                assert record.run.run_id == run_id
                config = {u.key: json.loads(u.value_json) for u in record.run.config.update}
            elif kind == "history":
                logged.append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                               for i in record.history.item})
    assert [h["step"] for h in logged] == [4, 8, 12, 16]  # the second attempt continues
    assert [h["train_loss"] for h in logged] == [r["train_loss"] for r in metrics]
    assert logged[-1]["eval_loss"] == metrics[-1]["eval_loss"]
    assert config["model"] == runs.read_config_json(run)["model"]

    events = event_accumulator.EventAccumulator(str(run / tracking.TENSORBOARD_DIR))
    events.Reload()
    scalars = events.Scalars("train_loss")
    assert [s.step for s in scalars] == [4, 8, 12, 16]
    assert [s.value for s in scalars] == pytest.approx([r["train_loss"] for r in metrics],
                                                       rel=1e-6)  # stored as float32
    assert "config" in events.Tags()["tensors"]


def test_resume_from_an_older_checkpoint_drops_the_retrained_events(tmp_path):
    """TensorBoard: a resume at step 4 after events up to 8 keeps one value per step."""
    run = make_run(tmp_path, n_steps=16, log_every=4)
    runs.update_config_fields(run, tracking={"trackers": ["tensorboard"]})
    first = tracking.start(run, step=0)
    for step in (4, 8):
        first.log({"step": step, "train_loss": 10.0 + step})
    first.close()
    second = tracking.start(run, step=4)
    for step in (8, 12):
        second.log({"step": step, "train_loss": float(step)})
    second.close()
    events = event_accumulator.EventAccumulator(str(run / tracking.TENSORBOARD_DIR))
    events.Reload()
    assert [(s.step, s.value) for s in events.Scalars("train_loss")] == [
        (4, 14.0), (8, 8.0), (12, 12.0)]


SPEC = """
name = "tracked"
budgets = [1e9]
[data]
source = "synthetic:tokens=20000,vocab=32,seed=1"
seq_len = 32
[tracking]
trackers = ["tensorboard", "{tracker}"]
"""


@pytest.mark.parametrize("tracker, missing, needle", [
    ("wandb", "wandb", "needs the wandb package"),
    ("neptune", None, "expected some of wandb, tensorboard"),
])
def test_missing_tracker_exits_2_runs_dir_unchanged(tmp_path, capsys, monkeypatch, tracker,
                                                    missing, needle):
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec",
                        lambda name, *a: None if name == missing else real(name, *a))
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(tracker=tracker))
    runs_dir = tmp_path / "runs"
    assert main(["sweep", str(spec), "--runs-dir", str(runs_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tracking.trackers" in err and needle in err
    assert not runs_dir.exists()
