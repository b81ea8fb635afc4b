"""The "did you mean ...?" hint every registry and config error message uses."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(key: str, options: Iterable[str], cutoff: float = 0.6) -> str:
    """``"; did you mean 'x'?"`` for the option closest to ``key``, or ``""`` when none is close."""
    close = difflib.get_close_matches(key, list(options), n=1, cutoff=cutoff)
    return f"; did you mean {close[0]!r}?" if close else ""
