"""Path patterns: covering (a pattern covers a path or its ancestors) and the
exact overlap test path leases rely on, against examples, fnmatch and a brute
force over small paths."""

from __future__ import annotations

import fnmatch
import itertools
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infrafabric.coordinator.paths import covering, covers, first_overlap, overlap

OVERLAPS = [
    ("src/api/**", "src/api/app.py", True),
    ("src/*.py", "src/api/x.py", False),  # "api" is not *.py
    ("src/*.py", "src/**", True),  # both cover src/a.py/b
    ("docs/**", "src/**", False),
    ("[a-c]*", "b*", True),
    ("[!a]", "a", False),
    ("[^a]", "a", False),
    ("[!a]", "b", True),
    ("**", "src/api/app.py", True),
    ("**", "**", True),
    ("a/**/b", "a/b", True),
    ("a/**/b", "a/x/y/b", True),
    ("*.md", "*.py", False),
    ("*", "x.py", True),
    ("*", "*", True),
    ("src/api", "src/api/x/y.py", True),  # a directory covers what is in it
    ("src/api", "src/apix", False),
    ("docs/*.md", "docs/x.md/y", True),
    ("*a", "*b", False),
    ("a*", "*b", True),
    ("*a*", "*b*", True),
    ("[z-a]", "*", False),  # a reversed range is empty
    ("[!a-z]", "[a-z]", False),
    ("[!a-z]", "[!0-9]", True),
    ("**/x/**", "**/y/**", True),
    ("**/x", "**/y", True),  # x/y is covered by **/x (ancestor x) and matches **/y
    ("x", "y", False),
    ("a/b", "a/c", False),
    ("a/b", "a", True),
    ("a/**/b/**/c", "**/c", True),
    ("[]]", "]", True),
    ("[!]]", "]", False),
    ("[a-]", "-", True),
    ("a[", "a[", True),  # unclosed: a literal [
    ("a**b", "a/b", False),  # ** inside a segment is *
    ("a**b", "axyb", True),
    ("??", "?", False),
    ("?*", "*?", True),
]


@pytest.mark.parametrize(("a", "b", "expected"), OVERLAPS)
def test_overlap_examples(a: str, b: str, expected: bool) -> None:
    for x, y in ((a, b), (b, a)):
        witness = overlap(x, y)
        assert (witness is not None) is expected, (x, y, witness)
        if witness is not None:
            assert covers(x, witness)
            assert covers(y, witness)


COVERS = [
    ("src/api", "src/api/app.py", True),
    ("src/api/**", "src/api/app.py", True),
    ("src/*", "src/api/app.py", True),
    ("src/*", "src", False),
    ("src/api/**", "src/api", True),  # ** may match no segment
    ("docs/*.md", "docs/a.md", True),
    ("docs/*.md", "docs/x.md/deep/er", True),
    ("docs/*.md", "docs/a.py", False),
    ("a/**/b", "a", False),
    ("a/**/b", "a/b/c", True),
    ("a/**/b", "a/x/y/b", True),
    ("**/b", "x/y/b/z", True),
    ("**", "anything/at/all", True),
    ("*", ".hidden", True),
    ("Src", "src", False),  # case-sensitive
    ("a\\b", "a\\b", True),  # a backslash is literal
    ("[ab]", "c", False),
]


@pytest.mark.parametrize(("pattern", "path", "expected"), COVERS)
def test_covers_examples(pattern: str, path: str, expected: bool) -> None:
    assert covers(pattern, path) is expected


def test_first_overlap_and_covering() -> None:
    assert first_overlap(["docs/**", "src/api/*.py"], (p for p in ["tests/**", "src/**"])) == (
        "src/api/*.py",
        "src/**",
        "src/api/x.py",
    )
    assert first_overlap(["docs/**"], ["src/**", "tests/**"]) is None
    assert first_overlap([], ["**"]) is None
    assert covering(["docs/**", "src/*", "src/api/**"], "src/api/app.py") == "src/*"
    assert covering(["docs/**"], "src/api/app.py") is None


