"""``ifctl task|board|swarm|blocker|events``: the coordinator from the command line."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.markup import escape
from rich.table import Table

from infrafabric.bus.bounds import parse_dollars
from infrafabric.bus.layout import push_subject
from infrafabric.cli.app import (
    EXIT_REFUSED,
    EXIT_STOPPED,
    Outcome,
    Settings,
    contract,
    settings,
    terminal_safe,
)
from infrafabric.cli.common import (
    ID,
    READ_ONLY,
    Check,
    bus_check,
    falsify_report,
    via_gateway,
    who,
    with_fleet,
)
from infrafabric.cli.fast import LEASE_MAX, LEASE_MIN
from infrafabric.cli.output import print_table
from infrafabric.coordinator import DEFAULT_LEASE_TTL, ClaimOutcome, IFCoordinator, Task, TaskStatus
from infrafabric.errors import ConfigurationError, SwarmStoppedError, TaskNotFoundError
from infrafabric.fleet import Fleet
from infrafabric.governor import format_usd
from infrafabric.governor.detect import detect_capabilities
from infrafabric.workspace import finished_head, open_worktree
from infrafabric.workspace.handoff import check_root

T = TypeVar("T")

#: the formats ``board import`` reads and ``board export`` writes
BOARD_FORMAT_NAMES = ("md", "yaml", "json", "gh-issues", "taskmaster", "backlog", "speckit")

STATUS_STYLE = {
    TaskStatus.BLOCKED: "red", TaskStatus.AVAILABLE: "blue", TaskStatus.CLAIMED: "yellow",
    TaskStatus.COMPLETED: "green", TaskStatus.FAILED: "bold red", TaskStatus.CANCELLED: "dim",
}


def with_coordinator(fn: Callable[[IFCoordinator], Awaitable[T]], *, watch: bool = False,
                     lease_ttl: float | None = None) -> T:
    """Run ``fn`` with the fleet's coordinator (governed and witnessed) on the configured bus."""
    return with_fleet(lambda fleet: fn(fleet.coordinator), watch=watch, lease_ttl=lease_ttl)


def task_row(task: Task, now: float) -> dict[str, Any]:
    lease = None
    if task.status is TaskStatus.CLAIMED and task.lease_until is not None:
        lease = round(task.lease_until - now, 1)
    return {"id": task.id, "title": task.title, "status": task.status.value, "kind": task.kind.value,
            "owner": task.owner, "lease_left_s": lease, "dependencies": task.dependencies,
            "capabilities": task.capabilities, "priority": task.priority, "attempts": task.attempts}


def claim_outcome(outcome: ClaimOutcome, s: Settings) -> Outcome:
    data: dict[str, Any] = {"won": outcome.won, "task_id": outcome.task_id, "swarm_id": outcome.swarm_id,
                            "reason": outcome.reason, "claim_id": outcome.claim_id}
    if outcome.task is not None:
        data["task"] = json.loads(outcome.task.model_dump_json())
    if s.falsify:
        data["mode"] = "falsify"
        data["would_fail"] = not outcome.won
    verb = "would claim" if s.falsify else "claimed"
    line = (f"{outcome.swarm_id} {verb} {outcome.task_id}"
            + (f" (claim {outcome.claim_id})" if outcome.claim_id else "")
            if outcome.won
            else f"{outcome.swarm_id} did not claim {outcome.task_id}: {escape(outcome.reason)}")
    return Outcome(data=data, lines=[line], why=outcome.checks, exit_code=0 if outcome.won else EXIT_REFUSED)


def _status_why(t: Task, now: float) -> list[str]:
    """Why a task has its status (for --why)."""
    why = {
        TaskStatus.BLOCKED: f"blocked: waiting on dependencies {', '.join(t.dependencies)} to complete",
        TaskStatus.AVAILABLE: "available: every dependency is complete"
                              + ("" if t.dependencies else " (it has none)"),
        TaskStatus.CLAIMED: f"claimed by {escape(t.owner or '-')}"
                            + (f"; the lease lapses in {t.lease_until - now:.1f} s unless renewed"
                               if t.lease_until else ""),
        TaskStatus.COMPLETED: "completed: its dependents no longer wait on it",
        TaskStatus.FAILED: f"failed after {t.attempts} of {t.max_attempts} attempts",
        TaskStatus.CANCELLED: "cancelled",
    }[t.status]
    return [why, f"{len(t.history)} transitions recorded in the task's history",
            "status is derived from dependencies and claims on the bus, never set by hand"]


def falsify_owned(problems: list[str], op: str, task_id: str) -> Outcome:
    lines = [f"FAIL {p}" for p in problems] or [f"ok   {op} {task_id} would succeed"]
    return Outcome(data={"mode": "falsify", "would_fail": bool(problems), "problems": problems},
                   lines=lines, why=lines, exit_code=EXIT_REFUSED if problems else 0)


