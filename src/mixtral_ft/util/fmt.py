"""How mixft prints a share: one formatter, so every table and summary line says it the same way."""

from __future__ import annotations


def pct(share: float | None, digits: int = 1, *, signed: bool = False, unit: str = "%", missing: str = "n/a") -> str:
    """``0.045`` -> ``"4.5%"``; ``None`` (undefined, e.g. 0/0) -> ``"n/a"``, never ``"0.0%"``.

    ``signed=True`` writes the sign of a difference (``"+1.2"``); ``unit`` follows the number
    (``" pts"`` for a difference of two shares).
    """
    if share is None:
        return missing
    return f"{100 * share:{'+' if signed else ''}.{digits}f}{unit}"
