"""The `scaling` command: parses arguments and calls library functions, nothing more.

Each subcommand lives in `scaling_cli/commands/<name>.py` with `add_arguments(parser)` and
`run(args) -> int`, and imports what it uses at module level. This is the one lazy place:
only the chosen command's module is imported, so `scaling --help` stays instant and
`scaling sweep` never loads the plotting stack that `fit` and `report` need.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from scaling.errors import RunFailed, UserError

# name -> one-line help; the module scaling_cli.commands.<name> implements it.
COMMANDS = {
    "plan": "print the IsoFLOP grid for a sweep spec or --budget values; runs nothing",
    "sweep": "plan and run every run of a sweep spec (resumable)",
    "train": "train one run directory; resumes from its latest checkpoint",
    "status": "table of the runs in a runs directory and their states",
    "fit": "fit Chinchilla's approaches 1, 2, 3 to a runs directory or a CSV",
    "recommend": "optimal parameters, tokens, shape and predicted loss for a budget",
    "predict": "predicted loss at (N, D) from a saved fit, with confidence and prediction intervals",
    "compare": "effective compute multiplier between ladders, with intervals and crossover",
    "check-forecast": "score a saved forecast (recommend --json) against a finished run",
    "report": "figures and a Markdown/HTML report for a runs directory or CSV",
    "demo": "run the demo study end to end on the embedded stdlib corpus",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, as for every bad input
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """Every command's sub-parser; the arguments only of the command `argv` names."""
    parser = _Parser(prog="scaling", description="Compute-optimal scaling-law experiments.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name != chosen:
            continue
        module = importlib.import_module(f"scaling_cli.commands.{name.replace('-', '_')}")
        p.description = module.__doc__
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks on errors")
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if argv is None and args.command == "train":  # a process of its own: tune it
        from scaling.host_env import reexec_tuned

        reexec_tuned()
    try:
        return int(args._module.run(args) or 0)
    except UserError as e:
        if args.debug:
            raise
        print(f"scaling {args.command}: error: {e}", file=sys.stderr)
        return 2
    except RunFailed as e:
        if args.debug:
            raise
        print(f"scaling {args.command}: failed: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"scaling {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the environment failed (full disk, permissions): one line, exit 1
        if args.debug:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"scaling {args.command}: failed: {where}{e.strerror or e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
