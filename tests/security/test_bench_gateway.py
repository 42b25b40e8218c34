"""``ifctl bench gateway`` times the agent tools through a real gateway process
beside the same calls in-process and the bus's CAS, and reports (never
asserts) its targets; and the listening socket a server binds is TCP, so
its answers are not held back by Nagle's algorithm."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from infrafabric.bus.servers import NatsServer
from infrafabric.serving import bind

pytestmark = [pytest.mark.timeout(300)]


def test_bench_gateway_reports_every_side_and_its_targets(nats_server: NatsServer) -> None:
    ifctl = str(Path(sys.executable).parent / "ifctl")
    done = subprocess.run([ifctl, "--bus", f"{nats_server.url}?namespace=benchgw", "bench", "gateway",
                           "--n", "3", "--agents", "2", "--json"],
                          capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["benchmark"] == "gateway" and result["backend"] == "nats"
    ops = result["ops"]
    for op in ("gateway_next", "gateway_complete", "served_next", "served_complete"):
        assert ops[op]["count"] == 6 and 0 < ops[op]["p50"] <= ops[op]["p99"]
    assert ops["connect"]["count"] == 2 and ops["bus_cas"]["count"] == 3
    assert {t["id"] for t in result["targets"]} == {"gateway-added-p50", "gateway-p99"}
    assert all(t["pass"] in (True, False) for t in result["targets"])


def test_a_served_socket_is_tcp_so_answers_are_sent_at_once() -> None:
    # asyncio sets TCP_NODELAY only on connections of a socket whose protocol is TCP: with 0,
    # every answer of the agent gateway and the dashboard waited 40 ms for a delayed ACK
    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
