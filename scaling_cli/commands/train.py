"""Train one run directory (made by `scaling plan`/`scaling sweep`); resumes from its latest
checkpoint. Exit 0 when the run finished, 1 when it diverged or failed, 2 on bad input,
143 when stopped by SIGTERM (checkpointed; run the same command again to resume)."""

from __future__ import annotations

import argparse
from pathlib import Path

from scaling.errors import EXIT_TERMINATED, RunFailed, UserError


def _steps(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated step numbers, got {text!r}") from None
    if any(s < 1 for s in steps):
        raise argparse.ArgumentTypeError(f"expected positive step numbers, got {text!r}")
    return steps


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory holding config.json")
    parser.add_argument("--peak-flops", type=float, default=None, metavar="F",
                        help="peak FLOP/s of one device for MFU (default: known devices only)")
    parser.add_argument("--cache-dir", default=None, metavar="D",
                        help="token cache directory (default $SCALING_CACHE or ~/.cache/scaling-suite)")
    parser.add_argument("--max-steps", type=int, default=None, metavar="S",
                        help="stop (checkpointed, resumable) after global step S")
    parser.add_argument("--keep-steps", type=_steps, default=(), metavar="S1,S2",
                        help="also checkpoint at these steps and keep them (WSD branch points)")
    parser.add_argument("--fsdp", type=int, default=1, metavar="K",
                        help="shard parameters over K devices (the rest is data parallel)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def run(args) -> int:
    from scaling.train import train_run

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.json").is_file():
        raise UserError(f"{run_dir}: not a run directory (no config.json)")
    if args.peak_flops is not None and not args.peak_flops > 0:
        raise UserError(f"--peak-flops: expected a positive number, got {args.peak_flops}")
    if args.max_steps is not None and args.max_steps < 1:
        raise UserError(f"--max-steps: expected a positive integer, got {args.max_steps}")
    result = train_run(run_dir, peak_flops=args.peak_flops, max_steps=args.max_steps,
                       progress=not args.quiet, cache_dir=args.cache_dir,
                       keep_steps=args.keep_steps, fsdp=args.fsdp)
    state = result.get("state", "done")
    if state == "diverged":
        raise RunFailed(f"{run_dir.name} diverged: {result['reason']}")
    if state == "stopped":
        return EXIT_TERMINATED if "SIGTERM" in result["reason"] else 0
    return 0
