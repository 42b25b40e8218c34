"""Path patterns: which files a pattern covers, and whether two can meet.

Tasks declare the repository paths they will touch as glob patterns (checked
by :func:`~infrafabric.coordinator.models.check_path_glob`); a claim takes a
path lease on them, and two claims whose patterns could touch a common file
must never be held at once. This module decides that, exactly.

**Paths.** A path is a relative POSIX path, ``src/api/app.py``: one or more
non-empty segments joined by ``/``. A segment is any string without ``/``
or NUL; ``.`` and ``..`` are ordinary names here (paths are compared as
given, not normalised), and matching is case-sensitive.

**Patterns.** A pattern is split on ``/`` into segments *before* anything
else, so a ``/`` never sits inside a ``[...]`` class. Within a segment, as
in :func:`fnmatch.fnmatchcase`:

* ``*`` matches any run of characters, possibly empty (a leading ``.``
  included: there are no hidden files here);
* ``?`` matches one character;
* ``[...]`` matches one character of a class: ranges ``a-z``, a ``-`` first
  or last is literal, a ``]`` first is literal, a reversed range (``z-a``)
  is empty; a leading ``!`` *or* ``^`` negates it (``^`` is literal to
  :mod:`fnmatch`; shells and ``.gitignore`` negate with both). A ``[``
  with no closing ``]`` in its segment is literal;
* every other character, backslash included, is literal.

A segment that is exactly ``**`` matches zero or more whole segments;
``**`` inside a longer segment (``a**b``) is just ``*``.

**Covering.** A pattern *covers* a path if it matches the path or any
ancestor directory of it: ``src/api``, ``src/api/**`` and ``src/*`` all
cover ``src/api/app.py``, and ``docs/*.md`` covers ``docs/a.md`` and
everything beneath a directory named ``docs/x.md``. That is what
``.gitignore`` and ``CODEOWNERS`` users expect: leasing a directory leases
what is in it. Equivalently, a pattern ``P`` covers exactly the paths that
``P/**`` matches.

**Overlap.** Two patterns *overlap* if some path is covered by both.
:func:`overlap` is exact, not merely cautious: it answers ``None`` only when
no such path exists, and otherwise gives a path (a *witness*) that
:func:`covers` confirms for both. ``src/*.py`` and ``src/**`` overlap (both
cover ``src/a.py/b``); ``src/*.py`` and ``src/api/x.py`` do not (``api`` is
not ``*.py``).

How: each segment is compiled to tokens, one per character position (the
set of characters it allows, as code-point ranges) or a star. Two segments
meet iff a walk over pairs of positions reaches both ends, where a star
either matches nothing (its side moves on) or swallows one character of the
other side, and two character positions move on together when their sets
intersect. Whole patterns are walked the same way with ``**`` as the star
and "these two segments meet" as the step, after giving each an implicit
trailing ``**`` (that is the ancestor rule). Everything is compiled once
and cached: this runs on every claim and in the guard hooks.
"""

from __future__ import annotations

import re
from functools import lru_cache

TYPE_CHECKING = False  # not typing's: the guard hooks import this, and typing costs ~15 ms
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = ["covering", "covers", "first_overlap", "overlap"]

#: a set of characters: sorted, disjoint, non-adjacent inclusive code-point ranges
_Ranges = tuple[tuple[int, int], ...]

_MAX = 0x10FFFF
_SLASH = ord("/")
#: what a path segment may hold: anything but NUL (POSIX forbids it) and ``/``
_UNIVERSE: _Ranges = ((1, _SLASH - 1), (_SLASH + 1, _MAX))
#: where a witness character is looked for first, so witnesses read like
#: paths (``x``, ``a.md``) rather than punctuation or control characters;
#: surrogates come last because they cannot be encoded
_PREFERRED: _Ranges = (
    (ord("a"), ord("z")),
    (ord("0"), ord("9")),
    (ord("A"), ord("Z")),
    (0x21, 0x7E),
    (0xA1, 0xD7FF),
    (0xE000, _MAX),
    (0x20, 0x20),
    (1, _MAX),
)
#: the filler for a star that must produce a character (``*`` against ``*``)
_FILLER = "x"


# --- character sets -----------------------------------------------------------


def _normalize(ranges: Iterable[tuple[int, int]]) -> _Ranges:
    """Sorted, merged, and cut to what a segment may hold."""
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return _intersect(tuple(merged), _UNIVERSE)


