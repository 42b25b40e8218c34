"""Each agent client's setup: registering ``ifctl mcp`` and installing the hooks.

What each client documents (late 2026):

* Claude Code: ``claude mcp add --transport stdio --scope local NAME --env K=V -- CMD ARGS``;
  hooks in ``.claude/settings.json`` (project) or ``~/.claude/settings.json`` (user), as
  ``{"hooks": {Event: [{"matcher": ..., "hooks": [{"type": "command", "command": ...}]}]}}``.
* Codex CLI: ``codex mcp add NAME --env K=V -- CMD ARGS`` (``~/.codex/config.toml``; its
  default tool timeout is 60 s); hooks in ``.codex/hooks.json`` or ``~/.codex/hooks.json``,
  Claude's format; a new hook runs once trusted in Codex's ``/hooks``.
* Cursor: ``.cursor/mcp.json`` (``{"mcpServers": {NAME: {command, args, env}}}``); hooks in
  ``.cursor/hooks.json`` or ``~/.cursor/hooks.json`` as ``{"version": 1, "hooks": {event:
  [{"command": ...}]}}``.
* Gemini CLI: ``.gemini/settings.json`` (``mcpServers``, ``timeout`` in ms); no hooks here.

Installing merges into an existing file: other hooks are kept, ours (any command that
runs ``ifctl hook``) are replaced, so installing twice changes nothing.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infrafabric.errors import ConfigurationError

__all__ = ["HOOK_FILES", "Registration", "hook_config", "install_hooks", "mcp_registration"]

#: where each client reads hooks: (project file relative to the project root, user file relative to ~)
HOOK_FILES = {
    "claude": (".claude/settings.json", ".claude/settings.json"),
    "codex": (".codex/hooks.json", ".codex/hooks.json"),
    "cursor": (".cursor/hooks.json", ".cursor/hooks.json"),
}
#: the hooks installed, per client: (client's event name, our event, matcher, timeout in seconds)
_HOOKS: dict[str, list[tuple[str, str, str | None, int]]] = {
    "claude": [("SessionStart", "session-start", None, 10),
               ("PreToolUse", "guard", "Edit|Write|MultiEdit|NotebookEdit|Bash", 10),
               ("PostToolUse", "post-tool-use", "*", 10),
               ("Stop", "stop", None, 30),
               ("TeammateIdle", "teammate-idle", None, 30)],
    "codex": [("SessionStart", "session-start", None, 10),
              ("PreToolUse", "guard", "apply_patch|Bash", 10),
              ("PostToolUse", "post-tool-use", "*", 10),
              ("Stop", "stop", None, 30)],
    "cursor": [("sessionStart", "session-start", None, 10),
               ("postToolUse", "post-tool-use", None, 10),
               ("afterFileEdit", "after-file-edit", None, 10),
               ("stop", "stop", None, 30)],
}
#: a stop hook hands over the next task: let a busy agent go on through several in a row (the hook
#: itself lets an agent go that did not touch its task since the last refusal)
CURSOR_LOOP_LIMIT = 10
FILE_LIMIT = 4 * 1024 * 1024
CODEX_TIMEOUT_NOTE = "task_next waits at most 50 s, inside Codex's default 60 s tool timeout"
CODEX_GLOBAL_NOTE = ("codex mcp add writes ~/.codex/config.toml, for every project: with several "
                     "projects, put this server under [mcp_servers.infrafabric] in each project's "
                     ".codex/config.toml instead")


@dataclass
class Registration:
    """How to register the MCP server with one client: a command to run, or a file to write."""

    agent: str
    command: str | None = None
    path: str | None = None
    content: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in (("agent", self.agent), ("command", self.command), ("path", self.path),
                                  ("content", self.content), ("notes", self.notes)) if v}

    def lines(self) -> list[str]:
        out = [self.command] if self.command else [f"# {self.path}", self.content or ""]
        return out + [f"# {n}" for n in self.notes]


def mcp_registration(agent: str, *, name: str, command: str, args: list[str],
                     env: dict[str, str]) -> Registration:
    """The registration of ``command args`` (``ifctl mcp ...``) as MCP server ``name``."""
    q = shlex.quote
    env_flags = " ".join(f"--env {q(f'{k}={v}')}" for k, v in env.items())
    server = " ".join(q(a) for a in [command, *args])
    if agent == "claude":
        return Registration(agent, command=" ".join(filter(None, [
            "claude mcp add --transport stdio --scope local", q(name), env_flags, "--", server])),
            notes=["--scope project writes .mcp.json for everyone on the project instead"])
    if agent == "codex":
        return Registration(agent, command=" ".join(filter(None, ["codex mcp add", q(name), env_flags, "--",
                                                                  server])),
                            notes=[CODEX_TIMEOUT_NOTE, CODEX_GLOBAL_NOTE])
    entry: dict[str, Any] = {"command": command, "args": args}
    if env:
        entry["env"] = env
    if agent == "cursor":
        return Registration(agent, path=".cursor/mcp.json",
                            content=json.dumps({"mcpServers": {name: entry}}, indent=2),
                            notes=["merge it into the file if it has other servers"])
    if agent == "gemini":
        entry["timeout"] = 60_000
        return Registration(agent, path=".gemini/settings.json",
                            content=json.dumps({"mcpServers": {name: entry}}, indent=2),
                            notes=["merge it into the file if it has other settings"])
    raise ConfigurationError(f"--agent {agent!r} is not one of claude, codex, cursor, gemini")


def _ours(command: object) -> bool:
    return isinstance(command, str) and "ifctl" in command and (
        " hook " in f" {command} " or " guard tool" in f" {command} ")


def hook_config(agent: str, existing: dict[str, Any], ifctl: str, swarm_id: str | None,
                where: dict[str, str] | None = None) -> dict[str, Any]:
    """``existing`` (a client's hook file, parsed) with our hooks in it, and
    nothing else changed: earlier ``ifctl hook`` entries are replaced."""
    if agent not in _HOOKS:
        raise ConfigurationError(f"--agent {agent!r}: hooks are installed for claude, codex and cursor")
    config: dict[str, Any] = json.loads(json.dumps(existing))  # a deep copy of plain JSON
    hooks = config.setdefault("hooks", {})
    if not isinstance(hooks, dict):
        raise ConfigurationError(f"its \"hooks\" is a {type(hooks).__name__}, not an object")
    extra = {**({"--swarm": swarm_id} if swarm_id else {}), **(where or {})}
    suffix = "".join(f" {flag} {shlex.quote(value)}" for flag, value in extra.items())
    if agent == "cursor":
        config.setdefault("version", 1)
    for client_event, event, matcher, timeout in _HOOKS[agent]:
        command = (f"{shlex.quote(ifctl)} guard tool --agent {agent}{suffix}" if event == "guard"
                   else f"{shlex.quote(ifctl)} hook {agent} {event}{suffix}")
        entries = hooks.get(client_event, [])
        if not isinstance(entries, list):
            raise ConfigurationError(f"hooks.{client_event} is a {type(entries).__name__}, not a list")
        if agent == "cursor":
            kept = [e for e in entries if not (isinstance(e, dict) and _ours(e.get("command")))]
            mine: dict[str, Any] = {"command": command, "timeout": timeout}
            if event == "stop":
                mine["loop_limit"] = CURSOR_LOOP_LIMIT
            hooks[client_event] = [*kept, mine]
            continue
        kept = []
        for group in entries:
            if isinstance(group, dict) and isinstance(group.get("hooks"), list):
                group = {**group, "hooks": [h for h in group["hooks"]
                                            if not (isinstance(h, dict) and _ours(h.get("command")))]}
                if not group["hooks"]:
                    continue
            kept.append(group)
        handler = {"type": "command", "command": command, "timeout": timeout}
        hooks[client_event] = [*kept, {**({"matcher": matcher} if matcher else {}), "hooks": [handler]}]
    return config


def install_hooks(agent: str, path: Path, ifctl: str, swarm_id: str | None, *,
                  where: dict[str, str] | None = None, write: bool = True) -> dict[str, Any]:
    """Merge our hooks into the client's file at ``path`` (created if
    missing, replaced atomically); returns the new content. ``write=False``
    only computes it."""
    existing: dict[str, Any] = {}
    if path.exists():
        from infrafabric.bus.bounds import read_limited

        raw = read_limited(path, what=str(path), limit=FILE_LIMIT)
        try:
            parsed = json.loads(raw) if raw.strip() else {}
        except (ValueError, RecursionError) as exc:
            raise ConfigurationError(f"{path}: not JSON ({str(exc)[:80]}); fix or move it, then install "
                                     "again") from exc
        if not isinstance(parsed, dict):
            raise ConfigurationError(f"{path}: a JSON object was expected, not {type(parsed).__name__}")
        existing = parsed
    try:
        config = hook_config(agent, existing, ifctl, swarm_id, where)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{path}: {exc.message}") from exc
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    return config
