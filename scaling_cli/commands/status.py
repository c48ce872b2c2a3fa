"""Table of the runs in a runs directory (or one sweep's directory) and their states.

States: pending, running, interrupted (a running record whose process is gone: the next
`scaling sweep` resumes it), done, diverged, failed (with the reason).
"""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from scaling_cli.commands._format import si
from sweeps.status import status_rows, summarize
from sweeps.tune import format_tune_progress, tune_progress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs_dir", metavar="RUNS_DIR", help="runs directory (or one sweep's)")
    parser.add_argument("--json", action="store_true", help="print a JSON object instead")


def run(args: argparse.Namespace) -> int:
    rows = status_rows(args.runs_dir)
    summary = summarize(rows)
    tune = tune_progress(args.runs_dir, rows)
    if args.json:
        print(json.dumps({"summary": summary, "runs": rows, "tune": tune}, indent=2))
        return 0
    table = Table(title=f"{args.runs_dir}: {summary['runs']} runs", title_justify="left")
    for col in ("sweep", "run", "state", "budget", "N", "tokens", "step", "eval loss", "reason"):
        table.add_column(col, overflow="fold")
    colors = {"done": "green", "running": "cyan", "failed": "red", "diverged": "magenta",
              "interrupted": "yellow"}
    for r in rows:
        state = r["state"]
        steps = f"{r['step'] or 0}/{r['n_steps']}" if r.get("n_steps") else "-"
        loss = f"{r['eval_loss']:.4f}" if r.get("eval_loss") is not None else "-"
        table.add_row(r["sweep"], r["run"], f"[{colors.get(state, 'white')}]{state}[/]",
                      f"{r['budget']:.2e}" if r.get("budget") else "-", si(r.get("n_params")),
                      si(r.get("n_tokens")), steps, loss, r.get("reason") or "")
    console = Console(width=200) if not Console().is_terminal else Console()
    console.print(table)
    states = ", ".join(f"{n} {s}" for s, n in sorted(summary["states"].items()))
    done, total = summary["flops_done"], summary["flops_total"]
    pct = f" ({100 * done / total:.1f}%)" if total else ""
    console.print(f"{states or 'no runs'}; FLOPs {done:.3g} of {total:.3g}{pct}")
    for entry in tune:
        console.print(format_tune_progress(entry), markup=False, highlight=False, soft_wrap=True)
    return 0
