"""Bookkeeping must stay linear in the number of runs (bench/bookkeeping.py measures it at
1K-10K runs; these are the small, fast guards)."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from reliability_helpers import study_configs, write_finished_run  # noqa: E402

from scaling import runs  # noqa: E402


def _many_runs(root: Path, n: int) -> list[Path]:
    first = write_finished_run(root, study_configs(budgets=(1e9,), widths=(8,), sweep="s")[0])
    for i in range(n - 1):
        shutil.copytree(first, first.parent / f"{first.name}-{i}")
    return runs.list_run_dirs(root)


def test_sweep_progress_view_takes_a_bounded_share_of_the_launcher(tmp_path):
    """`scaling sweep` refreshes its progress line from every run's records; if it did so at
    a fixed rate its share of the launcher's single thread would grow with the number of
    runs, and the sweep's overhead quadratically. It must stay a bounded fraction."""
    from sweeps.launch.local import Progress
    from sweeps.progress import SweepProgress

    dirs = _many_runs(tmp_path / "runs", 1500)
    view = SweepProgress(quiet=True, dirs=dirs)
    progress = Progress(total=len(dirs), states={d: "running" for d in dirs})
    t = time.perf_counter()
    view.update(progress)  # the first refresh always happens
    one_refresh = time.perf_counter() - t
    in_view, t0 = 0.0, time.perf_counter()
    while time.perf_counter() - t0 < max(3.0, 12 * one_refresh):
        t = time.perf_counter()
        view.update(progress)  # the launcher calls it after every poll
        in_view += time.perf_counter() - t
        time.sleep(0.02)
    elapsed = time.perf_counter() - t0
    assert in_view <= 0.2 * elapsed + one_refresh, (in_view, elapsed, one_refresh)
