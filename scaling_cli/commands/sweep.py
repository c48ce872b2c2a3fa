"""Plan and run every run of a sweep spec; resumable: run the same command again to continue.

Finished runs are skipped, interrupted ones resume from their checkpoints, and runs that
diverge or fail are reported with their reason without stopping the others. Exit 0 when
every run is done or diverged, 1 when some failed, 2 on bad input (including a runs dir
that belongs to another spec, unless --force).
"""

from __future__ import annotations

import argparse
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="sweep spec (TOML)")
    parser.add_argument("--runs-dir", default="runs", metavar="DIR",
                        help="where run directories go (default: runs)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="parallel runs for the local launcher (default: the spec's)")
    parser.add_argument("--launcher", choices=("local", "slurm"), default=None,
                        help="where to run (default: the spec's launcher.kind)")
    parser.add_argument("--force", action="store_true",
                        help="reuse a runs dir that belongs to another spec")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


class _View:
    """Live progress: runs done/running/failed of total, FLOPs done of total, tokens/s, ETA."""

    def __init__(self, quiet: bool) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.live = None
        self.quiet = quiet
        self.t0 = time.monotonic()
        self.last = 0.0
        self.min_interval = 0.5
        self.dirs = []
        self.seen_states: dict = {}

    def on_plan(self, plan, dirs) -> None:
        self.dirs = list(dirs)
        if not self.quiet:
            from sweeps.plan import wsd_savings

            saved = wsd_savings(plan)
            extra = f", {saved:.3g} saved by shared WSD stable phases" if saved else ""
            self.console.print(f"sweep {plan.spec.name}: {len(plan.runs)} runs, "
                               f"{plan.total_flops:.3g} FLOPs{extra}")
            for f in plan.findings:
                self.console.print(f"[yellow]{f.level}[/]: {f.message}")
        if self.console.is_terminal and not self.quiet and self.live is None:
            from rich.live import Live

            self.live = Live(console=self.console, auto_refresh=False, transient=False)
            self.live.start()
        self.flops0 = None

    def update(self, progress) -> None:
        now = time.monotonic()
        # a refresh reads every run's records (O(runs)); waiting 10x its cost between
        # refreshes keeps the view's share of a long sweep bounded, so it stays linear
        if now - self.last < self.min_interval and any(s == "running" for s in progress.states.values()):
            return
        self.last = now
        from sweeps.status import run_row

        rows = [run_row(d) for d in self.dirs]
        n = len(rows)
        count = lambda s: sum(1 for r in rows if r["state"] == s)  # noqa: E731
        running = len(progress.running)
        flops_total = sum(r.get("flops") or 0 for r in rows)
        from sweeps.status import _flops_done

        flops_done = sum(_flops_done(r) for r in rows)
        if self.flops0 is None:
            self.flops0, self.tokens0 = flops_done, self._tokens(rows)
        dt = max(now - self.t0, 1e-9)
        rate = (flops_done - self.flops0) / dt
        tok_rate = (self._tokens(rows) - self.tokens0) / dt
        eta = (flops_total - flops_done) / rate if rate > 0 else None
        line = (f"runs {count('done')}/{n} done, {running} running, {count('failed')} failed, "
                f"{count('diverged')} diverged | FLOPs {flops_done:.3g}/{flops_total:.3g} "
                f"({100 * flops_done / max(flops_total, 1e-30):.1f}%) | {tok_rate:,.0f} tok/s"
                f" | ETA {_fmt(eta)}")
        self.min_interval = max(0.5, 10 * (time.monotonic() - now))
        if self.live is not None:
            self.live.update(line, refresh=True)
        elif not self.quiet:
            for d, s in progress.states.items():
                if self.seen_states.get(d) != s and s in ("done", "failed", "diverged"):
                    self.console.print(f"{d.name}: {s}")
            self.seen_states = dict(progress.states)

    @staticmethod
    def _tokens(rows) -> float:
        total = 0.0
        for r in rows:
            if r.get("n_tokens") and r.get("n_steps") and r.get("step"):
                total += r["n_tokens"] * min(1.0, r["step"] / r["n_steps"])
        return total

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def _fmt(seconds) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def run(args: argparse.Namespace) -> int:
    import json

    from scaling.errors import RunFailed, UserError
    from sweeps.spec import load_spec
    from sweeps.status import run_row
    from sweeps.sweep import run_sweep

    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers: expected an integer >= 1, got {args.workers}")
    spec = load_spec(args.spec)
    view = _View(quiet=args.json)
    t0 = time.monotonic()
    try:
        outcome = run_sweep(spec, args.runs_dir, workers=args.workers, launcher=args.launcher,
                            force=args.force, on_update=view.update, on_plan=view.on_plan)
    finally:
        view.stop()
    rows = [run_row(d) for d in outcome.run_dirs]
    bad = [r for r in rows if r["state"] in ("failed", "diverged")]
    summary = {"sweep": spec.name, "runs_dir": args.runs_dir, "runs": len(rows),
               "done": sum(r["state"] == "done" for r in rows),
               "diverged": sum(r["state"] == "diverged" for r in rows),
               "failed": sum(r["state"] == "failed" for r in rows),
               "flops": outcome.plan.total_flops, "wall_time_s": time.monotonic() - t0,
               "problems": [{"run": r["run"], "state": r["state"], "reason": r["reason"]}
                            for r in bad]}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"sweep {spec.name}: {summary['done']}/{summary['runs']} done, "
              f"{summary['diverged']} diverged, {summary['failed']} failed "
              f"in {_fmt(summary['wall_time_s'])}; runs in {args.runs_dir}/{spec.name}")
        for p in summary["problems"]:
            print(f"  {p['state']}: {p['run']}: {p['reason']}")
    unfinished = [r for r in rows if r["state"] not in ("done", "diverged", "failed")]
    if summary["failed"] or unfinished:
        raise RunFailed(f"{summary['failed']} run(s) failed, {len(unfinished)} unfinished; "
                        f"see `scaling status {args.runs_dir}`")
    return 0