def parse_result(text: str | None) -> Any:
    """``--result``: JSON when it parses as JSON, else the text as given (a
    document too deep or with a 4,300-digit integer is kept as text too)."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def usd_to_micros(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise ConfigurationError(f"--budget {text!r} is not a number of dollars") from exc
    if value < 0 or value != value.quantize(Decimal("0.000001")):
        raise ConfigurationError(f"--budget {text!r} must be >= 0 with at most 6 decimals")
    return int(value * 1_000_000)


# -- task -----------------------------------------------------------------------------

swarm_option = click.option("--swarm", "swarm_id", required=True, type=ID, envvar="IF_SWARM_ID",
                            help="The acting swarm [env: IF_SWARM_ID].")
claim_option = click.option("--claim", "claim_id", metavar="TOKEN",
                            help="The claim token `task claim|next` printed (fencing: refused if the "
                                 "task was claimed again since). Always pass it.")


@click.group()
def task() -> None:
    """Create, claim, renew, release, complete and fail tasks.

    \b
    Examples:
      ifctl task create P9.1 --title "Write docs" --cap docs:markdown
      ifctl task claim P9.1 --swarm session-5
      ifctl task next --swarm session-5 --wait 60 --json
    """


@task.command("create")
@click.argument("task_id", type=ID)
@click.option("--title", required=True, help="One-line title.")
@click.option("--description", default="", help="Longer description.")
@click.option("--dep", "deps", multiple=True, metavar="ID", help="A dependency (repeatable).")
@click.option("--cap", "caps", multiple=True, metavar="CAP", help="A required capability (repeatable).")
@click.option("--kind", type=click.Choice(["critical", "filler"]), default="critical", show_default=True)
@click.option("--priority", type=int, default=0, show_default=True, help="Higher is handed out first.")
@click.option("--estimate", type=click.FloatRange(min=0), help="Estimate in hours.")
@click.option("--model", help="Preferred model.")
@click.option("--deliverable", help="What the task produces.")
@click.option("--budget", metavar="USD", help="Most the task may cost, in dollars (e.g. 2.50).")
@click.option("--path", "paths", multiple=True, metavar="GLOB",
              help="A path pattern the task will touch, relative to the repository's top (repeatable), "
                   "e.g. 'src/parser/**'.")
@click.option("--branch", metavar="NAME", help="The git branch its work goes on [default: if/<task-id>].")
@contract
def task_create(task_id: str, title: str, description: str, deps: tuple[str, ...], caps: tuple[str, ...],
                kind: str, priority: int, estimate: float | None, model: str | None,
                deliverable: str | None, budget: str | None, paths: tuple[str, ...],
                branch: str | None) -> Outcome:
    """Put a task on the board; blocked until its dependencies complete.

    \b
    Examples:
      ifctl task create P9.2 --title "Tests" --dep P9.1 --cap python --priority 2
      ifctl task create P9.3 --title "Parser" --path 'src/parser/**' --path 'tests/test_parser.py'
    """
    s = settings()
    spec = {"id": task_id, "title": title, "description": description, "dependencies": list(deps),
            "capabilities": list(caps), "kind": kind, "priority": priority,
            "estimate_hours": None if estimate is None else str(estimate), "model": model,
            "deliverable": deliverable, "budget_micros": usd_to_micros(budget), "paths": list(paths),
            "branch": branch}
    validated = IFCoordinator.validate_spec(spec)

    async def go(coord: IFCoordinator) -> Outcome:
        if s.falsify:
            problems = []
            if await coord.tasks.exists(task_id):
                problems.append(f"task {task_id!r} already exists")
            for dep in validated.dependencies:
                if not await coord.tasks.exists(dep):
                    problems.append(f"dependency {dep!r} does not exist")
            return falsify_owned(problems, "create", task_id)
        created = await coord.create_task(validated)
        return Outcome(data=task_row(created, time.time()),
                       lines=[f"created {created.id} ({created.status.value})"],
                       why=[f"status {created.status.value}: derived from dependencies "
                            f"{created.dependencies or 'none'}"])

    return with_coordinator(go)


@task.command("show")
@click.argument("task_id", type=ID)
@contract
def task_show(task_id: str) -> Outcome:
    """Show one task with its live state and history.

    Example: ifctl task show P0.1.2 --json
    """
    s = settings()

    async def go(coord: IFCoordinator) -> Outcome:
        if s.falsify:
            found = await coord.tasks.exists(task_id)
            return falsify_report([await bus_check(coord.bus),
                                   Check(f"task {task_id} exists", found, "" if found else "no such task")],
                                  summary=READ_ONLY)
        t = await coord.get_task(task_id)
        now = time.time()
        lines = [f"[bold]{t.id}[/bold] {escape(t.title)}",
                 f"  status [{STATUS_STYLE[t.status]}]{t.status.value}[/] kind {t.kind.value} "
                 f"priority {t.priority} attempts {t.attempts}/{t.max_attempts}",
                 f"  owner {escape(t.owner or '-')}" + (f", lease {t.lease_until - now:.1f} s left"
                                                 if t.lease_until else ""),
                 f"  dependencies {', '.join(t.dependencies) or 'none'}; "
                 f"capabilities {', '.join(t.capabilities) or 'none'}"]
        if t.description:
            lines.append(f"  {escape(t.description)}")
        if t.progress:
            lines.append(f"  progress: {escape(t.progress)}")
        lines += [f"  {h.to.value:<9} by {escape(h.by or '-')}: {escape(h.reason)}" for h in t.history]
        return Outcome(data=json.loads(t.model_dump_json()), lines=lines, why=_status_why(t, now))

    return with_coordinator(go)


worktree_option = click.option(
    "--worktree", "worktree", metavar="DIR", type=click.Path(file_okay=False, path_type=Path),
    help="Make (or reuse) a git worktree for the claimed task under DIR, as DIR/<task-id> on the task's "
         "branch (if/<task-id> unless the board names one), from the repository around the current "
         "directory; its path is printed. A task taken over after a lapse gets the previous holder's "
         "branch, commits and last progress note.")


async def _with_worktree(coord: IFCoordinator, outcome: Outcome, won: ClaimOutcome,
                         root: Path | None) -> Outcome:
    """Open the won claim's worktree (``--worktree``) and say where it is."""
    if root is None or not won.won or won.claim_id is None:
        return outcome
    handoff = await open_worktree(coord, won, root)
    outcome.data["workspace"] = handoff.as_dict()
    outcome.lines += [escape(line) for line in handoff.lines()]
    return outcome


lease_option = click.option("--lease", "lease_ttl", type=click.FloatRange(min=LEASE_MIN, max=LEASE_MAX),
                            default=DEFAULT_LEASE_TTL, show_default=True,
                            help="Seconds the claim lasts without a heartbeat; heartbeats renew it for "
                                 "as long.")


@task.command("claim")
@click.argument("task_id", type=ID)
@swarm_option
@lease_option
@worktree_option
@contract
def task_claim(task_id: str, swarm_id: str, lease_ttl: float, worktree: Path | None) -> Outcome:
    """Claim a task (one compare-and-swap). Exit 0 if won, 1 if not, 4 if the
    governor has stopped the swarm (breaker open, budget spent).

    Example: ifctl task claim P0.1.1 --swarm session-7 --worktree ../wt --why
    """
    s = settings()
    if worktree is not None:
        check_root(worktree, task_id=task_id)  # bad input is refused before anything is claimed
    return with_coordinator(lambda c: _claim(c, swarm_id, task_id, s, worktree), lease_ttl=lease_ttl)


async def _claim(coord: IFCoordinator, swarm_id: str, task_id: str, s: Settings,
                 worktree: Path | None = None) -> Outcome:
    won = await coord.try_claim(swarm_id, task_id, dry_run=s.falsify)
    outcome = claim_outcome(won, s)
    if not s.falsify:
        outcome = await _with_worktree(coord, outcome, won, worktree)
    if outcome.exit_code and not s.falsify and await coord.get_swarm(swarm_id) is not None:
        stopped = await coord.policy.stopped(swarm_id)
        if stopped is not None:  # the same exit as `task next`: the agent's loop must stop, not retry
            outcome.exit_code = EXIT_STOPPED
            outcome.data.update(stopped=True, hint=stopped.hint)
            outcome.lines.append(f"{swarm_id} is stopped: {escape(stopped.message)}")
            if stopped.hint:
                outcome.lines.append(f"to resume: {escape(stopped.hint)}")
    return outcome


def _owned_why(swarm_id: str, claim_id: str | None, result: str) -> list[str]:
    return [f"{swarm_id} holds the claim" + (" and its token matches (fencing)" if claim_id
                                              else " (no --claim token given: ownership only)"),
            "one compare-and-swap on the task record: a concurrent change makes it retry or refuse",
            result]


