"""Bounds on every value that enters the bus, and the parsers that apply them.

A value written once is read by every process of the fleet for as long as the
record lives, so an absurd one (a debit of 4,400 digits, an estimate of
``1e999999999`` hours, a 5 MB title with terminal escapes) must be refused
where it enters, with a message naming it, never stored to break later
readers. The records' models use the annotated types here; the record layer
(:mod:`infrafabric.bus.records`) checks on every write that what it stores
fits :data:`MAX_RECORD_BYTES` and reads back as the same record.

Money is integer micro-dollars (1 USD = 1,000,000) within
:data:`MAX_MICROS` for one amount and :data:`MAX_TOTAL_MICROS` for a running
total; dollars typed by people are read by :func:`parse_dollars`.
"""

from __future__ import annotations

import os
import re
import stat
from decimal import Decimal, InvalidOperation
from typing import IO, Annotated

from pydantic import AfterValidator, Field

from infrafabric.errors import ConfigurationError

__all__ = [
    "MAX_HOURS",
    "MAX_MICROS",
    "MAX_RECORD_BYTES",
    "MAX_TEXT",
    "MAX_TOTAL_MICROS",
    "Hours",
    "Line",
    "Micros",
    "Priority",
    "Text",
    "TotalMicros",
    "brief",
    "check_line",
    "check_text",
    "parse_decimal",
    "parse_dollars",
    "parse_failure",
    "read_limited",
    "read_limited_stream",
]

#: one amount of money: $1,000,000,000 in micro-dollars
MAX_MICROS = 10**15
#: a running total (spent, reserved): a thousand times that, well inside 64 bits
MAX_TOTAL_MICROS = 10**18
#: an estimate: a hundred years of work
MAX_HOURS = Decimal(876_000)
#: the longest free text (a description, a result note)
MAX_TEXT = 64 * 1024
#: the largest record the record layer writes (NATS refuses 1 MB messages by default)
MAX_RECORD_BYTES = 256 * 1024

# every C0 and C1 control character and DEL, except tab and newline (free text may have lines)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_LINE_BREAKS = re.compile(r"[\n\r\t\u2028\u2029\x85]")
_DOLLARS = re.compile(r"(?P<sign>-?)\$?(?P<int>[0-9]{1,3}(?:,[0-9]{3})+|[0-9]*)(?:\.(?P<frac>[0-9]+))?")


def brief(value: object, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters, for naming a bad value in
    an error. Never raises: an int too long for ``str()`` (Python refuses
    past 4,300 digits) is described by its size instead."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 13_000:
        return f"<an integer of about {int(value.bit_length() * 0.30103)} digits>"
    try:
        shown = str(value) if isinstance(value, Decimal) else repr(value)
    except (ValueError, RecursionError):
        return f"<an unprintable {type(value).__name__}>"
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def parse_failure(exc: BaseException) -> str:
    """Why a JSON or YAML parser gave up with a bare exception rather than its
    own error type: ``RecursionError`` for a document nested too deeply, a
    ``ValueError`` for an integer past Python's 4,300-digit limit."""
    if isinstance(exc, RecursionError):
        return "it is nested too deeply"
    if "digits" in str(exc):
        return "it holds a number with more than 4,300 digits"
    return str(exc)[:200]


def check_text(value: str) -> str:
    """Free text: no control characters (tab and newline allowed), at most :data:`MAX_TEXT`."""
    if len(value) > MAX_TEXT:
        raise ValueError(f"is {len(value):,} characters long, more than {MAX_TEXT:,}")
    bad = _CONTROL.search(value)
    if bad is not None:
        raise ValueError(f"holds the control character {bad.group()!r} at {bad.start()}")
    return value


def check_line(value: str) -> str:
    """One line of text: free text without line breaks or tabs, not blank."""
    check_text(value)
    bad = _LINE_BREAKS.search(value)
    if bad is not None:
        raise ValueError(f"holds a line break or tab ({bad.group()!r}) at {bad.start()}: it must be one line")
    if not value.strip():
        raise ValueError("is blank")
    return value


#: free text stored on the bus
Text = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(check_text)]
#: a one-line label (a title, a reason)
Line = Annotated[str, Field(max_length=500), AfterValidator(check_line)]
#: one amount of money in micro-dollars, >= 0
Micros = Annotated[int, Field(ge=0, le=MAX_MICROS, strict=True)]
#: a running total of money in micro-dollars, >= 0
TotalMicros = Annotated[int, Field(ge=0, le=MAX_TOTAL_MICROS, strict=True)]
def _to_micro_hours(value: Decimal) -> Decimal:
    """More than 6 decimals (a third of an hour) is rounded to 6: exact enough, and bounded."""
    exponent = value.as_tuple().exponent
    return value.quantize(Decimal("0.000001")) if isinstance(exponent, int) and exponent < -6 else value


