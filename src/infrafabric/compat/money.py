"""Dollars at the seeds' boundary: converted once, exactly, to integer micro-dollars.

The seeds' sample calls pass dollars as binary floats (``max_cost=5.0``,
``track_cost(swarm, op, 0.35)``). Here a float is converted once, from its
shortest decimal form (``Decimal(repr(x))``: ``0.35`` -> ``Decimal("0.35")``
-> 350,000 micro-dollars, never ``0.34999999999999997...``), and never used in
arithmetic. ``Decimal``, ``str`` and ``int`` dollars are accepted too. Then the
rule of :func:`infrafabric.bus.bounds.parse_dollars` applies: at most 6
decimals (a micro-dollar is the smallest unit; more is refused, never rounded),
at most $1,000,000,000. NaN, infinities and negative amounts are refused. Every
refusal is a :class:`~infrafabric.errors.ConfigurationError` whose message
names the argument and says why.
"""

from __future__ import annotations

import math
from decimal import Decimal

from infrafabric.bus.bounds import parse_dollars
from infrafabric.errors import ConfigurationError

__all__ = ["Dollars", "to_decimal", "to_micros"]

#: what the compatibility surface accepts as an amount of dollars
Dollars = float | Decimal | str | int

_FLOAT_HINT = ("a binary float carries its shortest decimal form here (repr); pass a Decimal or a "
               "string such as '0.30' for an exact amount")


def to_micros(value: object, *, what: str) -> int:
    """``value`` dollars as integer micro-dollars, exactly (see the module docs);
    :class:`ConfigurationError` naming ``what`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, float | Decimal | str | int):
        raise ConfigurationError(f"{what} must be an amount of dollars (float, Decimal, str or int), "
                                 f"got {type(value).__name__} {value!r}"[:200])
    hint = None
    amount: Decimal | str | int
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigurationError(f"{what} must be a finite amount of dollars, got {value!r}")
        amount, hint = Decimal(repr(value)), _FLOAT_HINT
    else:
        amount = value
    if isinstance(amount, Decimal):
        if not amount.is_finite():
            raise ConfigurationError(f"{what} must be a finite amount of dollars, got {value!r}")
        if amount < 0:
            raise ConfigurationError(f"{what} must not be negative, got {value!r}")
        amount = abs(amount)  # -0.0 is zero
    elif isinstance(amount, int) and amount < 0:
        raise ConfigurationError(f"{what} must not be negative, got {value!r}")
    try:
        return parse_dollars(amount, what=what, negative=False)
    except ConfigurationError as exc:
        if hint is None:
            raise
        raise ConfigurationError(exc.message, hint=hint) from None


def to_decimal(micros: int) -> Decimal:
    """Integer micro-dollars as exact ``Decimal`` dollars (what the seeds' reports return)."""
    return Decimal(micros) / 1_000_000