def _owned_command(op: str, task_id: str, swarm_id: str, claim_id: str | None,
                   act: Callable[[IFCoordinator], Awaitable[Outcome]]) -> Outcome:
    s = settings()

    async def go(coord: IFCoordinator) -> Outcome:
        if s.falsify:
            return falsify_owned(await coord.check_owned(swarm_id, task_id, claim_id), op, task_id)
        outcome = await act(coord)
        if claim_id is None and op != "heartbeat":
            outcome.data["unfenced"] = True
            s.err.print(f"warning: no --claim token: {op} acted on whatever claim {escape(swarm_id)} "
                        "holds now (witnessed as unfenced); if two workers share that swarm id, pass the "
                        "token `task claim|next` printed")
        return outcome

    return with_coordinator(go)


@task.command("heartbeat")
@click.argument("task_id", type=ID)
@swarm_option
@claim_option
@click.option("--lease", "lease_ttl", type=click.FloatRange(min=LEASE_MIN, max=LEASE_MAX),
              help="Renew for this many seconds, which becomes the claim's lease "
                   "[default: the lease it was claimed with].")
@contract
def task_heartbeat(task_id: str, swarm_id: str, claim_id: str | None, lease_ttl: float | None) -> Outcome:
    """Renew the lease on a claimed task, for as long as it was claimed with
    (`task claim|next --lease`), unless --lease says otherwise.

    With the swarm's `ifctl mcp` running on this machine, the command asks it
    to renew (one round trip, no library loaded: tens of milliseconds). With
    none, the first heartbeat acts on the bus itself and leaves a persisted
    connection behind that answers the next ones as quickly: heartbeats only,
    for commands with the same bus settings, until IF_PERSIST seconds pass
    without one (default 600; 0 turns it off) or `ifctl coordinator stop`.
    With --why, --trace or --mode, the command always acts itself.

    Example: ifctl task heartbeat P0.1.1 --swarm session-7 --claim b87ef3abb34144a3
    """
    from infrafabric.agent.control import persist_seconds

    try:
        persist_seconds(strict=True)
    except ValueError as exc:  # before anything acts: bad input changes nothing
        raise ConfigurationError(str(exc), hint="unset IF_PERSIST for the default (600 s)") from None
    remote = via_gateway("task_heartbeat", {"task_id": task_id, "claim_id": claim_id}, swarm_id,
                         lambda d: [f"lease on {task_id} renewed for {d['lease_s']} s"])
    if remote is not None:
        return remote

    async def act(coord: IFCoordinator) -> Outcome:
        until = await coord.heartbeat(swarm_id, task_id, claim_id, lease_ttl=lease_ttl)
        left = until - time.time()
        _leave_connection(settings())
        return Outcome(data={"task_id": task_id, "lease_until": until, "lease_left_s": round(left, 1)},
                       lines=[f"lease on {task_id} renewed for {left:.1f} s"],
                       why=_owned_why(swarm_id, claim_id, (
                           f"the lease was renewed for {lease_ttl:g} s (--lease), now the claim's lease"
                           if lease_ttl else "the lease was renewed for the lease it was claimed with")))

    return _owned_command("heartbeat", task_id, swarm_id, claim_id, act)


def _leave_connection(s: Settings) -> None:
    """After a heartbeat that acted itself, leave the command line's persisted
    connection behind (:mod:`infrafabric.agent.persist`), so that the next one
    with these settings costs tens of milliseconds; only when this command's
    bus and state directory are the ones the environment names (the next
    command finds it by them), and never for want of it."""
    if s.falsify or (s.bus or None) != (os.environ.get("IF_BUS_URL") or None) \
            or (s.home or None) != (os.environ.get("IF_HOME") or None):
        return
    from infrafabric.agent.persist import spawn

    spawn()


@task.command("release")
@click.argument("task_id", type=ID)
@swarm_option
@claim_option
@click.option("--reason", default="released", help="Why it is given back.")
@contract
def task_release(task_id: str, swarm_id: str, claim_id: str | None, reason: str) -> Outcome:
    """Give a claimed task back; it is pushed to the swarms that can take it.

    Example: ifctl task release P0.1.1 --swarm session-7 --claim b87ef3abb34144a3 --reason "needs GPU"
    """
    remote = via_gateway("task_release", {"task_id": task_id, "reason": reason, "claim_id": claim_id},
                         swarm_id, lambda d: [f"released {task_id}"])
    if remote is not None:
        return remote

    async def act(coord: IFCoordinator) -> Outcome:
        t = await coord.release_task(swarm_id, task_id, claim_id, reason)
        return Outcome(data=task_row(t, time.time()), lines=[f"released {task_id}"],
                       why=_owned_why(swarm_id, claim_id, f"now {t.status.value}; pushed to the swarms "
                                                          "that can take it"))

    return _owned_command("release", task_id, swarm_id, claim_id, act)


@task.command("complete")
@click.argument("task_id", type=ID)
@swarm_option
@claim_option
@click.option("--result", help="The result (JSON or text).")
@contract
def task_complete(task_id: str, swarm_id: str, claim_id: str | None, result: str | None) -> Outcome:
    """Complete a task you hold; its dependents become available.

    Example: ifctl task complete P0.1.1 --swarm session-7 --claim b87ef3abb34144a3 --result '{"pr": 12}'
    """
    remote = via_gateway("task_complete", {"task_id": task_id, "result": parse_result(result),
                                           "claim_id": claim_id},
                         swarm_id, lambda d: [f"completed {task_id}"])
    if remote is not None:
        return remote

    async def act(coord: IFCoordinator) -> Outcome:
        held = await coord.tasks.read(task_id)
        head = None if held is None else finished_head(held)  # its worktree's commit, when it has one here
        t = await coord.complete_task(swarm_id, task_id, parse_result(result), claim_id, head=head)
        lines = [f"completed {task_id}"]
        if t.workspace is not None:
            lines.append(f"its work: branch {t.workspace.branch}"
                         + (f" at {t.workspace.head[:12]}" if t.workspace.head else ""))
        return Outcome(data={**task_row(t, time.time()), "result": t.result,
                             "workspace": t.workspace.model_dump() if t.workspace else None},
                       lines=lines,
                       why=_owned_why(swarm_id, claim_id, "its dependents whose dependencies are now all "
                                                          "complete became available and were pushed"))

    return _owned_command("complete", task_id, swarm_id, claim_id, act)


