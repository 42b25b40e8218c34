"""The key grammar shared by every backend.

A key (and a pub/sub subject) is a ``/``-separated path of one or more non-empty
segments. A segment is made of ASCII letters, digits and ``. _ - : @ + = ~``.
Examples: ``tasks/P0.1.1``, ``swarms/session-7/profile``, ``caps/domain:skill``.

Validation happens in the :class:`~infrafabric.bus.EventBus` base class, so a
bad key is rejected identically by every backend, before any network I/O.

Prefixes (for ``list`` and ``watch``) are plain string prefixes of keys: the
empty prefix matches every key, ``tasks/`` every key below ``tasks``, and
``tasks/P0.`` every task whose id starts with ``P0.``.
"""

from __future__ import annotations

import functools
import re

from infrafabric.errors import BadKeyError

MAX_KEY_LENGTH = 1024

_SEGMENT_CHARS = r"A-Za-z0-9._\-:@+=~"
_KEY_RE = re.compile(rf"[{_SEGMENT_CHARS}]+(?:/[{_SEGMENT_CHARS}]+)*")
_PREFIX_RE = re.compile(rf"(?:[{_SEGMENT_CHARS}]+/)*[{_SEGMENT_CHARS}]*")
_NATS_SAFE = re.compile(r"[A-Za-z0-9_\-]")


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def validate_key(key: str, *, what: str = "key") -> str:
    """Return ``key`` if it follows the grammar, else raise :class:`BadKeyError`."""
    if not isinstance(key, str):
        raise BadKeyError(f"{what} must be a str, got {type(key).__name__}")
    if not key:
        raise BadKeyError(f"{what} must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise BadKeyError(f"{what} {_describe(key)} is longer than {MAX_KEY_LENGTH} characters")
    if _KEY_RE.fullmatch(key) is None:
        raise BadKeyError(
            f"{what} {_describe(key)} is not valid",
            hint=(
                "use '/'-separated segments of letters, digits and . _ - : @ + = ~ "
                "with no empty segment (no leading, trailing or doubled '/')"
            ),
        )
    return key


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it can prefix a valid key, else raise :class:`BadKeyError`."""
    if not isinstance(prefix, str):
        raise BadKeyError(f"prefix must be a str, got {type(prefix).__name__}")
    if len(prefix) > MAX_KEY_LENGTH or _PREFIX_RE.fullmatch(prefix) is None:
        raise BadKeyError(
            f"prefix {_describe(prefix)} is not valid",
            hint="a prefix is the start of a key: '/'-separated segments, may end in '/'",
        )
    return prefix


_NATS_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9_\-]+")


def encode_segment(segment: str) -> str:
    """Encode one segment into NATS-token-safe characters (``=XX`` escapes)."""
    if _NATS_SAFE_SEGMENT.fullmatch(segment):
        return segment
    return "".join(ch if _NATS_SAFE.match(ch) else f"={ord(ch):02X}" for ch in segment)


def decode_segment(token: str) -> str:
    """Inverse of :func:`encode_segment`."""
    if "=" not in token:
        return token
    out: list[str] = []
    i = 0
    while i < len(token):
        if token[i] == "=":
            out.append(chr(int(token[i + 1 : i + 3], 16)))
            i += 3
        else:
            out.append(token[i])
            i += 1
    return "".join(out)


@functools.lru_cache(maxsize=65536)
def to_tokens(key: str) -> str:
    """Map a key onto dot-separated NATS tokens, one per segment, injectively."""
    return ".".join(encode_segment(s) for s in key.split("/"))


def from_tokens(tokens: str) -> str:
    """Inverse of :func:`to_tokens`."""
    return "/".join(decode_segment(t) for t in tokens.split("."))


def prefix_filter(prefix: str) -> str:
    """The NATS subject filter (relative, dot-separated) that covers every key with
    ``prefix``: the complete segments of the prefix followed by ``>``.

    A prefix that ends inside a segment covers more than it should; callers
    filter the decoded keys with ``str.startswith`` afterwards.
    """
    complete, _, _partial = prefix.rpartition("/")
    if not complete:
        return ">"
    return to_tokens(complete) + ".>"
