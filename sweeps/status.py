"""One row per run of a runs directory: what `scaling status` and the sweep's progress show.

Reads only config.json, status.json and result.json (a few small files per run, through
`scaling.runs.iter_runs`), so it stays fast on tens of thousands of runs.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from scaling.runs import RunRecord, iter_runs, read_run


def run_row(run: RunRecord | str | os.PathLike) -> dict:
    """The run's state (``interrupted`` for a running record whose process is gone,
    ``unreadable`` with the reason for a corrupt record), size, budget, progress and result."""
    r = run if isinstance(run, RunRecord) else read_run(Path(run))
    return {
        "run": r.name, "sweep": r.sweep, "state": r.state, "budget": r.budget,
        "n_params": r.param_counts.get("total"), "n_tokens": r.n_tokens, "flops": r.run_flops,
        "step": r.n_steps if r.state == "done" else r.step, "n_steps": r.n_steps,
        "eval_loss": r.result.eval_loss if r.result else None, "reason": r.reason,
        "host": r.host, "pid": r.pid, "heartbeat": r.heartbeat,
    }


def status_rows(runs_dir: str | os.PathLike) -> list[dict]:
    return [run_row(r) for r in iter_runs(runs_dir)]


def done_fraction(row: dict) -> float:
    """How much of the run is trained: 1 when done, else its last step over its steps."""
    if row["state"] == "done":
        return 1.0
    if row.get("step") and row.get("n_steps"):
        return min(1.0, row["step"] / row["n_steps"])
    return 0.0


def summarize(rows: list[dict]) -> dict:
    return {"runs": len(rows), "states": dict(Counter(r["state"] for r in rows)),
            "flops_total": sum(r.get("flops") or 0 for r in rows),
            "flops_done": sum((r.get("flops") or 0) * done_fraction(r) for r in rows)}