@task.command("fail")
@click.argument("task_id", type=ID)
@swarm_option
@claim_option
@click.option("--error", "error", required=True, help="What went wrong.")
@contract
def task_fail(task_id: str, swarm_id: str, claim_id: str | None, error: str) -> Outcome:
    """Report a failed attempt: retried until max attempts, then failed.

    Example: ifctl task fail P0.1.1 --swarm session-7 --claim b87ef3abb34144a3 --error "tests red"
    """
    remote = via_gateway("task_fail", {"task_id": task_id, "error": error, "claim_id": claim_id}, swarm_id,
                         lambda d: [f"{task_id}: attempt {d.get('attempts')} failed; now {d.get('status')}"])
    if remote is not None:
        return remote

    async def act(coord: IFCoordinator) -> Outcome:
        t = await coord.fail_task(swarm_id, task_id, error, claim_id)
        retry = (f"{t.max_attempts - t.attempts} attempts left: available again"
                 if t.status is TaskStatus.AVAILABLE
                 else f"attempt {t.attempts} of {t.max_attempts}: now {t.status.value}")
        return Outcome(data=task_row(t, time.time()),
                       lines=[f"{task_id}: attempt {t.attempts} failed; now {t.status.value}"],
                       why=_owned_why(swarm_id, claim_id, retry))

    return _owned_command("fail", task_id, swarm_id, claim_id, act)


@task.command("reopen")
@click.argument("task_id", type=ID)
@click.option("--by", metavar="NAME", help="Who reopens it [default: $USER].")
@click.option("--reason", default="", help="Why it gets another round of attempts.")
@contract
def task_reopen(task_id: str, by: str | None, reason: str) -> Outcome:
    """Give a failed task (every attempt used) a fresh set of attempts. It
    becomes available again (blocked while a dependency is open) and is pushed
    to the swarms that can take it. Witnessed, with who did it.

    Example: ifctl task reopen P0.1.1 --by alice --reason "flaky CI fixed"
    """
    s = settings()
    actor = who(by)

    async def go(coord: IFCoordinator) -> Outcome:
        if s.falsify:
            t = await coord.tasks.read(task_id)
            failed = t is not None and t.status is TaskStatus.FAILED
            detail = ("no such task" if t is None else f"attempts {t.attempts}/{t.max_attempts}; "
                      "would reopen it" if failed else f"it is {t.status.value}: only a failed task reopens")
            return falsify_report([await bus_check(coord.bus),
                                   Check(f"task {task_id} failed", failed, detail)])
        t = await coord.reopen_task(task_id, by=actor, reason=reason)
        return Outcome(data=task_row(t, time.time()),
                       lines=[f"{task_id} reopened by {escape(actor)}: now {t.status.value}, "
                              f"{t.max_attempts} attempts"],
                       why=["only a failed task reopens: its attempts start again from 0",
                            "available if every dependency is completed, else blocked; pushed if available",
                            "one compare-and-swap on the task record; witnessed as task_reopened"])

    return with_coordinator(go)


@task.command("next")
@swarm_option
@lease_option
@click.option("--wait", type=click.FloatRange(min=0), default=0, show_default=True,
              help="Seconds to wait for a pushed task when none is available now.")
@worktree_option
@contract
def task_next(swarm_id: str, lease_ttl: float, wait: float, worktree: Path | None) -> Outcome:
    """Claim the best task this swarm can take (critical path first, then
    priority), waiting for a push if none is available. Replaces polling.

    \b
    Exit codes (for an agent's shell loop):
      0  claimed: the task, its claim token and lease are printed
      1  nothing to do yet: no task it covers is free within --wait
         (--why / --json say why: claimed by whom, blocked by what)
      4  stopped by the governor (breaker open, budget spent): waiting will
         not help; the message names the command that resumes it
    A loop should go on after 1 and stop after 4:
      while ifctl task next --swarm S --wait 45 --json > t.json || [ $? = 1 ]; do ...

    Example: ifctl task next --swarm session-1 --wait 30 --worktree ../wt --json
    """
    s = settings()
    from infrafabric.agent.control import is_gateway

    if worktree is not None and is_gateway(s.bus):
        raise ConfigurationError("--worktree is not available through the agent gateway: the worktree "
                                 "would be made on the coordinator's machine",
                                 hint="drop --worktree; check the task's branch (if/<task-id>) out here "
                                      "yourself")
    if worktree is not None:
        check_root(worktree)  # bad input is refused before anything is claimed
    remote = via_gateway(
        "task_next", {"wait_s": wait, "lease_s": lease_ttl if lease_ttl != DEFAULT_LEASE_TTL else None,
                      "workspace": None}, swarm_id,
        lambda d: ([f"claimed {d['task']['id']}: {escape(d['task']['title'])}",
                    f"claim token {d.get('claim_id')}, lease {d.get('lease_s')} s"] if d.get("task")
                   else [f"no task for {swarm_id}: "
                         f"{escape(str(d.get('stopped') or d.get('summary') or ''))}"]),
        lambda d: 0 if d.get("task") else EXIT_STOPPED if d.get("stopped") else EXIT_REFUSED)
    if remote is not None:
        return remote

    async def go(coord: IFCoordinator) -> Outcome:
        if s.falsify:
            swarm = await coord.get_swarm(swarm_id)
            problems = [] if swarm else [f"swarm {swarm_id!r} is not registered"]
            stopped = await coord.policy.stopped(swarm_id) if swarm else None
            if stopped is not None:
                problems.append(stopped.message)
            candidates = [t for t in await coord.list_tasks()
                          if t.status in (TaskStatus.AVAILABLE, TaskStatus.BLOCKED, TaskStatus.CLAIMED)]
            for t in candidates if not problems else []:
                trial = await coord.try_claim(swarm_id, t.id, dry_run=True)
                if trial.won:
                    return claim_outcome(trial, s)
            if not problems:
                problems.append("no task is claimable by this swarm now")
            return falsify_owned(problems, "next", "")
        try:
            outcome = await coord.next_task(swarm_id, wait=wait)
        except SwarmStoppedError:
            outcome = None  # explained below, with the same words as every empty hand
        except TaskNotFoundError as exc:  # not registered: say which board was asked
            raise TaskNotFoundError(f"{exc.message} ({s.bus_origin()})",
                                    hint=f"ifctl swarm register {swarm_id} --cap DOMAIN:SKILL, on this "
                                         "bus; or point IF_BUS_URL at the fleet's bus") from exc
        if outcome is not None:
            return await _with_worktree(coord, claim_outcome(outcome, s), outcome, worktree)
        empty = await coord.explain_empty(swarm_id)
        halted = empty.stopped is not None
        line = (f"{swarm_id} is stopped: {escape(empty.summary)}" if halted
                else f"no task for {swarm_id}" + (f" within {wait:g} s" if wait else "")
                + f": {escape(empty.summary)}")
        lines = [line] + ([f"to resume: {escape(empty.stopped.hint)}"]
                          if empty.stopped is not None and empty.stopped.hint else [])
        why = [escape(d) for d in empty.details] + [
            f"bus: {escape(s.bus_origin())}",
            "the governor stops a swarm whose breaker is open or budget is spent: exit 4, do not retry"
            if halted else ("read the ready index and tried the tasks it offered in hand-out order"
                            + ("; then waited for pushes" if wait else "; no waiting (--wait 0)"))]
        return Outcome(data={"won": False, "swarm_id": swarm_id, "stopped": halted, **empty.as_dict(),
                             "bus": s.bus_origin()},
                       lines=lines, why=why, exit_code=EXIT_STOPPED if halted else EXIT_REFUSED)

    return with_coordinator(go, watch=wait > 0, lease_ttl=lease_ttl)


