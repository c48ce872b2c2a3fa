"""The live progress of `scaling sweep`: runs done/running/failed of total, FLOPs done of
total, tokens/s and ETA, refreshed from the run records as the launcher reports."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.live import Live

from sweeps.launch.local import Progress
from sweeps.plan import SweepPlan, wsd_savings
from sweeps.status import done_fraction, run_row, summarize


def format_duration(seconds: float | None) -> str:
    """3725 -> '1h02m', 65 -> '1m05s'; None -> '-'."""
    if seconds is None:
        return "-"
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class SweepProgress:
    """`on_plan` and `update` are the callbacks of `sweeps.sweep.run_sweep`; quiet prints
    nothing (the view still computes, for --json runs and benchmarks)."""

    def __init__(self, quiet: bool, dirs: Sequence[Path] = ()) -> None:
        self.console = Console(stderr=True)
        self.live: Live | None = None
        self.quiet = quiet
        self.t0, self.last, self.min_interval = time.monotonic(), 0.0, 0.5
        self.dirs = list(dirs)
        self.seen_states: dict = {}
        self.baseline: tuple[float, float] | None = None  # FLOPs and tokens done at the start

    def on_plan(self, plan: SweepPlan, dirs: Sequence[Path]) -> None:
        self.dirs, self.baseline = list(dirs), None
        if not self.quiet:
            saved = wsd_savings(plan)
            extra = f", {saved:.3g} saved by shared WSD stable phases" if saved else ""
            self.console.print(f"sweep {plan.spec.name}: {len(plan.runs)} runs, "
                               f"{plan.total_flops:.3g} FLOPs{extra}")
            for f in plan.findings:
                self.console.print(f"[yellow]{f.level}[/]: {f.message}")
            if self.console.is_terminal and self.live is None:
                self.live = Live(console=self.console, auto_refresh=False, transient=False)
                self.live.start()

    def update(self, progress: Progress) -> None:
        now = time.monotonic()
        # a refresh reads every run's records (O(runs)); waiting 10x its cost between
        # refreshes keeps the view's share of a long sweep bounded, so it stays linear
        if now - self.last < self.min_interval and any(s == "running" for s in progress.states.values()):
            return
        self.last = now
        rows = [run_row(d) for d in self.dirs]
        summary = summarize(rows)
        states, flops_total, flops_done = (summary["states"], summary["flops_total"],
                                           summary["flops_done"])
        tokens_done = sum((r["n_tokens"] or 0) * done_fraction(r) for r in rows)
        if self.baseline is None:
            self.baseline = (flops_done, tokens_done)
        dt = max(now - self.t0, 1e-9)
        rate = (flops_done - self.baseline[0]) / dt
        eta = (flops_total - flops_done) / rate if rate > 0 else None
        line = (f"runs {states.get('done', 0)}/{len(rows)} done, {len(progress.running)} running, "
                f"{states.get('failed', 0)} failed, {states.get('diverged', 0)} diverged | FLOPs "
                f"{flops_done:.3g}/{flops_total:.3g} "
                f"({100 * flops_done / max(flops_total, 1e-30):.1f}%) | "
                f"{(tokens_done - self.baseline[1]) / dt:,.0f} tok/s | ETA {format_duration(eta)}")
        self.min_interval = max(0.5, 10 * (time.monotonic() - now))
        if self.live is not None:
            self.live.update(line, refresh=True)
        elif not self.quiet:
            for d, s in progress.states.items():
                if self.seen_states.get(d) != s and s in ("done", "failed", "diverged"):
                    self.console.print(f"{d.name}: {s}")
            self.seen_states = dict(progress.states)

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
