"""``ifctl hook AGENT EVENT``: lifecycle hooks for Claude Code, Codex and Cursor.

A hook reads its client's documented JSON on stdin, asks the agent's own
``ifctl mcp`` server (over a private Unix socket, see
:mod:`infrafabric.agent.control`) and answers in the client's format:

=================  ======================================================================
event              what the hook does
=================  ======================================================================
``session-start``  injects the protocol and the task the agent holds (if any)
``post-tool-use``  renews the lease of every claim the agent holds (real activity);
                   tells the agent at once if a claim was lost
``stop``           refuses to stop while the agent holds a task (complete, fail or
                   release it first); hands it the next task if the board has one
``teammate-idle``  the same as ``stop``, for Claude Code agent teams
=================  ======================================================================

It imports only the standard library and never starts a server: with the
agent's MCP server running, a hook returns in a few tens of milliseconds.
Without one (a client that starts a server per call) it acts on the bus
directly, which costs the library's import time. It fails open: with no
swarm id (``IF_SWARM_ID`` or ``--swarm``), or a bus that does not answer, it
lets the client go on and says why on stderr.
"""

from __future__ import annotations

import json
import os
import re
import sys

TYPE_CHECKING = False  # the hooks import nothing they do not need: typing and dataclasses cost ~25 ms
if TYPE_CHECKING:
    from typing import Any

__all__ = ["AGENTS", "EVENTS", "Answer", "main", "parse_payload", "render"]

AGENTS = ("claude", "codex", "cursor")
#: each agent's events: ours -> the ``hook_event_name`` its payload carries
EVENTS: dict[str, dict[str, str]] = {
    "claude": {"session-start": "SessionStart", "post-tool-use": "PostToolUse", "stop": "Stop",
               "teammate-idle": "TeammateIdle"},
    "codex": {"session-start": "SessionStart", "post-tool-use": "PostToolUse", "stop": "Stop"},
    "cursor": {"session-start": "sessionStart", "post-tool-use": "postToolUse",
               "after-file-edit": "afterFileEdit", "stop": "stop"},
}
#: what the agent's server is asked for each event
OPS = {"session-start": "start", "post-tool-use": "activity", "after-file-edit": "activity",
       "stop": "stop", "teammate-idle": "stop"}
PAYLOAD_LIMIT = 4 * 1024 * 1024
EXIT_BAD_INPUT = 2
#: coordinator.models.TASK_ID_PATTERN, without importing pydantic (tests/agent checks they agree)
SWARM_ID_PATTERN = r"[A-Za-z0-9._\-:@+=~]{1,128}"
_SWARM_ID = re.compile(SWARM_ID_PATTERN)


class HookInputError(Exception):
    """The payload or the command line is not what the client documents."""


class Answer:
    """What InfraFabric says for one event: context to inject, or a reason
    the agent must not stop (``block``), and notes for stderr."""

    def __init__(self, context: str | None = None, block: str | None = None,
                 notes: list[str] | None = None) -> None:
        self.context = context
        self.block = block
        self.notes = list(notes or [])

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Answer:
        return cls(context=data.get("context"), block=data.get("block"), notes=list(data.get("notes", [])))


def parse_payload(agent: str, event: str, raw: bytes) -> dict[str, Any]:
    """The client's JSON payload (not yet checked against the event: see :func:`check_event`)."""
    if agent not in EVENTS:
        raise HookInputError(f"agent {agent!r} is not one of {', '.join(AGENTS)}")
    if event not in EVENTS[agent]:
        raise HookInputError(f"{agent} has no {event!r} hook; its hooks: {', '.join(EVENTS[agent])}")
    if not raw.strip() and len(raw) <= PAYLOAD_LIMIT:
        return {}  # run by hand, or a client that sends nothing for this event
    return decode_payload(raw, f"{agent} hook")


