"""``ifctl guard tool``: a PreToolUse hook that refuses trespassing edits.

Installed as a PreToolUse hook of Claude Code or Codex (``ifctl hooks
install`` does it), it reads the tool call the agent is about to make and
refuses it when it would edit a path another live claim's path lease covers,
or check out a branch another claim holds; the refusal names the holder and
the task. What it reads from the call:

* Claude Code's ``Edit``, ``Write``, ``MultiEdit`` (``file_path``) and
  ``NotebookEdit`` (``notebook_path``);
* Codex's ``apply_patch`` (the files its patch adds, updates, deletes or
  moves to);
* a shell command (``Bash``, ``shell``, ``exec_command``): ``git checkout
  BRANCH``, ``git switch BRANCH``, ``git checkout [REF] -- PATH...`` and
  ``git restore PATH...``.
  What a shell command writes otherwise cannot be known before it runs: the
  pre-commit guard (``ifctl guard pre-commit``) catches it at commit time.

It asks the swarm's running ``ifctl mcp`` over its control socket (one round
trip), else the bus directly. It fails open only when the fleet's bus cannot
be reached, and says so on stderr. Bad input exits 2 (which the clients read
as "block", the safe side for a guard), naming what is wrong.

Standard library only: this runs before every tool call.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys

from infrafabric.agent.hooks import (
    PAYLOAD_LIMIT,
    HookInputError,
    decode_payload,
    foreign,
    project_dir,
    swarm_of,
    take_options,
    use_options,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["main", "targets"]

AGENTS = ("claude", "codex")
EDIT_TOOLS = {"Edit": "file_path", "Write": "file_path", "MultiEdit": "file_path",
              "NotebookEdit": "notebook_path"}
SHELL_TOOLS = ("Bash", "shell", "exec_command", "local_shell")
_PATCH_FILE = re.compile(r"^\*\*\* (?:Add File|Update File|Delete File|Move to): (.+?)\s*$", re.MULTILINE)
USAGE = """\
usage: ifctl guard tool [--agent claude|codex] [--swarm ID] [--home DIR] [--bus URL]