def _intersect(a: _Ranges, b: _Ranges) -> _Ranges:
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        # drop whichever range ends first: it cannot meet anything further on
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def _complement(a: _Ranges) -> _Ranges:
    gaps: list[tuple[int, int]] = []
    start = 0
    for lo, hi in a:
        if lo > start:
            gaps.append((start, lo - 1))
        start = hi + 1
    if start <= _MAX:
        gaps.append((start, _MAX))
    return _intersect(tuple(gaps), _UNIVERSE)


def _pick(chars: _Ranges) -> str | None:
    """A character of ``chars``, the lowest of the most path-like band; None if empty."""
    for lo, hi in _PREFERRED:
        for a, b in chars:  # sorted, so the first hit is the lowest in the band
            if a <= hi and b >= lo:
                return chr(max(a, lo))
    return None


@lru_cache(maxsize=4096)
def _meet_chars(a: _Ranges, b: _Ranges) -> str | None:
    return _pick(_intersect(a, b))


# --- the walk ------------------------------------------------------------------


def _walk(
    a_star: tuple[bool, ...],
    b_star: tuple[bool, ...],
    pair: Callable[[int, int], str | None],
    solo_a: Callable[[int], str | None],
    solo_b: Callable[[int], str | None],
) -> list[str] | None:
    """The pieces of one string in both languages (empty pieces dropped), or
    None if they share none.

    ``a_star[i]`` says whether position ``i`` of side a is a star; ``pair``
    gives a piece both non-star positions accept (None if none), ``solo_a``
    / ``solo_b`` a piece one non-star position accepts, for the other side's
    star to swallow. A piece that two stars would both swallow is never
    needed: deleting it leaves a string both sides still accept. So the
    empty string is all this can find when both sides are only stars; the
    callers, whose segments and paths cannot be empty, handle that case.
    """
    n, m = len(a_star), len(b_star)
    # every step moves i + j forward by 1 or 2, so states are visited by
    # diagonal, each once, and only those reachable from the start
    parent: dict[tuple[int, int], tuple[tuple[int, int], str] | None] = {(0, 0): None}
    buckets: list[list[tuple[int, int]]] = [[] for _ in range(n + m + 1)]
    buckets[0].append((0, 0))

    def step(to: tuple[int, int], frm: tuple[int, int], piece: str) -> None:
        if to not in parent:
            parent[to] = (frm, piece)
            buckets[to[0] + to[1]].append(to)

    for d in range(n + m + 1):
        if d >= 2 and not buckets[d] and not buckets[d - 1]:
            break  # nothing can reach this diagonal or any later one
        for here in buckets[d]:
            i, j = here
            sa = i < n and a_star[i]
            sb = j < m and b_star[j]
            if sa:
                step((i + 1, j), here, "")
            if sb:
                step((i, j + 1), here, "")
            if i < n and j < m and sa != sb:
                if sa:
                    piece = solo_b(j)
                    if piece is not None:
                        step((i, j + 1), here, piece)
                else:
                    piece = solo_a(i)
                    if piece is not None:
                        step((i + 1, j), here, piece)
            elif i < n and j < m and not sa:
                piece = pair(i, j)
                if piece is not None:
                    step((i + 1, j + 1), here, piece)
    if (n, m) not in parent:
        return None
    pieces: list[str] = []
    link = parent[(n, m)]
    while link is not None:
        frm, piece = link
        if piece:
            pieces.append(piece)
        link = parent[frm]
    pieces.reverse()
    return pieces


# --- segments ------------------------------------------------------------------


class _Segment:
    """One compiled segment pattern (not ``**``)."""

    __slots__ = ("literal", "regex", "sets", "stars", "text", "witness")

    def __init__(self, text: str) -> None:
        self.text = text
        #: per position: the characters it allows, or None for a star
        self.sets: tuple[_Ranges | None, ...] = _tokenize(text)
        self.stars = tuple(s is None for s in self.sets)
        # a name as it stands: compared by equality, it is its own witness
        self.literal = not any(c in text for c in "*?[\0")
        self.regex = _regex(self.sets)
        self.witness = _segment_witness(self.sets)


