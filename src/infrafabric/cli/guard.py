"""``ifctl guard``: refuse commits and edits that trespass on another claim."""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import sys
from pathlib import Path

import click
from rich.markup import escape

from infrafabric.cli.app import Outcome, contract, run_async, settings
from infrafabric.cli.common import ID, READ_ONLY, Check, falsify_report, run_protocol
from infrafabric.errors import ConfigurationError, InfraFabricError

__all__ = ["guard"]

SWARM_ENV = "IF_SWARM_ID"
#: marks the pre-commit hook ``ifctl guard install`` writes (a hook without it is never replaced)
MARK = "# installed by `ifctl guard install`"


@click.group()
def guard() -> None:
    """Refuse commits and edits of what another agent's live claim holds.

    \b
    A claim holds its task's paths (the board's Paths/paths) and branch. The
    guards refuse, naming the holder and the task:
      pre-commit  a commit that touches paths another live claim holds, or
                  goes on a branch another swarm's claim holds (git hook)
      tool        an agent's edit of such paths, or a git checkout/switch of
                  such a branch (a PreToolUse hook of Claude Code and Codex)
    They fail open only when the fleet's bus cannot be reached, and say so.

    \b
    Examples:
      ifctl guard install --swarm session-7        # the git pre-commit hook
      ifctl hooks install --agent claude           # includes the tool guard
      ifctl guard pre-commit --swarm session-7 --why
    """


@guard.command("pre-commit")
@click.option("--swarm", "swarm_id", type=ID, metavar="ID",
              help=f"Whose claims are yours [default: ${SWARM_ENV}; else only the task whose branch is "
                   "checked out here].")
@contract
def pre_commit(swarm_id: str | None) -> Outcome:
    """Check the staged changes (run by git before a commit; exit 1 refuses it).

    A staged path covered by another live claim's path lease is refused, and
    so is a commit on a task's branch whose claim another swarm holds. Your
    own claims (--swarm), and the task whose branch is checked out in this
    worktree, are never refused.

    Example: ifctl guard pre-commit --swarm session-7 --why
    """
    from infrafabric.fleet import open_fleet
    from infrafabric.workspace import guard as check

    s = settings()
    swarm = swarm_id or os.environ.get(SWARM_ENV, "").strip() or None
    if swarm is not None:
        ID.convert(swarm, None, None)  # the same check as --swarm

    async def go() -> check.Verdict:
        async with open_fleet(s.bus, home=s.home, watch=False, actor=swarm or "guard",
                              autostart=False) as fleet:
            return await check.check(fleet.coordinator, cwd=Path.cwd(), staged=True, swarm_id=swarm)

    try:
        verdict = run_async(go())
    except InfraFabricError as exc:
        if not exc.transient and not exc.exit_code == 3:
            raise
        note = f"the fleet's bus is unreachable, so this commit is not checked: {exc.message}"
        s.err.print(f"ifctl guard: {escape(note)}")
        return Outcome(data={"allowed": True, "checked": False, "notes": [note]}, lines=[],
                       why=[escape(note)])
    if s.falsify:  # it only reads: the report is the verdict
        checks = [Check(f"{c} is nobody else's", not any(r.startswith(c) for r in verdict.refusals))
                  for c in verdict.checked]
        checks.append(Check("no refusal", verdict.allowed, "; ".join(verdict.refusals)))
        return falsify_report(checks, summary=READ_ONLY)
    lines = [f"refused: {escape(r)}" for r in verdict.refusals]
    if verdict.refusals:
        lines.append("commit only your own task's paths (or wait for the holder to finish)")
    why = [escape(n) for n in verdict.notes] + [f"checked {escape(c)}" for c in verdict.checked] + [
        f"as {escape(swarm)}" if swarm else "as no swarm: only this worktree's task is yours"]
    return Outcome(data={**verdict.as_dict(), "checked": True, "swarm_id": swarm}, lines=lines, why=why,
                   exit_code=0 if verdict.allowed else 1)


@guard.command("tool", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                         "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def tool(args: tuple[str, ...]) -> None:
    """A PreToolUse hook (reads the client's payload on stdin; see `ifctl hooks install`).

    \b
    Usage: ifctl guard tool [--agent claude|codex] [--swarm ID]
    Refuses an edit of a path another live claim's path lease covers, and a
    git checkout/switch of a branch another claim holds (the client is told
    the holder and the task). Fails open only when the bus is unreachable.
    """
    from infrafabric.agent.toolguard import main as run_guard

    run_protocol(run_guard, args)


@guard.command("install")
@click.option("--swarm", "swarm_id", type=ID, metavar="ID",
              help=f"Bake this swarm id into the hook [default: ${SWARM_ENV} when git runs it].")
@contract
def install(swarm_id: str | None) -> Outcome:
    """Install `ifctl guard pre-commit` as this repository's git pre-commit hook.

    It goes where git looks (core.hooksPath, else the common .git/hooks, so
    every worktree of the repository has it). A pre-commit hook that is not
    ours is never replaced: you are told to call the guard from it.

    Example: ifctl guard install --swarm session-7
    """
    from infrafabric.workspace.git import git, repo_top

    s = settings()
    top = repo_top()
    hooks_dir = Path(git("rev-parse", "--git-path", "hooks", cwd=top).stdout.strip())
    hooks_dir = hooks_dir if hooks_dir.is_absolute() else top / hooks_dir
    path = hooks_dir / "pre-commit"
    ifctl = shutil.which("ifctl") or str(Path(sys.executable).with_name("ifctl"))
    command = f"exec {shlex.quote(ifctl)} guard pre-commit"
    if swarm_id:
        command += f" --swarm {shlex.quote(swarm_id)}"
    body = f"#!/bin/sh\n{MARK}\n{command}\n"
    foreign = path.exists() and MARK not in path.read_text(errors="replace")
    if s.falsify:
        return falsify_report([Check(f"the repository at {top}", True),
                               Check(f"{path} is absent or ours", not foreign,
                                     "another pre-commit hook is there" if foreign else "")],
                              summary=f"would write {path}: {command}")
    if foreign:
        raise ConfigurationError(f"{path} is another pre-commit hook; not replacing it",
                                 hint=f"add this line to it: {command.removeprefix('exec ')}")
    if not s.falsify:
        hooks_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".if-tmp")
        tmp.write_text(body)
        tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        tmp.replace(path)
    verb = "would write" if s.falsify else "wrote"
    return Outcome(data={"path": str(path), "command": command, "written": not s.falsify},
                   lines=[f"{verb} {path}: {escape(command)}"],
                   why=["git runs it before every commit in every worktree of the repository",
                        "it exits 1 (refusing the commit) when a staged path or the branch is another "
                        "live claim's"])