A PreToolUse hook (reads the client's JSON payload on stdin): refuses an edit
of a path another live claim's path lease covers, and a git checkout/switch
of a branch another claim holds, naming the holder and the task. The swarm
is --swarm, else $IF_SWARM_ID (its own claims are never refused). Fails open
only when the fleet's bus is unreachable, saying so on stderr.
Install it with: ifctl hooks install --agent claude
"""


def _text(value: Any) -> str:
    """A command as text: Codex sends argv lists, often ``[bash, -lc, SCRIPT]``."""
    if isinstance(value, list):
        words = [str(v) for v in value]
        if len(words) >= 3 and os.path.basename(words[0]) in ("bash", "sh", "zsh", "dash") \
                and words[1] in ("-c", "-lc", "-ic", "-lic"):
            return words[2]
        return " ".join(shlex.quote(w) for w in words)
    return value if isinstance(value, str) else ""


def _git_targets(command: str) -> tuple[list[str], list[str]]:
    """(paths, branches) that the ``git checkout``/``git switch`` calls in a
    shell command would touch."""
    paths: list[str] = []
    branches: list[str] = []
    for part in re.split(r"&&|\|\||[;|\n]", command):
        try:
            words = shlex.split(part)
        except ValueError:
            words = part.split()
        while words and ("=" in words[0] and not words[0].startswith("-")):
            words = words[1:]  # VAR=value prefixes
        if len(words) < 2 or os.path.basename(words[0]) != "git":
            continue
        rest = words[1:]
        while rest and rest[0] in ("-C", "-c", "--git-dir", "--work-tree"):
            rest = rest[2:]
        if not rest or rest[0] not in ("checkout", "switch", "restore"):
            continue
        verb, args = rest[0], rest[1:]
        if verb == "restore":  # `git restore [-s REF] PATH...` rewrites files
            skip = {i + 1 for i, a in enumerate(args) if a in ("-s", "--source")}
            paths += [a for i, a in enumerate(args) if i not in skip and not a.startswith("-")]
            continue
        if "--" in args:
            at = args.index("--")
            paths += args[at + 1:]
            args = args[:at]
            if verb == "checkout":
                continue  # `git checkout [REF] -- PATH...` restores files, switches no branch
        creating = any(a in ("-b", "-B", "-c", "-C", "--orphan") for a in args)
        positional = [a for a in args if not a.startswith("-")]
        if not creating and positional:
            branches.append(positional[0])
            if verb == "checkout" and len(positional) > 1:
                paths += positional[1:]  # `git checkout REF PATH...`
    return paths, branches


def targets(agent: str, payload: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(paths, branches) the tool call in ``payload`` would touch."""
    tool = payload.get("tool_name")
    given = payload.get("tool_input")
    if not isinstance(tool, str):
        raise HookInputError("stdin: a PreToolUse payload names the tool (tool_name)")
    args: dict[str, Any] = given if isinstance(given, dict) else {}
    if tool in EDIT_TOOLS:
        path = args.get(EDIT_TOOLS[tool])
        if not isinstance(path, str) or not path:
            raise HookInputError(f"stdin: tool_input.{EDIT_TOOLS[tool]} of {tool} is missing or not text")
        return [path], []
    if tool == "apply_patch":
        text = _text(args.get("command") or args.get("input") or args.get("patch") or given)
        return _PATCH_FILE.findall(text), []
    if tool in SHELL_TOOLS:
        return _git_targets(_text(args.get("command") or args.get("cmd")))
    return [], []


def main(argv: list[str]) -> int:
    """``ifctl guard tool [--agent A] [--swarm ID] [--home DIR] [--bus URL]``: the exit code."""
    from infrafabric.agent import control

    args = list(argv)
    try:
        options = take_options(args, ("--agent", "--swarm", "--home", "--bus"))
    except HookInputError as exc:
        return _bad(str(exc))
    if args and args[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0
    if args:
        return _bad(f"unexpected argument {args[0]!r}\n" + USAGE)
    agent = options.get("--agent", "claude")
    if agent not in AGENTS:
        return _bad(f"--agent {agent!r} is not one of {', '.join(AGENTS)} "
                    "(Cursor has no PreToolUse for edits)")
    try:
        payload = decode_payload(sys.stdin.buffer.read(PAYLOAD_LIMIT + 1), f"{agent} PreToolUse hook")
        if foreign(agent, payload):
            return 0
        name = payload.get("hook_event_name")
        if name is not None and name != "PreToolUse":
            raise HookInputError(f"stdin: hook_event_name is {str(name)[:40]!r}: install it as a "
                                 "PreToolUse hook")
        paths, branches = targets(agent, payload)
        swarm = swarm_of(options)
    except HookInputError as exc:
        return _bad(str(exc))
    if not paths and not branches:
        return 0
    use_options(options)
    cwd = project_dir(payload) or os.getcwd()
    if not os.environ.get("IF_HOME"):
        os.chdir(cwd)  # the state directory is the project's (its git repository's)
    try:
        verdict = control.guard(swarm, cwd, paths, branches)
    except control.Unreachable as exc:
        sys.stderr.write(f"ifctl guard: the fleet's bus is unreachable, so this edit is not checked: {exc}\n")
        return 0
    except control.Refused as exc:
        return _bad(str(exc))
    for note in verdict.get("notes", []):
        sys.stderr.write(f"ifctl guard: {note}\n")
    refusals = verdict.get("refusals", [])
    if refusals:
        reason = ("InfraFabric: another agent holds this. " + "; ".join(refusals)
                  + ". Work on your own task's paths, or ask the holder (task_block / ifctl blocker).")
        sys.stdout.write(json.dumps({"hookSpecificOutput": {"hookEventName": "PreToolUse",
                                                            "permissionDecision": "deny",
                                                            "permissionDecisionReason": reason}}))
    return 0


def _bad(message: str) -> int:
    sys.stderr.write(f"ifctl guard: {message}\n")
    return 2