def _tokenize(text: str) -> tuple[_Ranges | None, ...]:
    """Positions of a segment pattern, fnmatch's way (see the module docs)."""
    out: list[_Ranges | None] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        i += 1
        if c == "*":
            if not out or out[-1] is not None:  # a run of stars is one star
                out.append(None)
        elif c == "?":
            out.append(_UNIVERSE)
        elif c == "[":
            j = i
            if j < n and text[j] in "!^":
                j += 1
            if j < n and text[j] == "]":
                j += 1  # a ] first in the class is a member, not its end
            while j < n and text[j] != "]":
                j += 1
            if j >= n:
                out.append(_normalize([(ord(c), ord(c))]))  # unclosed: a literal [
                continue
            negate = text[i] in "!^"
            body = text[i + 1 if negate else i : j]
            ranges: list[tuple[int, int]] = []
            k = 0
            while k < len(body):
                if k + 2 < len(body) and body[k + 1] == "-":
                    lo, hi = ord(body[k]), ord(body[k + 2])
                    if lo <= hi:  # a reversed range matches nothing, as in fnmatch
                        ranges.append((lo, hi))
                    k += 3
                else:
                    ranges.append((ord(body[k]), ord(body[k])))
                    k += 1
            chars = _normalize(ranges)
            out.append(_complement(chars) if negate else chars)
            i = j + 1
        else:
            out.append(_normalize([(ord(c), ord(c))]))
    return tuple(out)


def _class_regex(chars: _Ranges) -> str:
    if not chars:
        return "(?!)"
    if len(chars) == 1 and chars[0][0] == chars[0][1]:
        return re.escape(chr(chars[0][0]))
    body = "".join(f"\\U{lo:08x}" if lo == hi else f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in chars)
    return f"[{body}]"


def _regex(sets: tuple[_Ranges | None, ...]) -> re.Pattern[str]:
    """A regex for one segment. Between stars each fixed run is found at its
    leftmost place in an atomic group (as fnmatch does): leftmost is always
    right for a fixed-length run, and it keeps ``*a*a*a*b`` from backtracking
    exponentially on a long name."""
    runs: list[list[str]] = [[]]
    for chars in sets:
        if chars is None:
            runs.append([])
        else:
            runs[-1].append(_class_regex(chars))
    if len(runs) == 1:
        body = "".join(runs[0])
    else:
        first, *middle, last = runs
        body = "".join(first) + "".join(f"(?>.*?{''.join(run)})" for run in middle)
        body += ".*" + "".join(last)
    return re.compile(body, re.DOTALL)


def _segment_witness(sets: tuple[_Ranges | None, ...]) -> str | None:
    """A shortest name the segment matches, or None if it matches none."""
    chars: list[str] = []
    for allowed in sets:
        if allowed is not None:
            c = _pick(allowed)
            if c is None:
                return None
            chars.append(c)
    name = "".join(chars)
    if not name or (name.startswith(".") and sets[0] is None):
        # only stars: a name cannot be empty; and x.py reads better than the
        # hidden .py a leading star would otherwise give
        name = _FILLER + name
    return name


@lru_cache(maxsize=8192)
def _segment(text: str) -> _Segment:
    return _Segment(text)


@lru_cache(maxsize=16384)
def _meet_segments(a: str, b: str) -> str | None:
    """A name both segment patterns match, or None if none is."""
    sa, sb = _segment(a), _segment(b)
    if sa.literal and sb.literal:
        return a if a == b else None
    if sa.literal:
        return a if sb.regex.fullmatch(a) else None
    if sb.literal:
        return b if sa.regex.fullmatch(b) else None
    if all(sa.stars) and all(sb.stars):
        return _FILLER  # both are just *: the walk would find only ""
    if not any(sa.stars) and not any(sb.stars):
        # no stars: position by position (the common case, cheaper than the walk)
        if len(sa.sets) != len(sb.sets):
            return None
        chars: list[str] = []
        for x, y in zip(sa.sets, sb.sets, strict=True):
            assert x is not None and y is not None
            c = _meet_chars(x, y)
            if c is None:
                return None
            chars.append(c)
        return "".join(chars)
    a_sets, b_sets = sa.sets, sb.sets

    def pair(i: int, j: int) -> str | None:
        x, y = a_sets[i], b_sets[j]
        assert x is not None and y is not None
        return _meet_chars(x, y)

    def solo_a(i: int) -> str | None:
        x = a_sets[i]
        assert x is not None
        return _pick(x)

    def solo_b(j: int) -> str | None:
        y = b_sets[j]
        assert y is not None
        return _pick(y)

    pieces = _walk(sa.stars, sb.stars, pair, solo_a, solo_b)
    if pieces is None:
        return None
    # one side has a character position, and every one is consumed with a
    # character, so the name is never empty
    name = "".join(pieces)
    if name.startswith(".") and sa.stars[0] and sb.stars[0]:
        name = _FILLER + name  # both leading stars take it: x.py, not .py
    return name


