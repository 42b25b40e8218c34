"""URL parsing: every malformed input is a ConfigurationError (exit 2) naming the bad part."""

from __future__ import annotations

import pytest

from infrafabric.bus import from_url, parse_url
from infrafabric.bus.keys import from_tokens, prefix_filter, to_tokens, validate_key
from infrafabric.errors import BadKeyError, ConfigurationError


def test_parses_hosts_ports_and_options() -> None:
    url = parse_url("nats://a:4222,b:5222,[::1]:6222?bucket=x&timeout=0.5&namespace=team-1")
    assert url.scheme == "nats"
    assert url.hosts == (("a", 4222), ("b", 5222), ("::1", 6222))
    assert url.timeout == 0.5 and url.namespace == "team-1" and url.options["bucket"] == "x"


def test_default_ports_and_memory_names() -> None:
    assert parse_url("etcd://localhost").hosts == (("localhost", 2379),)
    assert parse_url("nats://h/").hosts == (("h", 4222),)
    assert parse_url("memory://").name == "default"
    assert parse_url("memory://shared").name == "shared"


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ("redis://x:1", "unknown bus URL scheme 'redis'"),
        ("localhost:4222", "malformed bus URL"),
        ("nats://", "names no host"),
        ("nats://host:99999", "bad port '99999'"),
        ("nats://host:abc", "bad port 'abc'"),
        ("nats://ho st:1", "bad host"),
        ("nats://h:1/path", "unexpected path"),
        ("nats://h:1?colour=red", "unknown option 'colour'"),
        ("nats://h:1?timeout=-1", "timeout='-1'"),
        ("nats://h:1?timeout=soon", "timeout='soon'"),
        ("etcd://h:1?bucket=x", "unknown option 'bucket'"),
        ("memory://?namespace=a/b", "bad namespace"),
        ("etcd://h:1?namespace=_pubsub", "bad namespace"),
        ("nats://user:pw@h:1", "credentials"),
        ("nats://h:1?timeout=1&timeout=2", "given twice"),
        ("nats://h:1?replicas=zero", None),
    ],
)
def test_bad_urls_are_configuration_errors(raw: str, names: str | None) -> None:
    if names is None:  # typed backend options are validated where the backend reads them
        url = parse_url(raw)
        with pytest.raises(ConfigurationError, match="positive integer"):
            url.int_option("replicas", 1)
        return
    with pytest.raises(ConfigurationError) as info:
        from_url(raw)
    assert names in str(info.value)
    assert info.value.exit_code == 2


def test_key_token_mapping_is_injective_and_reversible() -> None:
    keys = ["tasks/P0.1.1", "tasks/P0/1/1", "caps/domain:skill", "a=b/c@d", "x-y_z/~+"]
    tokens = [to_tokens(k) for k in keys]
    assert len(set(tokens)) == len(keys)
    for key, token in zip(keys, tokens, strict=True):
        assert from_tokens(token) == key
        assert all(ch.isalnum() or ch in "-_=." for ch in token)
    assert prefix_filter("tasks/P0.") == "tasks.>"
    assert prefix_filter("tasks/") == "tasks.>"
    assert prefix_filter("tas") == ">"


def test_key_errors_name_the_key() -> None:
    with pytest.raises(BadKeyError, match="'a//b'"):
        validate_key("a//b")


def test_with_options_replaces() -> None:
    from infrafabric.bus.url import with_options

    assert with_options("nats://h:1?namespace=a&timeout=2", namespace="b") == (
        "nats://h:1?namespace=b&timeout=2")
    assert with_options("memory://", namespace="x") == "memory://default?namespace=x"