# -- swarm ------------------------------------------------------------------------------


@click.group()
def swarm() -> None:
    """Register swarms and list them.

    \b
    Examples:
      ifctl swarm register session-1 --cap integration:ndi --cap docs:markdown
      ifctl swarm list --json
    """


@swarm.command("register")
@click.argument("swarm_id", type=ID)
@click.option("--cap", "caps", multiple=True, metavar="CAP", help="A capability (repeatable).")
@contract
def swarm_register(swarm_id: str, caps: tuple[str, ...]) -> Outcome:
    """Register (or update) a swarm and its capabilities.

    Example: ifctl swarm register session-7 --cap infra:distributed-systems
    """
    s = settings()

    async def go(fleet: Fleet) -> Outcome:
        coord = fleet.coordinator
        if s.falsify:
            from infrafabric.coordinator.models import SwarmRecord

            try:
                SwarmRecord(id=swarm_id, capabilities=list(caps))
                valid = Check("swarm id and capabilities valid", True, ", ".join(caps) or "no capabilities")
            except ValueError as exc:
                valid = Check("swarm id and capabilities valid", False, str(exc).splitlines()[0])
            known = await coord.get_swarm(swarm_id) is not None
            return falsify_report([valid, await bus_check(coord.bus),
                                   Check("registration", True, "would update the existing swarm" if known
                                         else "would register a new swarm")])
        profile = await fleet.register_swarm(swarm_id, caps)
        offered = ", ".join(profile.capabilities) or "no capabilities"
        return Outcome(data=profile.model_dump(mode="json"), lines=[f"registered {profile.id}: {offered}"],
                       why=["the governor profile keeps any cost, reputation and budget set before; "
                            "set them with `ifctl governor register`"])

    return with_fleet(go)


@swarm.command("spawn")
@click.argument("swarm_id", type=ID)
@click.option("--path", "path", type=click.Path(exists=True, file_okay=False, path_type=Path), default=".",
              show_default=True, help="The swarm's code: capabilities are detected from it.")
@click.option("--cap", "caps", multiple=True, metavar="CAP", help="An extra capability (repeatable).")
@click.option("--budget", metavar="USD", help="Its budget in dollars (default: unmetered).")
@contract
def swarm_spawn(swarm_id: str, path: Path, caps: tuple[str, ...], budget: str | None) -> Outcome:
    """Register a swarm from its code: the capabilities found there (pyproject ->
    code-analysis:python, Cargo.toml -> code-analysis:rust, ...; the rules are in
    infrafabric.governor.detect), an optional budget, and its task subject.

    It starts nothing (the seeds call this "spawning"): run the agent yourself,
    e.g. `ifctl task next --swarm ID --wait 45` in its loop.

    Example: ifctl swarm spawn session-7 --path ./session7 --budget 25 --why
    """
    s = settings()
    found = detect_capabilities(path)
    capabilities = sorted(set(found) | set(caps))
    # checked before anything is written: a bad budget must not leave the swarm registered
    limit = None if budget is None else parse_dollars(budget, what="--budget", negative=False)
    evidence = [f"{cap}: {found.get(cap, 'given with --cap')}" for cap in capabilities]

    async def go(fleet: Fleet) -> Outcome:
        coord = fleet.coordinator
        if s.falsify:
            known = await coord.get_swarm(swarm_id) is not None
            return falsify_report(
                [Check("capabilities", bool(capabilities), ", ".join(capabilities)
                       or f"none found in {path} and none given with --cap"),
                 await bus_check(coord.bus),
                 Check("registration", True, ("would update the existing swarm" if known
                                              else "would register a new swarm")
                       + ("" if limit is None else f", budget {format_usd(limit)}"))],
                summary="; ".join(evidence))
        profile = await fleet.register_swarm(swarm_id, capabilities)
        if limit is not None:
            await fleet.governor.set_budget(swarm_id, limit)
        return Outcome(
            data={**profile.model_dump(mode="json"), "budget_micros": limit, "detected": found,
                  "subject": push_subject(swarm_id)},
            lines=[f"registered {swarm_id} from its code: {', '.join(capabilities) or 'no capabilities'}"
                   + (f"; budget {format_usd(limit)}" if limit is not None else "; unmetered"),
                   f"nothing was started: its agent takes work with "
                   f"`ifctl task next --swarm {swarm_id} --wait 45`"],
            why=evidence or [f"nothing in {path} matched a detection rule"])

    return with_fleet(go)


@swarm.command("list")
@contract
def swarm_list() -> Outcome:
    """List registered swarms.

    Example: ifctl swarm list
    """
    s = settings()

    async def go(coord: IFCoordinator) -> Outcome:
        swarms = await coord.list_swarms()
        if s.falsify:
            return falsify_report([await bus_check(coord.bus),
                                   Check("swarms readable", True, f"{len(swarms)} registered")],
                                  summary=READ_ONLY)
        return Outcome(data={"swarms": [r.model_dump() for r in swarms]},
                       lines=[f"{r.id}: {', '.join(r.capabilities) or '-'}" for r in swarms]
                       or ["no swarms registered"],
                       why=[f"{len(swarms)} swarm records under swarms/ on the bus",
                            "costs, reputations and budgets: ifctl governor status"])

    return with_coordinator(go)


# -- blocker / events ------------------------------------------------------------------


@click.group()
def blocker() -> None:
    """Report blockers to the orchestrator.

    Example: ifctl blocker report --swarm session-2 --task P0.1.2 --message "etcd is down"
    """


@blocker.command("report")
@swarm_option
@click.option("--task", "task_id", help="The blocked task.")
@click.option("--message", required=True, help="What blocks you.")
@click.option("--cap", "caps", multiple=True, metavar="CAP",
              help="A capability a helper needs (repeatable) [default: the task's, else those the message "
                   "asks for].")