def decode_payload(raw: bytes, what: str) -> dict[str, Any]:
    """``raw`` (stdin, read up to one byte past :data:`PAYLOAD_LIMIT`) as the
    JSON object a ``what`` (``"claude hook"``) receives, or :class:`HookInputError`."""
    if len(raw) > PAYLOAD_LIMIT:
        raise HookInputError(f"stdin: the payload is over {PAYLOAD_LIMIT // (1024 * 1024)} MiB")
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise HookInputError(f"stdin: not the JSON a {what} receives ({str(exc)[:80]})") from exc
    if not isinstance(payload, dict):
        raise HookInputError(f"stdin: a {what} receives a JSON object, not {type(payload).__name__}")
    return payload


def take_options(args: list[str], flags: tuple[str, ...]) -> dict[str, str]:
    """Remove ``--flag VALUE`` pairs of ``flags`` from ``args``; their values by flag."""
    options: dict[str, str] = {}
    for flag in flags:
        while flag in args:
            at = args.index(flag)
            if at + 1 >= len(args):
                raise HookInputError(f"{flag} needs a value")
            options[flag] = args[at + 1]
            del args[at:at + 2]
    return options


def swarm_of(options: dict[str, str]) -> str | None:
    """The swarm: ``--swarm``, else ``$IF_SWARM_ID``, else None; a malformed id is bad input."""
    swarm = options.get("--swarm") or os.environ.get("IF_SWARM_ID", "").strip() or None
    if swarm is not None and _SWARM_ID.fullmatch(swarm) is None:
        raise HookInputError(f"swarm id {swarm[:60]!r} is not an id (1-128 of letters, digits and ._-:@+=~)")
    return swarm


def use_options(options: dict[str, str]) -> None:
    """``--home`` and ``--bus`` for the library: as ``IF_HOME`` and ``IF_BUS_URL``."""
    if "--home" in options:
        os.environ["IF_HOME"] = options["--home"]
    if "--bus" in options:
        os.environ["IF_BUS_URL"] = options["--bus"]


def check_event(agent: str, event: str, payload: dict[str, Any]) -> None:
    """The payload is for the event the hook was installed for."""
    name = payload.get("hook_event_name")
    if name is not None and name != EVENTS[agent][event]:
        raise HookInputError(f"stdin: hook_event_name is {str(name)[:40]!r}, but this is the {agent} "
                             f"{event} hook ({EVENTS[agent][event]}); check the hook configuration")


def foreign(agent: str, payload: dict[str, Any]) -> bool:
    """A payload from another client: Cursor also runs Claude Code's hooks
    ("third-party skills"), which must not act twice."""
    return agent != "cursor" and ("cursor_version" in payload or "conversation_id" in payload)


def repeated(payload: dict[str, Any]) -> bool:
    """The client asks again after a stop we refused: Claude's and Codex's
    ``stop_hook_active``, Cursor's ``loop_count``."""
    count = payload.get("loop_count")
    return payload.get("stop_hook_active") is True or (isinstance(count, int) and count > 0)


def project_dir(payload: dict[str, Any]) -> str | None:
    """The agent's project, where the hook finds the board: the payload's
    ``cwd`` or ``workspace_roots``, else the client's project variable."""
    roots = payload.get("workspace_roots")
    for candidate in (payload.get("cwd"), roots[0] if isinstance(roots, list) and roots else None,
                      os.environ.get("CLAUDE_PROJECT_DIR"), os.environ.get("CURSOR_PROJECT_DIR")):
        if isinstance(candidate, str) and candidate and os.path.isdir(candidate):
            return candidate
    return None


