"""``ifctl task heartbeat`` through a running server, without loading the library.

A shell loop or an agent renews its claim with ``ifctl task heartbeat`` every
few minutes, a new process each time. When the swarm's ``ifctl mcp`` runs on
this machine (the documented setup for an agent), or the persisted connection
an earlier heartbeat left (:mod:`infrafabric.agent.persist`), it already holds
the bus and the fleet: the command asks it over its socket
(:func:`infrafabric.agent.control.heartbeat`) and prints what the full command
would, at the cost of a process start and one round trip. Anything else (no
server, another bus, a refusal, a flag this path does not know, an agent
gateway) goes to the full command, which then acts and reports in its own words.

It imports only the standard library and the control socket's client.
"""

from __future__ import annotations

import json
import os
import sys
import time

TYPE_CHECKING = False  # typing costs the start-up this path exists to save
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["LEASE_MAX", "LEASE_MIN", "heartbeat"]

#: the bounds of ``--lease`` (seconds) in ``task claim|next|heartbeat``, here and in the full commands
LEASE_MIN, LEASE_MAX = 0.5, 7 * 86400


def _parse(args: Sequence[str]) -> dict[str, str] | None:
    """``TASK_ID [--swarm S] [--claim C] [--lease N] [--json]`` (the ``--x=v``
    form too), or None for anything else."""
    values: dict[str, str] = {}
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if name in ("--swarm", "--claim", "--lease"):
            if not eq:
                if i + 1 >= len(args):
                    return None
                i += 1
                value = args[i]
            if name[2:] in values:
                return None
            values[name[2:]] = value
        elif arg == "--json" and not eq:
            values["json"] = "1"
        elif arg.startswith("-"):
            return None  # --why, --trace, --mode, --help, ...: the full command
        else:
            positional.append(arg)
        i += 1
    if len(positional) != 1:
        return None
    values["task"] = positional[0]
    return values


def heartbeat(args: Sequence[str]) -> int | None:
    """Run ``ifctl task heartbeat ARGS`` through the swarm's server: the exit
    code, or None when this path does not apply (see the module docs)."""
    parsed = _parse(args)
    if parsed is None:
        return None
    swarm = parsed.get("swarm") or os.environ.get("IF_SWARM_ID")
    lease: float | None = None
    if "lease" in parsed:
        try:
            lease = float(parsed["lease"])
        except ValueError:
            return None
        if not LEASE_MIN <= lease <= LEASE_MAX:
            return None
    if not swarm:
        return None
    from infrafabric.agent.control import heartbeat as ask_server
    from infrafabric.agent.control import is_gateway

    if is_gateway(os.environ.get("IF_BUS_URL")):
        return None
    answer = ask_server(swarm, parsed["task"], parsed.get("claim"), lease, os.environ.get("IF_HOME") or None)
    if answer is None:
        return None
    until = float(answer["lease_until"])
    left = until - time.time()
    if "json" in parsed:
        data = {"task_id": parsed["task"], "lease_until": until, "lease_left_s": round(left, 1),
                "exit_code": 0}
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(f"lease on {parsed['task']} renewed for {left:.1f} s\n")
    return 0
