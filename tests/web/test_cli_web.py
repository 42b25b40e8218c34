"""``ifctl web`` refuses bad input with exit 2 and a message naming it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from infrafabric.cli import cli


def _run(args: list[str], tmp_path: Path, **env: str | None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["web", *args], env={"IF_BUS_URL": "memory://web-cli",
                                                          "IF_HOME": str(tmp_path), **env})
    said = result.stdout + result.stderr
    assert "Traceback" not in said
    return result.exit_code, said


def test_help_teaches() -> None:
    result = CliRunner().invoke(cli, ["web", "--help"])
    assert result.exit_code == 0
    for words in ("--port", "--token-file", "read-only", "/metrics", "Example"):
        assert words in result.output


@pytest.mark.parametrize(("content", "says"), [
    (None, "cannot read it"),
    ("", "at least 16 characters"),
    ("short\n", "at least 16 characters"),
])
def test_bad_token_file_exits_2(tmp_path: Path, content: str | None, says: str) -> None:
    token = tmp_path / "token"
    if content is not None:
        token.write_text(content)
    code, said = _run(["--port", "0", "--token-file", str(token)], tmp_path)
    assert code == 2 and says in said and str(token) in said, said


def test_short_token_in_the_environment_exits_2(tmp_path: Path) -> None:
    code, said = _run(["--port", "0"], tmp_path, IF_WEB_TOKEN="tiny")
    assert code == 2 and "IF_WEB_TOKEN" in said, said


def test_port_in_use_exits_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, said = _run(["--port", str(port)], tmp_path)
    assert code == 2 and f"--port {port}" in said and "--port 0" in said, said


def test_bad_host_and_port_exit_2(tmp_path: Path) -> None:
    code, said = _run(["--port", "70000"], tmp_path)
    assert code == 2 and "--port" in said
    code, said = _run(["--port", "0", "--host", "no-such-host.invalid"], tmp_path)
    assert code == 2 and "--host no-such-host.invalid" in said, said


@pytest.mark.parametrize(("args", "says"), [
    (["--host", "0.0.0.0"], "without TLS"),
    (["--host", "0.0.0.0", "--tls-cert", "/nonexistent.pem"], "go together"),
    (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"], "cannot serve with them"),
])
def test_the_dashboard_binds_beyond_loopback_only_with_tls_or_a_flag(args: list[str], says: str) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "infrafabric.cli", "--bus", "memory://", "web", *args,
                           "--mode", "falsify"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and says in done.stderr, done.stderr
    allowed = subprocess.run([sys.executable, "-m", "infrafabric.cli", "--bus", "memory://", "web", "--host",
                              "0.0.0.0", "--allow-plain-http", "--port", "0", "--mode", "falsify", "--json"],
                             capture_output=True, text=True, timeout=60)
    assert allowed.returncode == 0, allowed.stderr