@contract
def blocker_report(swarm_id: str, task_id: str | None, message: str, caps: tuple[str, ...] = ()) -> Outcome:
    """Publish a blocker to the orchestrator subject; the governor asks the
    swarms that offer the capabilities it needs for help: those given with
    --cap, else the blocked task's, else those its message asks for (the
    keyword rules of `board import`'s inference: "etcd is down" ->
    infra:distributed-systems).

    Example: ifctl blocker report --swarm session-2 --task P0.1.2 --message "needs P0.1.1" --cap python
    """
    s = settings()
    given = blocker_caps(caps)

    async def go(coord: IFCoordinator) -> Outcome:
        if s.falsify:
            known = await coord.get_swarm(swarm_id) is not None
            checks = [await bus_check(coord.bus),
                      Check(f"swarm {swarm_id}", True, "registered" if known
                            else "warning: not registered (the report is sent anyway)")]
            if task_id is not None:
                exists = await coord.tasks.exists(task_id)
                checks.append(Check(f"task {task_id}", True, "exists" if exists
                                    else "warning: no such task (the report is sent anyway)"))
            needed, source = await needed_by_blocker(coord, task_id, message, given)
            checks.append(Check("capabilities needed", True, f"{', '.join(needed) or 'none'} ({source})"))
            return falsify_report(checks, summary="would publish the blocker to the orchestrator subject")
        needed, source = await needed_by_blocker(coord, task_id, message, given)
        info: dict[str, Any] = {"task": task_id, "message": message}
        if needed:
            info.update(capabilities=needed, capabilities_from=source)
        report = await coord.detect_blocker(swarm_id, info)
        report.update(capabilities=needed, capabilities_from=source)
        help_ = report.get("help")
        return Outcome(data=report, lines=[f"blocker from {swarm_id} sent to the orchestrator"],
                       why=["published on the orchestrator's blockers subject (ifctl events, the "
                            "orchestrator and the governor listen)",
                            escape(f"capabilities needed: {', '.join(needed) or 'none'} ({source})"),
                            "the governor offered no help for it" if help_ is None
                            else f"the governor's answer: {escape(json.dumps(help_, default=str))}"])

    return with_coordinator(go)


@click.group()
def events() -> None:
    """Watch the board's transitions live.

    Example: ifctl events watch --json
    """


@events.command("watch")
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many events.")
@click.option("--from-revision", type=click.IntRange(min=1), help="Replay from this bus revision.")
@contract
def events_watch(count: int | None, from_revision: int | None) -> Outcome:
    """Print every task transition as it happens (JSON lines with --json).

    Example: ifctl events watch --count 10 --json
    """
    s = settings()

    async def go(coord: IFCoordinator) -> Outcome:
        if s.falsify:
            checks = [await bus_check(coord.bus)]
            if from_revision is not None:
                current = await coord.bus.revision()
                checks.append(Check("--from-revision not in the future", from_revision <= current + 1,
                                    f"the bus is at revision {current}"))
            return falsify_report(checks, summary=READ_ONLY)
        seen = 0
        async with coord.events(from_revision) as feed:
            async for ev in feed:
                if s.json:
                    click.echo(ev.model_dump_json())
                else:
                    s.console.print(terminal_safe(
                        f"{time.strftime('%H:%M:%S', time.localtime(ev.at))} "
                        f"{ev.task_id:<10} {ev.previous.value if ev.previous else '-':>9} -> "
                        f"[{STATUS_STYLE[ev.status]}]{ev.status.value}[/] "
                        f"{escape(ev.owner or '')} {escape(ev.reason)}"))
                seen += 1
                if count is not None and seen >= count:
                    break
        return Outcome(data={"events": seen}, streamed=True,
                       why=[f"{seen} transitions of task records, decoded from a watch on tasks/",
                            "heartbeats change no status and are not shown"])

    return with_coordinator(go)


# -- board -------------------------------------------------------------------------------


@click.group()
def board() -> None:
    """Import, show and export the task board.

    \b
    Examples:
      ifctl board import phase0-board.md
      ifctl board show
      ifctl board export --format md > board.md
    """


@board.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(list(BOARD_FORMAT_NAMES)),
              help="Input format (default: from the path and the content).")
@click.option("--caps-map", "caps_map", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path),
              help="A capability map (YAML): capabilities per task, extra inference rules, or "
                   "`infer: false` (see docs/board-format.md).")
@click.option("--infer/--no-infer", "infer", default=True, show_default=True,
              help="Infer capabilities for the tasks that list none, from their paths, section and words.")
@contract
def board_import(path: Path, fmt: str | None, caps_map: Path | None = None, infer: bool = True) -> Outcome:
    """Import a markdown, YAML or JSON board, all or nothing: nothing is
    written if the file has any error or a task already exists on the board,
    and a failure or an interruption (Ctrl-C, a concurrent import taking one
    of its ids) while writing removes what was written.

    Status: rows marked COMPLETED (or DONE) stay completed — that is finished
    work — and their dependents derive from them; every other task is
    available or blocked by its dependencies, whatever its status column says
    (contradictions are warned about). An owner on a CLAIMED row is reported,
    not carried over: claims are taken on the bus (`ifctl task claim`).

    Capabilities: a task that lists none gets capabilities inferred from its
    paths and deliverable, its section and the words of its title and
    description (--why names the rule behind each; --caps-map overrides,
    --no-infer switches it off).

    Formats (docs/board-format.md has each mapping): md, yaml, json; gh-issues
    (GitHub issues as `gh issue list` writes them: task GH-<number>, "Depends
    on #N" body lines and blocked-by links are dependencies, cap:NAME labels
    capabilities, closed issues completed); taskmaster (task-master's
    tasks.json: subtask M of task N is task N.M); backlog (Backlog.md's
    backlog/ directory, or one task file); speckit (Spec Kit's tasks.md:
    phases and [P] give the dependencies, [x] is completed).

    \b
    Examples:
      ifctl board import src/infrafabric/coordinator/data/phase0-board.md --why
      gh issue list --state all --limit 1000 \\
        --json number,title,body,labels,state,assignees > issues.json
      ifctl board import issues.json --format gh-issues
      ifctl board import .taskmaster/tasks/tasks.json
      ifctl board import backlog/
      ifctl board import specs/001-photo-albums/tasks.md --format speckit
    """
    from infrafabric.coordinator.board import load_board

    s = settings()
    parsed = load_board(path, fmt=fmt)
    parsed, inferred = infer_for_import(parsed, caps_map, infer)
    completed = {tid: parsed.owners.get(tid) for tid, st in parsed.statuses.items()
                 if st is TaskStatus.COMPLETED}
    claimed = {tid: parsed.owners[tid] for tid, st in parsed.statuses.items()
               if st is TaskStatus.CLAIMED and tid in parsed.owners}
    notes = [f"{tid} is CLAIMED by {owner} on the board: imported unclaimed (claims live on the bus: "
             f"ifctl task claim {tid} --swarm {owner})" for tid, owner in sorted(claimed.items())]

    async def go(coord: IFCoordinator) -> Outcome:
        existing = {t.id for t in await coord.list_tasks()}
        clashes = sorted(existing & {t.id for t in parsed.tasks})
        problems = []
        if clashes:
            shown = ", ".join(clashes[:8]) + (f" and {len(clashes) - 8} more" if len(clashes) > 8 else "")
            problems.append(f"{len(clashes)} of its tasks already exist on the board: {shown}")
        if s.falsify or problems:
            out = falsify_owned(problems, "import", str(path))
            out.lines += [f"warning: {w}" for w in parsed.warnings] + [f"note: {n}" for n in notes]
            if problems and not s.falsify:
                raise ConfigurationError(f"{path}: nothing imported: " + "; ".join(problems),
                                         hint="import into a fresh namespace or state directory")
            return out
        created = await coord.create_tasks(parsed.tasks, completed=completed)
        counts: dict[str, int] = {}
        for t in created:
            counts[t.status.value] = counts.get(t.status.value, 0) + 1
        return Outcome(
            data={"imported": len(created), "by_status": counts, "warnings": parsed.warnings,
                  "completed_on_board": sorted(completed), "claimed_on_board": claimed, "notes": notes},
            lines=[f"imported {len(created)} tasks from {path}: "
                   + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))]
            + [f"[yellow]warning:[/yellow] {escape(w)}" for w in parsed.warnings]
            + [f"note: {escape(n)}" for n in notes],
            why=["rows marked COMPLETED stay completed (finished work is not handed out again)",
                 "every other status is derived from dependencies, not from the board's status column",
                 "an owner on a CLAIMED row is reported, never silently dropped: claims live on the bus",
                 "tasks are created dependencies-first"])

    return with_inferred(with_coordinator(go), inferred)