#: hours of work, finite, >= 0, at most a century, kept to 6 decimals
Hours = Annotated[Decimal, Field(ge=0, le=MAX_HOURS, allow_inf_nan=False), AfterValidator(_to_micro_hours)]
#: a hand-out priority (higher first)
Priority = Annotated[int, Field(ge=-10**9, le=10**9, strict=True)]


def parse_dollars(text: str | int | Decimal, *, what: str = "amount", negative: bool = True) -> int:
    """Dollars as people type them (``2.50``, ``$2.50``, ``-$1``, ``1,250.75``,
    ``.5``) to integer micro-dollars, exactly: ASCII digits, at most 6
    decimals, within :data:`MAX_MICROS`; :class:`ConfigurationError` naming
    ``what`` otherwise (``nan``, ``inf``, ``1e308``, ``$$5``, non-ASCII digits,
    4,400 digits...)."""
    if isinstance(text, bool):
        raise ConfigurationError(f"{what} {text!r} is not a number of dollars")
    if isinstance(text, Decimal):
        if not text.is_finite():
            raise ConfigurationError(f"{what} {text!r} is not a finite amount of dollars")
        text = format(text, "f")
    if isinstance(text, int) and text.bit_length() > 64:
        raise ConfigurationError(f"{what} {brief(text)} is more than the ${MAX_MICROS // 1_000_000:,} "
                                 "one amount may be")
    raw = str(text)
    shown = raw if len(raw) <= 40 else raw[:37] + "..."
    match = _DOLLARS.fullmatch(raw.strip()) if len(raw) <= 10_000 else None
    if match is None or not (match.group("int") or match.group("frac")):
        raise ConfigurationError(
            f"{what} {shown!r} is not a number of dollars",
            hint="write dollars with ASCII digits and at most 6 decimals, e.g. 2.50 or $2.50")
    digits, frac = (match.group("int") or "0").replace(",", ""), match.group("frac") or ""
    if len(frac) > 6:
        raise ConfigurationError(f"{what} {shown!r} has more than 6 decimals "
                                 "(a micro-dollar is the smallest unit)")
    if len(digits.lstrip("0")) > 10:
        raise ConfigurationError(f"{what} {shown!r} is more than the ${MAX_MICROS // 1_000_000:,} "
                                 "one amount may be")
    micros = int(digits) * 1_000_000 + int(frac.ljust(6, "0"))
    if match.group("sign"):
        if not negative:
            raise ConfigurationError(f"{what} {shown!r} must not be negative")
        micros = -micros
    if abs(micros) > MAX_MICROS:
        raise ConfigurationError(f"{what} {shown!r} is more than the ${MAX_MICROS // 1_000_000:,} "
                                 "one amount may be")
    return micros


def read_limited(path: str | os.PathLike[str], *, what: str, limit: int) -> bytes:
    """The bytes of the regular file at ``path``, at most ``limit`` of them;
    :class:`ConfigurationError` naming ``what`` and the path for a directory,
    a FIFO or device (which could block or never end) or a file that is too
    large. :class:`OSError` (missing, unreadable) is left to the caller, whose
    message knows what the file was for."""
    shown = os.fspath(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            mode = info.st_mode
            kind = ("a directory" if stat.S_ISDIR(mode) else "a named pipe" if stat.S_ISFIFO(mode)
                    else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                    else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
            raise ConfigurationError(f"{what} {shown} is {kind}, not a regular file")
        if info.st_size > limit:
            raise ConfigurationError(f"{what} {shown} is {info.st_size:,} bytes, "
                                     f"more than the {limit:,} allowed")
        data = fh.read(limit + 1)
    if len(data) > limit:  # it grew while being read
        raise ConfigurationError(f"{what} {shown} is more than the {limit:,} bytes allowed")
    return data


def read_limited_stream(stream: IO[bytes], *, what: str, limit: int) -> bytes:
    """At most ``limit`` bytes of ``stream`` (stdin, say); :class:`ConfigurationError` if it holds more."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise ConfigurationError(f"{what} is more than the {limit:,} bytes allowed")
    return data


def parse_decimal(text: str, *, what: str, maximum: Decimal) -> Decimal:
    """A plain, finite, non-negative decimal (``1.5``) within ``maximum``;
    ValueError naming ``what`` otherwise (no exponents, no NaN)."""
    stripped = text.strip()
    if not re.fullmatch(r"[0-9]{1,16}(\.[0-9]{1,6})?|\.[0-9]{1,6}", stripped):
        raise ValueError(f"cannot read {what} {stripped[:40]!r}")
    try:
        value = Decimal(stripped)
    except InvalidOperation:  # pragma: no cover - the pattern admits only plain decimals
        raise ValueError(f"cannot read {what} {stripped[:40]!r}") from None
    if value > maximum:
        raise ValueError(f"{what} {stripped[:40]!r} is more than {maximum}")
    return value