def render(agent: str, event: str, answer: Answer) -> tuple[str, str, int]:
    """(stdout, stderr, exit code) in the client's documented format."""
    err = "".join(f"ifctl hook: {n}\n" for n in answer.notes)
    name = EVENTS[agent][event]
    if event in ("stop", "teammate-idle"):
        if answer.block is None:
            return ("{}" if agent in ("codex", "cursor") else ""), err, 0
        if event == "teammate-idle":  # answered by exit code only: 2 keeps the teammate working
            return "", err + answer.block + "\n", 2
        if agent == "cursor":
            return json.dumps({"followup_message": answer.block}), err, 0
        return json.dumps({"decision": "block", "reason": answer.block}), err, 0
    if answer.context is None:
        return ("{}" if agent == "cursor" else ""), err, 0
    if agent == "cursor":
        return json.dumps({"additional_context": answer.context}), err, 0
    specific = {"hookEventName": name, "additionalContext": answer.context}
    return json.dumps({"hookSpecificOutput": specific}), err, 0


def main(argv: list[str]) -> int:
    """``ifctl hook AGENT EVENT [--swarm ID] [--home DIR] [--bus URL]``: returns the exit code."""
    from infrafabric.agent import control

    args = list(argv)
    try:
        options = take_options(args, ("--swarm", "--home", "--bus"))
    except HookInputError as exc:
        return _bad(str(exc))
    if args and args[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0
    if len(args) != 2:
        return _bad("expected AGENT EVENT, e.g. `ifctl hook claude stop`\n" + USAGE)
    agent, event = args
    # Bad input exits 2, except for a stop: every client reads exit 2 from a stop hook as "do not
    # stop", so a broken payload there exits 1 (reported, and the agent may stop).
    stopping = event in ("stop", "teammate-idle")
    try:
        payload = parse_payload(agent, event, sys.stdin.buffer.read(PAYLOAD_LIMIT + 1))
        if foreign(agent, payload):
            return 0
        check_event(agent, event, payload)
    except HookInputError as exc:
        return _bad(str(exc), code=1 if stopping else EXIT_BAD_INPUT)
    try:
        swarm = swarm_of(options)
    except HookInputError as exc:
        return _bad(str(exc), code=1 if stopping else EXIT_BAD_INPUT)
    interrupted = agent == "cursor" and event == "stop" and payload.get("status") not in (None, "completed")
    if swarm is None or interrupted:
        # not a fleet agent (hooks are installed for the project, sessions join with IF_SWARM_ID); or
        # the user stopped Cursor (aborted) or it failed: neither is the moment to hand over work
        out, err, code = render(agent, event, Answer())
        sys.stdout.write(out)
        return code
    use_options(options)
    where = None if os.environ.get("IF_HOME") else project_dir(payload)
    if where is not None:
        os.chdir(where)  # the state directory is the project's (its git repository's)
    try:
        answer = control.ask(swarm, OPS[event], agent=agent, repeat=repeated(payload))
    except (control.Unreachable, control.Refused) as exc:
        answer = Answer(notes=[f"{exc} (letting {agent} go on)"])
    except Exception as exc:  # a hook fails open, and never shows an agent a traceback
        answer = Answer(notes=[f"{type(exc).__name__}: {exc} (letting {agent} go on)"])
    out, err, code = render(agent, event, answer)
    sys.stdout.write(out)
    sys.stderr.write(err)
    return code


def _bad(message: str, code: int = EXIT_BAD_INPUT) -> int:
    sys.stderr.write(f"ifctl hook: {message}\n")
    return code


USAGE = """\
Usage: ifctl hook AGENT EVENT [--swarm ID] [--home DIR] [--bus URL]

  Run by an agent's client as a lifecycle hook (install with `ifctl hooks install`);
  reads the client's JSON on stdin. The swarm is $IF_SWARM_ID unless --swarm names it;
  the board is the project's (the payload's cwd) unless --home, $IF_HOME, --bus or
  $IF_BUS_URL say otherwise. Bad input exits 2 (1 for a stop hook: exit 2 would keep
  the agent from stopping); the fleet unreachable lets the agent go on (exit 0).

  claude: session-start, post-tool-use, stop, teammate-idle
  codex:  session-start, post-tool-use, stop
  cursor: session-start, post-tool-use, after-file-edit, stop

  Example: echo '{"hook_event_name": "Stop"}' | IF_SWARM_ID=session-7 ifctl hook claude stop
"""
