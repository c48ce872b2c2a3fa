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
    if os.environ.get(COMPILE_CACHE_ENV, "1") == "0":
        return
    # The flag is an attribute jax sets at runtime, absent from its stubs.
    if not jax.config.jax_compilation_cache_dir:  # type: ignore[attr-defined]
        base = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        jax.config.update("jax_compilation_cache_dir", str(base / "jax-compile"))
    # Also under a user-set cache dir: jax's default (1 s) skips the fits' programs, which
    # compile in 0.2-1 s each and are what a fresh `scaling fit` process waits for.
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