@board.command("show")
@contract
def board_show() -> Outcome:
    """Show every task with its derived status, owner and lease.

    Example: ifctl board show --json
    """
    async def go(coord: IFCoordinator) -> Outcome:
        tasks = await coord.list_tasks()
        if settings().falsify:
            return falsify_report([await bus_check(coord.bus),
                                   Check("board readable", True, f"{len(tasks)} tasks")], summary=READ_ONLY)
        now = time.time()
        table = Table(title=f"{len(tasks)} tasks")
        for col in ("id", "status", "kind", "owner", "lease"):
            table.add_column(col, no_wrap=True)
        table.add_column("title", no_wrap=True, overflow="ellipsis", max_width=36)
        table.add_column("depends on", overflow="fold")
        for t in tasks:
            row = task_row(t, now)
            table.add_row(t.id, f"[{STATUS_STYLE[t.status]}]{t.status.value}[/]", t.kind.value,
                          escape(terminal_safe(t.owner or "-")),
                          "-" if row["lease_left_s"] is None else f"{row['lease_left_s']} s",
                          escape(terminal_safe(t.title)), ", ".join(t.dependencies) or "-")
        s = settings()
        if not s.json:
            print_table(s.console, table)
        counts: dict[str, int] = {}
        for t in tasks:
            counts[t.status.value] = counts.get(t.status.value, 0) + 1
        return Outcome(data={"tasks": [task_row(t, now) for t in tasks], "by_status": counts},
                       lines=[", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "board is empty"],
                       why=["status is derived from dependencies and claims, not from an imported "
                            "status column", "lease = seconds until a claim lapses unless renewed",
                            "ifctl task show ID --why explains one task"])

    return with_coordinator(go)


@board.command("export")
@click.option("--format", "fmt", type=click.Choice(list(BOARD_FORMAT_NAMES)), default="md", show_default=True)
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
              help="The directory to write (backlog: one task file per task; it must not hold them yet).")
@contract
def board_export(fmt: str, out: Path | None) -> Outcome:
    """Write the live board as markdown (with live status), JSON, YAML, a
    script of gh commands (gh-issues), task-master's tasks.json, Backlog.md
    task files (--out DIR) or a Spec Kit tasks.md. Completed tasks are
    written completed; docs/board-format.md says what each format cannot hold.

    \b
    Examples:
      ifctl board export --format json > board.json
      ifctl board export --format gh-issues > sync-issues.sh   # read it, then: sh sync-issues.sh
      ifctl board export --format taskmaster > .taskmaster/tasks/tasks.json
      ifctl board export --format backlog --out backlog/tasks
      ifctl board export --format speckit > tasks.md
    """
    from infrafabric.coordinator import board as boardmod
    from infrafabric.coordinator import formats

    if fmt == "backlog" and out is None:
        raise ConfigurationError("--format backlog writes a directory: give it with --out DIR",
                                 hint="ifctl board export --format backlog --out backlog/tasks")
    if out is not None and fmt != "backlog":
        raise ConfigurationError(f"--out is for --format backlog; --format {fmt} writes to standard output")

    async def go(coord: IFCoordinator) -> Outcome:
        tasks = await coord.list_tasks()
        specs = [IFCoordinator.validate_spec(t) for t in tasks]
        if settings().falsify:
            return falsify_report([await bus_check(coord.bus),
                                   Check("board readable", True, f"{len(tasks)} tasks, each exportable")],
                                  summary=f"would write {len(tasks)} tasks as {fmt}; " + READ_ONLY)
        statuses = {t.id: t.status.value for t in tasks}
        if out is not None:
            written = formats.backlog.export_dir(specs, out, statuses,
                                                 {t.id: t.owner for t in tasks if t.owner})
            return Outcome(data={"written": [str(w) for w in written]},
                           lines=[f"wrote {len(written)} task files to {out}"],
                           why=[f"{len(tasks)} tasks from the live board", "existing files are never "
                                "overwritten: nothing is written if any would be"])
        if fmt == "md":
            text = boardmod.export_markdown(specs, statuses=statuses)
        elif fmt in ("gh-issues", "taskmaster", "speckit"):
            text = formats.export_text(fmt, specs, statuses)
        elif fmt == "json":
            text = boardmod.export_json(specs)
        else:
            text = boardmod.export_yaml(specs)
        click.echo(text, nl=not text.endswith("\n"))
        return Outcome(streamed=True, why=[f"{len(tasks)} tasks from the live board",
                                           "markdown carries the live status column; JSON and YAML "
                                           "carry the specs, re-importable with ifctl board import"])

    return with_coordinator(go)


# -- capabilities inferred on import, and the seeds' STATUS files replayed -------------------


def infer_for_import(parsed: Any, caps_map: Path | None, infer: bool) -> tuple[Any, dict[str, Any]]:
    """``board import``: the board with capabilities inferred for the tasks
    that list none (``--caps-map`` overriding, ``--no-infer`` switching the
    rules off), and what was inferred, by which rule, for the outcome."""
    import dataclasses

    from infrafabric.coordinator.infer import CapabilityMap, apply_inference, load_capability_map

    mapping = load_capability_map(caps_map) if caps_map is not None else CapabilityMap()
    if not infer:
        mapping = dataclasses.replace(mapping, infer=False)  # only the map's explicit tasks apply
    tasks, reasons = apply_inference(parsed.tasks, mapping)
    bare = sum(not t.capabilities for t in tasks)
    return dataclasses.replace(parsed, tasks=tasks), {
        "on": mapping.infer, "map": str(caps_map) if caps_map is not None else None,
        "tasks": {tid: [i.as_dict() for i in found] for tid, found in reasons.items()},
        "without_capabilities": bare, "warnings": mapping.warnings(parsed.tasks)}


