"""Errors the CLI maps to exit codes (docs/architecture.md: 2 bad input, 1 a run or fit failed)."""

import math
from typing import Any

EXIT_TERMINATED = 143  # 128 + SIGTERM: stopped by SIGTERM, checkpointed, resumable


class UserError(ValueError):
    """Bad input. The message is one line naming the field or file and what was expected."""


class RunFailed(RuntimeError):
    """A run, sweep or fit did not succeed although its input was valid."""


def positive_number(value: Any, where: str, unit: str = "") -> float:
    """`value` as a finite float > 0, else a one-line UserError naming `where` (and `unit`,
    e.g. " of FLOPs", in what was expected)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: expected a positive number{unit}, got {value!r}") from None
    if not math.isfinite(x) or x <= 0:
        raise UserError(f"{where}: expected a positive finite number{unit}, got {value!r}")
    return x
