"""Number formatting shared by the commands' terminal output."""

from __future__ import annotations


def si(x: float | None) -> str:
    """1234567 -> '1.23M' (K, M, B, T; 3 significant digits); None -> '-'."""
    if x is None:
        return "-"
    for threshold, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= threshold:
            return f"{x / threshold:.3g}{suffix}"
    return f"{x:.3g}"
