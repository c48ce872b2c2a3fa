"""The persistent XLA compilation cache, for the trainer and the fits.

With it a sweep compiles each model shape once, not once per run, and a fresh `scaling fit`
process skips most of its seconds of JIT compilation. It lives in `jax-compile/` under the
data cache (`cache_dir`, else $SCALING_CACHE or ~/.cache/scaling-suite). A cache the user
configured (JAX_COMPILATION_CACHE_DIR) wins; SCALING_COMPILE_CACHE=0 turns it off.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

from scaling.data import default_cache_dir

COMPILE_CACHE_ENV = "SCALING_COMPILE_CACHE"


def enable_compile_cache(cache_dir: str | os.PathLike | None = None) -> None:
    if os.environ.get(COMPILE_CACHE_ENV, "1") == "0" or jax.config.jax_compilation_cache_dir:
        return
    base = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    jax.config.update("jax_compilation_cache_dir", str(base / "jax-compile"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
