"""Process environment for fast CPU training, measured in bench/train_throughput.py.

glibc tunable `glibc.malloc.hugetlb=1`: XLA:CPU mallocs each dispatch's scratch buffer
(484 MB for a 1M-parameter model at batch 16 x 256) and frees it afterwards; at that size
glibc maps fresh pages from the kernel and unmaps them on free, so every dispatch took 118K
page faults (0.2 s of kernel time at 1M). With the tunable glibc advises transparent huge
pages for those maps: ~650 faults, 1.4-1.6x tokens/s at 1M and 10M parameters. glibc reads
GLIBC_TUNABLES only at process start, so `scaling train` re-executes itself once with it
(same pid), and the sweep worker starts its trainers with it.

Not used, on purpose: `--xla_cpu_experimental_ynn_fusion_type` with "eltwise" or "dot"
gave another +10% but made XLA segfault (NULL write in a YNNPACK kernel) on the backward
pass of causal attention at sequence length 1024 and 2048 in jaxlib 0.10.2.

What the user set is never overridden; SCALING_CPU_TUNING=0 turns it off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

HUGEPAGE_TUNABLE = "glibc.malloc.hugetlb"
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def hugepages_help() -> bool:
    """glibc >= 2.35 (the tunable's first release) and THP in "madvise" mode (with
    "always" every large map gets huge pages already; with "never" none can)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        name, version = (os.confstr("CS_GNU_LIBC_VERSION") or "").split()
        major, minor = (int(x) for x in version.split(".")[:2])
        thp = THP_SETTING.read_text()
    except (ValueError, OSError, AttributeError):  # musl, no sysfs, unparsable
        return False
    return name == "glibc" and (major, minor) >= (2, 35) and "[madvise]" in thp


def tuned_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """A copy of `environ` with the malloc tunable added where it applies."""
    env = dict(environ)
    if env.get("SCALING_CPU_TUNING", "1") == "0":
        return env
    tunables = env.get("GLIBC_TUNABLES", "")
    if HUGEPAGE_TUNABLE not in tunables and hugepages_help():
        env["GLIBC_TUNABLES"] = ":".join(filter(None, [tunables, f"{HUGEPAGE_TUNABLE}=1"]))
    return env


def reexec_tuned() -> None:
    """Re-execute this process's command line (same pid) with `tuned_environ` when it adds
    anything, so glibc sees the tunable at start-up; call it before any heavy work."""
    env = tuned_environ(os.environ)
    if env == dict(os.environ):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError:  # cannot re-execute: train untuned rather than not at all
        pass
