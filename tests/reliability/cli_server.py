"""Run many `scaling` command lines as separate processes without paying start-up for each.

`python cli_server.py` imports the CLI and the heavy libraries its commands use (JAX,
pandas, matplotlib, the analysis and sweep packages) once, then reads one JSON request per
line on stdin, {"id", "argv", "cwd", "stdout", "stderr"}, and runs each in a forked child:
the child changes to `cwd`, sends its fds 1 and 2 to the given files and runs
`scaling_cli.main.main(argv)` exactly as `python -m scaling_cli` would (an uncaught exception
prints its traceback and exits 1). Up to `--jobs` children run at once; one JSON line
{"id", "rc"} is written to stdout as each ends. The parent never initialises a JAX backend,
so forking it is safe.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback

PRELOAD = (
    "scaling_cli.main",
    "scaling.train",
    "sweeps.sweep",
    "sweeps.plan",
    "analysis.fits",
    "analysis.bootstrap",
    "analysis.report",
    "analysis.recommend",
    "matplotlib.pyplot",
)


def _child(req: dict) -> None:
    code = 1
    try:
        os.chdir(req["cwd"])
        for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        sys.stdin = open(os.devnull)  # noqa: SIM115
        sys.argv = ["scaling", *req["argv"]]
        import scaling_cli.main

        try:
            code = scaling_cli.main.main(req["argv"])
        except SystemExit as e:
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
                code = 1
            else:
                code = e.code or 0
        except BaseException:  # noqa: BLE001 - what the interpreter would print
            traceback.print_exc()
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(int(code) if isinstance(code, int) else 1)


def main() -> int:
    jobs = int(sys.argv[sys.argv.index("--jobs") + 1]) if "--jobs" in sys.argv else 2
    for name in PRELOAD:
        importlib.import_module(name)
    out = sys.stdout
    print(json.dumps({"ready": True}), file=out, flush=True)
    running: dict[int, str] = {}

    def reap(block: bool) -> None:
        while running:
            pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            if pid == 0:
                return
            rc = os.waitstatus_to_exitcode(status)
            print(json.dumps({"id": running.pop(pid), "rc": rc}), file=out, flush=True)
            if not block:
                continue
            return

    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        while len(running) >= jobs:
            reap(block=True)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(req)
        running[pid] = req["id"]
        reap(block=False)
    while running:
        reap(block=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