@pytest.mark.parametrize("bad", ["", "a//b", "/a", "a/"])
def test_malformed_patterns_and_paths_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        covers(bad, "a")
    with pytest.raises(ValueError, match="empty"):
        covers("a", bad)
    with pytest.raises(ValueError, match="empty"):
        overlap(bad, "a")


def test_long_patterns_stay_fast() -> None:
    start = time.perf_counter()
    assert overlap("*a" * 100, "*b" * 100) is None
    assert overlap("/".join(["*"] * 100) + "/z", "/".join(["**", "a"] * 50)) is not None
    assert not covers("*a" * 100 + "b", "a" * 300)  # no exponential backtracking
    assert not covers("**/" * 50 + "a/" * 50 + "z", "/".join(["a"] * 200))
    mine = [f"src/mod{i}/**" for i in range(100)]
    theirs = [f"lib/pkg{i}/*.py" for i in range(100)]
    assert first_overlap(mine, theirs) is None
    assert time.perf_counter() - start < 2.0


# --- properties ------------------------------------------------------------------

TOKENS = ["a", "b", "*", "?", "[ab]", "[!a]", "[b-c]", "[^b]", "."]
SEGMENT_NAMES = ["a", "b", "c", "ab", "ba", "bb", "aab", "."]
#: every path of up to three segments over SEGMENT_NAMES
PATHS = ["/".join(p) for k in range(1, 4) for p in itertools.product(SEGMENT_NAMES, repeat=k)]

segments = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=3).map("".join)
plain_segments = segments.filter(lambda s: s != "**")
patterns = st.lists(st.one_of(segments, st.just("**")), min_size=1, max_size=3).map("/".join)
plain_patterns = st.lists(plain_segments, min_size=1, max_size=3).map("/".join)
names = st.lists(st.sampled_from(["a", "b", "c", ".", "x", "-"]), min_size=1, max_size=4).map("".join)
paths = st.lists(names, min_size=1, max_size=4).map("/".join)

FAST = settings(max_examples=150, deadline=None)


@FAST
@given(patterns, patterns)
def test_a_witness_is_covered_by_both(a: str, b: str) -> None:
    witness = overlap(a, b)
    if witness is not None:
        assert covers(a, witness), (a, b, witness)
        assert covers(b, witness), (a, b, witness)


@FAST
@given(patterns, patterns)
def test_overlap_finds_every_shared_path(a: str, b: str) -> None:
    shared = next((p for p in PATHS if covers(a, p) and covers(b, p)), None)
    if shared is not None:
        assert overlap(a, b) is not None, (a, b, shared)


def fnmatch_covers(pattern: str, path: str) -> bool:
    """The reference: each of the pattern's k segments fnmatches the path's
    first k segments."""
    pat, parts = pattern.split("/"), path.split("/")
    return len(parts) >= len(pat) and all(
        fnmatch.fnmatchcase(part, seg) for seg, part in zip(pat, parts, strict=False)
    )


@FAST
@given(plain_patterns, paths)
def test_covers_agrees_with_fnmatch(pattern: str, path: str) -> None:
    # fnmatch reads a leading ^ as a literal; here it negates, like !
    assert covers(pattern, path) is fnmatch_covers(pattern.replace("[^", "[!"), path)


@FAST
@given(plain_patterns, st.sampled_from(PATHS))
def test_covers_agrees_with_fnmatch_on_small_paths(pattern: str, path: str) -> None:
    assert covers(pattern, path) is fnmatch_covers(pattern.replace("[^", "[!"), path)


@FAST
@given(patterns, patterns)
def test_overlap_is_symmetric(a: str, b: str) -> None:
    assert (overlap(a, b) is None) is (overlap(b, a) is None)


@FAST
@given(patterns, paths)
def test_a_pattern_overlaps_each_path_it_covers(pattern: str, path: str) -> None:
    # these paths have no glob characters, so as a pattern a path covers
    # itself (and what is beneath it): a common path with any pattern covering it
    if covers(pattern, path):
        assert overlap(pattern, path) is not None