def with_inferred(outcome: Outcome, inferred: dict[str, Any]) -> Outcome:
    """``board import``'s outcome with the inferred capabilities (JSON and --why)."""
    outcome.data["inferred_capabilities"] = inferred
    found: dict[str, list[dict[str, str]]] = inferred["tasks"]
    how = ("inference off (--no-infer or the map's `infer: false`)" if not inferred["on"]
           else "inferred from paths, section and keywords (rules: infrafabric.coordinator.infer)")
    with_map = f", with the map {inferred['map']}" if inferred["map"] else ""
    outcome.why.append(f"capabilities {how}{with_map}: {len(found)} tasks got capabilities; "
                       f"{inferred['without_capabilities']} have none (every swarm qualifies for those); "
                       "tasks that list capabilities are never changed")
    for task_id, caps in sorted(found.items()):
        outcome.why.append(escape(f"{task_id}: " + ", ".join(
            f"{c['capability']} ({c['rule']}: {c['evidence']})" for c in caps)))
    outcome.lines += [f"[yellow]warning:[/yellow] {escape(w)}" for w in inferred["warnings"]]
    if found and outcome.lines and outcome.data.get("mode") != "falsify":
        outcome.lines.append(f"capabilities inferred for {len(found)} tasks (--why shows each and its rule)")
    return outcome


@board.command("import-status")
@click.argument("paths", nargs=-1, required=True, metavar="DIR|FILE...", type=click.Path(path_type=Path))
@click.option("--skip-unknown", is_flag=True,
              help="Warn about task ids that are not on the board instead of refusing the replay.")
@contract
def board_import_status(paths: tuple[Path, ...], skip_unknown: bool) -> Outcome:
    """Replay the seeds' STATUS-SESSION-*.yaml files on the live board (import
    the board first): tasks a session reports completed become completed, the
    session their owner in the task's history; a milestone ("50% - ...") of an
    open task becomes its progress note (`task show`). A directory means its
    STATUS-*.yaml files.

    \b
    All or nothing: every file is checked, and every task looked up, before
    anything is written; a malformed file (exit 2, naming file and line), an
    unknown task id (unless --skip-unknown) or a task claimed now, failed or
    cancelled (exit 1) changes nothing. A completion whose dependencies are
    not completed is kept, with a warning. Idempotent: what is already there
    is left, so a second replay changes nothing.

    Example: ifctl board import-status ./status-files/ --why
    """
    from infrafabric.coordinator.status_files import StatusFileError, load_status_files, plan_replay
    from infrafabric.errors import InfraFabricError, RefusedError

    s = settings()
    reports = load_status_files(paths)

    async def go(coord: IFCoordinator) -> Outcome:
        board_now = {t.id: t for t in await coord.list_tasks()}
        plan = plan_replay(reports, board_now, now=time.time(), skip_unknown=skip_unknown)
        data: dict[str, Any] = {
            "files": [r.path for r in reports], "sessions": sorted({r.session for r in reports}),
            "completed": [{"task_id": c.task_id, "by": c.by, "from": c.source, "reason": c.reason}
                          for c in plan.complete],
            "progress": [{"task_id": n.task_id, "by": n.by, "from": n.source, "note": n.note}
                         for n in plan.notes],
            "unchanged": [{"task_id": t, "why": w} for t, w in plan.unchanged],
            "warnings": plan.warnings, "errors": plan.errors, "refused": plan.refusals}
        verb = "would complete" if s.falsify else "completed"
        lines = [f"{verb} {c.task_id} as {escape(c.by)} ({escape(c.source)})" for c in plan.complete]
        noted = "would note" if s.falsify else "noted"
        lines += [f"{noted} on {n.task_id}: {escape(n.note)}" for n in plan.notes]
        lines += [f"left {t}: {escape(w)}" for t, w in plan.unchanged]
        lines += [f"[yellow]warning:[/yellow] {escape(w)}" for w in plan.warnings]
        why = [f"{len(reports)} STATUS files of {len(data['sessions'])} sessions, checked before any write",
               "a completion is recorded with the session as the owner in the task's history; a "
               "milestone of an open task is kept as its progress note",
               "tasks already completed and notes already kept are left: a replay is idempotent",
               "unknown task ids refuse the replay (exit 2) unless --skip-unknown; tasks claimed now, "
               "failed or cancelled refuse it (exit 1)"]
        if s.falsify:
            checks = [await bus_check(coord.bus),
                      Check("task ids on the board", not plan.errors, "; ".join(plan.errors) or
                            f"{len(board_now)} tasks on the board"),
                      Check("tasks open for the replay", not plan.refusals, "; ".join(plan.refusals)
                            or f"{len(plan.complete)} completions, {len(plan.notes)} notes")]
            changes = len(plan.complete) + len(plan.notes)
            out = falsify_report(checks, summary=f"would change {changes} tasks; nothing was written")
            out.data.update(data)
            out.lines = lines + out.lines
            return out
        if plan.errors:
            raise StatusFileError(plan.errors, what="nothing replayed",
                                  hint="import the board first (ifctl board import), or pass --skip-unknown")
        if plan.refusals:
            raise RefusedError("nothing was replayed: " + "; ".join(plan.refusals))
        done = 0
        try:
            for c in plan.complete:
                await coord.record_completed(c.task_id, by=c.by, note=c.reason)
                done += 1
            for n in plan.notes:
                await coord.record_progress(n.task_id, n.note, by=n.by)
                done += 1
        except InfraFabricError as exc:  # the board changed since it was checked (a claim meanwhile)
            exc.message += (f" (the replay stopped after {done} of {len(plan.complete) + len(plan.notes)} "
                            "changes; run it again: what is done is left as it is)")
            raise
        if not lines:
            lines = ["nothing to replay"]
        lines.insert(0, f"replayed {len(reports)} STATUS files: {len(plan.complete)} tasks completed, "
                        f"{len(plan.notes)} progress notes, {len(plan.unchanged)} left as they were")
        return Outcome(data=data, lines=lines, why=why)

    return with_coordinator(go)


def blocker_caps(caps: tuple[str, ...]) -> list[str]:
    """``blocker report --cap``: each a capability name (exit 2 otherwise)."""
    import re

    from infrafabric.coordinator.models import CAPABILITY_PATTERN

    bad = [c for c in caps if not re.fullmatch(CAPABILITY_PATTERN, c) or len(c) > 200]
    if bad:
        raise ConfigurationError(f"--cap {bad[0]!r} is not a capability (lowercase words, optionally "
                                 "domain:skill)")
    return list(dict.fromkeys(caps))


async def needed_by_blocker(coord: IFCoordinator, task_id: str | None, message: str,
                            given: list[str]) -> tuple[list[str], str]:
    """What a blocker needs and where that came from, by the governor's own
    rule (:func:`infrafabric.coordinator.infer.blocker_needs`)."""
    from infrafabric.coordinator.infer import blocker_needs

    task = await coord.tasks.read(task_id) if task_id else None
    needed, source = blocker_needs(given, task, message)
    return needed, "given with --cap" if given else source
