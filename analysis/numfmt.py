"""Numbers for tables a person reads: the report's and the CLI's (no plotting stack, so
`scaling fit` and `scaling recommend` can format without importing matplotlib)."""

from __future__ import annotations

import math

import numpy as np


def fmt_num(x, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int | np.integer):
        return f"{int(x):,}"
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(x):
        return "-"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.{digits}g}"
    return f"{x:.{digits + 1}g}" if abs(x) < 10 else f"{x:,.{max(digits - 2, 1)}f}"