# --- patterns ------------------------------------------------------------------


class _Pattern:
    """One compiled pattern, with its implicit trailing ``**``."""

    __slots__ = ("head", "runs", "segments", "stars")

    def __init__(self, pattern: str) -> None:
        parts = pattern.split("/")
        if not pattern or "" in parts:
            raise ValueError(f"{pattern!r} is not a path pattern: it is empty or has an empty part")
        segments: list[str | None] = []  # None is **
        for part in [*parts, "**"]:
            if part == "**":
                if not segments or segments[-1] is not None:  # **/** is **
                    segments.append(None)
            else:
                segments.append(part)
        #: segment texts, None for ``**``; always ends with ``**``
        self.segments = tuple(segments)
        self.stars = tuple(s is None for s in segments)
        # for covers: the fixed runs of segments between the **s; the first
        # is anchored at the path's start (empty if the pattern starts with
        # **), the rest float, and the trailing ** takes whatever is left
        runs: list[list[re.Pattern[str]]] = [[]]
        for s in segments[:-1]:
            if s is None:
                runs.append([])
            else:
                runs[-1].append(_segment(s).regex)
        self.head = tuple(runs[0])
        self.runs = tuple(tuple(run) for run in runs[1:])


@lru_cache(maxsize=4096)
def _pattern(pattern: str) -> _Pattern:
    return _Pattern(pattern)


def _split_path(path: str) -> list[str]:
    parts = path.split("/")
    if not path or "" in parts or "\0" in path:
        raise ValueError(f"{path!r} is not a relative path: it is empty, has an empty part or a NUL")
    return parts


def _covers(compiled: _Pattern, parts: list[str]) -> bool:
    head = compiled.head
    if len(parts) < len(head):
        return False
    for regex, part in zip(head, parts, strict=False):
        if not regex.fullmatch(part):
            return False
    at = len(head)
    for run in compiled.runs:
        # each run where it first fits: a run has a fixed length, so the
        # leftmost place leaves the most room for the runs after it
        size = len(run)
        while at + size <= len(parts):
            if all(regex.fullmatch(parts[at + k]) for k, regex in enumerate(run)):
                break
            at += 1
        else:
            return False
        at += size
    return True


def covers(pattern: str, path: str) -> bool:
    """Whether ``pattern`` matches ``path`` or one of its ancestor directories
    (see the module docs). ``ValueError`` if the pattern or the path is empty
    or has an empty part."""
    return _covers(_pattern(pattern), _split_path(path))


def covering(patterns: Iterable[str], path: str) -> str | None:
    """The first of ``patterns`` that covers ``path``, else None."""
    parts = _split_path(path)
    for pattern in patterns:
        if _covers(_pattern(pattern), parts):
            return pattern
    return None


@lru_cache(maxsize=65536)
def overlap(a: str, b: str) -> str | None:
    """A witness path covered by both patterns, or None if no path is.

    Exact: None means no path at all is covered by both (see the module
    docs). ``ValueError`` if either pattern is empty or has an empty part."""
    pa, pb = _pattern(a), _pattern(b)
    if all(pa.stars) and all(pb.stars):
        return _FILLER  # ** and **: any path, but the walk finds only the empty one
    a_segs, b_segs = pa.segments, pb.segments

    def pair(i: int, j: int) -> str | None:
        x, y = a_segs[i], b_segs[j]
        assert x is not None and y is not None
        return _meet_segments(x, y)

    def solo_a(i: int) -> str | None:
        x = a_segs[i]
        assert x is not None
        return _segment(x).witness

    def solo_b(j: int) -> str | None:
        y = b_segs[j]
        assert y is not None
        return _segment(y).witness

    pieces = _walk(pa.stars, pb.stars, pair, solo_a, solo_b)
    # one side has a segment that is not **, and each is consumed with a
    # name, so a found path is never empty
    return None if pieces is None else "/".join(pieces)


def first_overlap(mine: Iterable[str], theirs: Iterable[str]) -> tuple[str, str, str] | None:
    """``(my pattern, their pattern, witness path)`` of the first overlapping
    pair (in ``mine``'s order, then ``theirs``'), else None."""
    their_list = list(theirs)  # walked once per pattern of mine: a generator would run dry
    for a in mine:
        for b in their_list:
            witness = overlap(a, b)
            if witness is not None:
                return a, b, witness
    return None
