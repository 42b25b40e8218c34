"""The agent's protocol on one swarm: what an MCP tool or a hook asks for.

An :class:`AgentSession` is one swarm acting on the assembled
:class:`~infrafabric.fleet.Fleet` (governed and witnessed): claim the next
task, renew its lease with a progress note, complete, fail, release or
block it, read the board and the budget, track a cost. Every answer is a
small JSON-ready dict an LLM can read; every refusal is an
:class:`~infrafabric.errors.InfraFabricError` whose hint says what to do
next.

Nothing here depends on the process staying up: the tools that act on a
held task take its id and act for the swarm that holds it, so a server
started afresh for one call (as some clients do) manages; the claim token
is optional fencing on top.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from infrafabric.bus.bounds import MAX_TEXT, brief, check_line, check_text, parse_dollars
from infrafabric.coordinator import ClaimOutcome, IFCoordinator, Task, TaskStatus
from infrafabric.coordinator.models import CAPABILITY_PATTERN, is_task_id
from infrafabric.errors import (
    ConfigurationError,
    InfraFabricError,
    NotOwnerError,
    TaskNotFoundError,
)
from infrafabric.fleet import Fleet
from infrafabric.governor import format_usd
from infrafabric.workspace import finished_head, guard, open_worktree
from infrafabric.workspace.handoff import check_root

__all__ = [
    "DEFAULT_AGENT_LEASE",
    "DEFAULT_WAIT",
    "MAX_WAIT",
    "PROTOCOL",
    "AgentSession",
    "answer_guard",
    "answer_heartbeat",
]

#: seconds ``task_next`` waits for work by default: well inside every client's tool timeout
DEFAULT_WAIT = 25.0
#: the longest ``task_next`` waits (Codex's default tool timeout is 60 s)
MAX_WAIT = 50.0
#: an agent's claim lasts this long without activity: an LLM turn between tool calls takes
#: minutes, and every tool call (and, with the hooks, every tool use) renews it
DEFAULT_AGENT_LEASE = 600.0
#: a dependency's result is cut to this many characters of JSON in a hand-out
RESULT_EXCERPT = 4000
#: after a refused stop, an agent is held to a task only if it renewed it this recently
ACTIVE_WINDOW = 120.0

#: the protocol in a few lines (the MCP server's instructions, the session-start hook's context)
PROTOCOL = """\
You are one agent of an InfraFabric fleet: a shared board hands each task to exactly one agent.
1. Call task_next to claim your task (it waits up to wait_s for one; call it again if it returns none).
2. Work on that task only. Call task_heartbeat with a short progress note every few minutes: the
   claim lapses after its lease without activity and the task goes to another agent.
3. Finish with task_complete (result, summary, commit or PR, cost), or task_fail with the error
   (it is retried), or task_release to give it back. Stuck on something you cannot do? Call
   task_block with what you need (capabilities): helpers are found.
4. Then call task_next again. Do not stop while you hold a task.
"""


def _ident(value: object, what: str) -> str:
    if not isinstance(value, str) or not is_task_id(value):
        raise ConfigurationError(f"{what} {brief(value)} is not an id (1-128 of letters, digits and "
                                 "._-:@+=~)")
    return value


def _text(value: str | None, what: str, *, limit: int = MAX_TEXT, line: bool = False) -> str | None:
    if value is None:
        return None
    if len(value) > limit:
        raise ConfigurationError(f"{what} is {len(value):,} characters; at most {limit:,}")
    try:
        return check_line(value) if line else check_text(value)
    except ValueError as exc:
        raise ConfigurationError(f"{what}: {exc}") from exc


def _excerpt(value: Any) -> Any:
    """A dependency's result, cut to :data:`RESULT_EXCERPT` characters of JSON."""
    text = json.dumps(value, default=str)
    if len(text) <= RESULT_EXCERPT:
        return value
    return {"excerpt": text[:RESULT_EXCERPT], "truncated_from": len(text)}


class AgentSession:
    """One swarm's protocol on a fleet (see the module docs).

    ``lease_ttl`` is the lease of the claims it takes (default
    :data:`DEFAULT_AGENT_LEASE`); ``clock`` is the fleet's."""

    def __init__(self, fleet: Fleet, swarm_id: str, *, lease_ttl: float = DEFAULT_AGENT_LEASE,
                 bus_setting: str | None = None) -> None:
        self.fleet = fleet
        self.swarm_id = _ident(swarm_id, "swarm id")
        self.lease_ttl = lease_ttl
        #: the bus as the server was told it (``--bus``/``IF_BUS_URL``, None: the embedded
        #: default): a command forwarded here acts only if its own setting is the same
        self.bus_setting = bus_setting
        #: the claims this session handed out or found held: what tool use renews
        self._claims: dict[str, str | None] = {}
        self._handing = asyncio.Lock()

    @property
    def coordinator(self) -> IFCoordinator:
        return self.fleet.coordinator

    # -- identity ----------------------------------------------------------------

    async def join(self, capabilities: Sequence[str] | None) -> dict[str, Any]:
        """Register the swarm with ``capabilities`` (None: keep what it has,
        or register it with none if it is new). Returns its registration."""
        existing = await self.coordinator.get_swarm(self.swarm_id)
        if capabilities is not None or existing is None:
            caps = list(capabilities or [])
            await self.fleet.register_swarm(self.swarm_id, caps)
        else:
            caps = list(existing.capabilities)
        return {"swarm_id": self.swarm_id, "capabilities": caps}

    async def held(self) -> list[Task]:
        """The tasks this swarm holds a claim on now (lapsed leases included:
        they are still its own until someone else claims them)."""
        found = {t.id: t for t in await self.coordinator.held_by(self.swarm_id)}
        for task_id in set(self._claims) - set(found):  # claimed here, perhaps not yet seen by the watcher
            task = await self.coordinator.tasks.read(task_id)
            if task is not None and task.status is TaskStatus.CLAIMED and task.owner == self.swarm_id:
                found[task_id] = task
        return list(found.values())

    # -- the hand-out --------------------------------------------------------------

    async def next(self, wait_s: float = DEFAULT_WAIT, lease_s: float | None = None,
                   workspace: str | None = None) -> dict[str, Any]:
        """Claim the best task for this swarm (see :meth:`_next_unlocked`).
        One hand-out at a time per session: two concurrent calls (a
        long-poll and a stop hook) must not leave the swarm holding two tasks.
        ``workspace``: a directory under which the task gets a git worktree
        on its branch (``<workspace>/<task-id>``, see
        :func:`~infrafabric.workspace.open_worktree`)."""
        if not 0 <= wait_s <= MAX_WAIT:
            raise ConfigurationError(f"wait_s {wait_s:g} is outside 0..{MAX_WAIT:g} seconds")
        if workspace is not None:
            await asyncio.to_thread(check_root, workspace)  # bad input refused before anything is claimed
        async with self._handing:
            answer = await self._next_unlocked(wait_s, lease_s)
            if workspace is not None and answer.get("task") is not None:
                task = await self.coordinator.get_task(answer["task"]["id"])
                won = ClaimOutcome(True, task.id, self.swarm_id, "held", [], task, answer["claim_id"])
                handoff = await open_worktree(self.coordinator, won, workspace,
                                              release_on_failure=not answer.get("already_held"))
                answer["workspace"] = handoff.as_dict()
                answer["next"] = f"work in {handoff.worktree.path} (branch {handoff.worktree.branch}); " \
                    + answer["next"]
            return answer

    async def _next_unlocked(self, wait_s: float, lease_s: float | None) -> dict[str, Any]:
        """Claim the best task for this swarm, waiting up to ``wait_s`` for one.

        A swarm that already holds a task gets that task back (with
        ``already_held``) instead of a second one: an agent that lost track
        of its work picks it up again. Nothing to do is an answer, not an
        error (``task`` is null, ``reason`` and ``details`` say why); a swarm
        the governor stopped is a :class:`SwarmStoppedError`."""
        lease = self.lease_ttl if lease_s is None else lease_s
        held = await self.held()
        if held:
            task = held[0]
            self._claims[task.id] = task.claim_id
            until = await self.coordinator.heartbeat(self.swarm_id, task.id)
            return {**await self._handout(await self.coordinator.get_task(task.id), task.claim_id, until),
                    "already_held": True,
                    "note": f"you already hold {task.id}: finish it (task_complete / task_fail / "
                            "task_release) before taking another"}
        outcome = await self.coordinator.next_task(self.swarm_id, wait=wait_s, lease_ttl=lease)
        if outcome is not None:
            assert outcome.task is not None
            self._claims[outcome.task_id] = outcome.claim_id
            return await self._handout(outcome.task, outcome.claim_id, outcome.task.lease_until)
        empty = await self.coordinator.explain_empty(self.swarm_id)
        if empty.stopped is not None:
            raise empty.stopped
        return {"task": None, "swarm_id": self.swarm_id, **empty.as_dict(),
                "next": "call task_next again to wait for work" if empty.reason == "waiting"
                else "nothing will come for you until the board changes; stop or ask the operator"}

    async def _handout(self, task: Task, claim_id: str | None, lease_until: float | None) -> dict[str, Any]:
        deps = []
        for dep_id in task.dependencies:
            try:
                dep = await self.coordinator.get_task(dep_id)
            except TaskNotFoundError:
                continue
            deps.append({"id": dep.id, "title": dep.title, "result": _excerpt(dep.result)})
        now = self.fleet.clock()
        view: dict[str, Any] = {
            "id": task.id, "title": task.title, "description": task.description,
            "acceptance_criteria": task.acceptance_criteria, "deliverable": task.deliverable,
            "capabilities": task.capabilities,
        }
        if task.estimate_hours is not None:
            view["estimate_hours"] = str(task.estimate_hours)
        if task.budget_micros is not None:
            view["budget"] = format_usd(task.budget_micros)
        if task.attempts:
            view["attempts_before"] = task.attempts
            view["last_error"] = task.error
        if task.progress:
            view["last_progress"] = task.progress
        return {"task": view, "claim_id": claim_id,
                "lease_s": round((lease_until or now) - now, 1), "dependencies": deps,
                "next": "work on it; task_heartbeat with a progress note every few minutes; "
                        "task_complete when done"}

    # -- acting on a held task -----------------------------------------------------

    async def heartbeat(self, task_id: str, note: str | None = None,
                        claim_id: str | None = None) -> dict[str, Any]:
        """Renew the lease on a task this swarm holds, recording ``note`` as its progress."""
        task_id = _ident(task_id, "task_id")
        until = await self._owned(lambda: self.coordinator.heartbeat(self.swarm_id, task_id, claim_id,
                                                                     note=note), task_id)
        return {"task_id": task_id, "lease_s": round(until - self.fleet.clock(), 1)}

    async def complete(self, task_id: str, *, result: Any = None, summary: str | None = None,
                       commit: str | None = None, pr: str | None = None, cost_usd: str | None = None,
                       claim_id: str | None = None) -> dict[str, Any]:
        """Complete a task this swarm holds. ``cost_usd``, if given, is debited
        from its budget after the completion is recorded (the work is done
        either way; an overspend trips the breaker)."""
        task_id = _ident(task_id, "task_id")
        recorded: dict[str, Any] = {}
        if result is not None:
            recorded["result"] = result
        for name, value, limit in (("summary", summary, 8000), ("commit", commit, 200), ("pr", pr, 500)):
            checked = _text(value, name, limit=limit, line=name != "summary")
            if checked is not None:
                recorded[name] = checked
        micros = None if cost_usd is None else parse_dollars(cost_usd, what="cost_usd", negative=False)
        if micros is not None:
            recorded["cost"] = format_usd(micros)
        if len(json.dumps(recorded, default=str)) > MAX_TEXT:
            raise ConfigurationError(f"result: at most {MAX_TEXT:,} characters of JSON in all; put large "
                                     "output in a file or commit and give its path")
        held = await self.coordinator.tasks.read(task_id)  # where its worktree is, if it has one here
        head = None if held is None else await asyncio.to_thread(finished_head, held)
        task = await self._owned(lambda: self.coordinator.complete_task(
            self.swarm_id, task_id, recorded or None, claim_id, head=head), task_id)
        self._claims.pop(task_id, None)
        answer: dict[str, Any] = {"task_id": task_id, "status": task.status.value}
        if task.workspace is not None:
            answer["branch"] = task.workspace.branch
            if task.workspace.head:
                answer["head"] = task.workspace.head
        if micros:
            answer["cost"] = format_usd(micros)
            try:  # the work is done and recorded whatever happens to the debit: report, never raise
                if await self.fleet.governor.budget(self.swarm_id) is None:
                    answer["cost_note"] = "not debited: this swarm has no budget (unmetered)"
                else:
                    debit = await self.fleet.governor.track_cost(self.swarm_id, "task", micros,
                                                                 task_id=task_id)
                    answer["budget_left"] = format_usd(debit.remaining_micros)
                    if debit.tripped:
                        answer["stopped"] = "the budget is spent: the breaker tripped; you get no more tasks"
            except InfraFabricError as exc:
                answer["cost_note"] = f"not debited: {exc.message}"
        unblocked = [t.id for t in await self.coordinator.unblocked_by(task_id)]
        if unblocked:
            answer["unblocked"] = unblocked
        answer["next"] = "call task_next for your next task"
        return answer

    async def fail(self, task_id: str, error: str, claim_id: str | None = None) -> dict[str, Any]:
        """Report a failed attempt on a task this swarm holds (retried until its attempts run out)."""
        task_id = _ident(task_id, "task_id")
        error = _text(error, "error", limit=4000) or ""
        task = await self._owned(lambda: self.coordinator.fail_task(self.swarm_id, task_id, error, claim_id),
                                 task_id)
        self._claims.pop(task_id, None)
        return {"task_id": task_id, "status": task.status.value, "attempts": task.attempts,
                "attempts_left": max(task.max_attempts - task.attempts, 0),
                "next": "call task_next for your next task"}

    async def release(self, task_id: str, reason: str = "released",
                      claim_id: str | None = None) -> dict[str, Any]:
        """Give a task back unfinished, without counting an attempt."""
        task_id = _ident(task_id, "task_id")
        reason = _text(reason, "reason", limit=1000) or "released"
        task = await self._owned(lambda: self.coordinator.release_task(self.swarm_id, task_id, claim_id,
                                                                       reason), task_id)
        self._claims.pop(task_id, None)
        return {"task_id": task_id, "status": task.status.value, "next": "call task_next for other work"}

    async def block(self, message: str, *, task_id: str | None = None,
                    capabilities: Iterable[str] = ()) -> dict[str, Any]:
        """Report a blocker (what is needed, as capabilities): the orchestrator
        hears it and the governor looks for helpers who offer them."""
        message = _text(message, "message", limit=4000) or ""
        if not message.strip():
            raise ConfigurationError("message: say what blocks you")
        if task_id is not None:
            task_id = _ident(task_id, "task_id")
            await self.coordinator.get_task(task_id)  # a blocker on a task that does not exist is a mistake
        caps = [_cap(c) for c in capabilities]
        report = await self.coordinator.detect_blocker(
            self.swarm_id, {"task": task_id, "message": message, "capabilities": caps})
        answer: dict[str, Any] = {"reported": True, "help": report.get("help")}
        answer["next"] = ("keep your claim and heartbeat while help comes, or task_release it if you "
                          "cannot go on")
        return answer

    # -- reading -------------------------------------------------------------------

    async def board(self, limit: int = 50) -> dict[str, Any]:
        """The board: counts by status and the first ``limit`` open tasks in hand-out order."""
        tasks = await self.coordinator.list_tasks()
        now = self.fleet.clock()
        counts: dict[str, int] = {}
        for t in tasks:
            counts[t.status.value] = counts.get(t.status.value, 0) + 1
        open_ = [t for t in tasks if t.status not in (TaskStatus.COMPLETED, TaskStatus.CANCELLED)]
        rows = [_row(t, now) for t in open_[:limit]]
        live = await self.coordinator.liveness(tasks)
        waits = await self.coordinator.unattended(tasks, live)
        return {"counts": counts, "total": len(tasks), "open": rows, "shown": len(rows),
                "mine": [t.id for t in open_ if t.status is TaskStatus.CLAIMED and t.owner == self.swarm_id],
                "live_swarms": sorted(sid for sid, state in live.items() if state.live),
                "unattended": [t.id for t in waits[:limit]]}

    async def task(self, task_id: str) -> dict[str, Any]:
        """One task, with its state and history."""
        task = await self.coordinator.get_task(_ident(task_id, "task_id"))
        data: dict[str, Any] = json.loads(task.model_dump_json(exclude={"claim_id"}))
        return data

    async def budget(self) -> dict[str, Any]:
        """This swarm's budget and breaker."""
        gov = self.fleet.governor
        budget = await gov.usable_budget(self.swarm_id)
        breaker = await gov.breaker(self.swarm_id)
        answer: dict[str, Any] = {"swarm_id": self.swarm_id, "breaker": breaker.state.value}
        if budget is None:
            answer["budget"] = "unmetered"
        else:
            answer.update(limit=format_usd(budget.limit_micros), spent=format_usd(budget.spent_micros),
                          reserved=format_usd(budget.reserved_micros),
                          remaining=format_usd(budget.remaining_micros))
        stopped = await gov.stopped(self.swarm_id)
        if stopped is not None:
            answer["stopped"] = stopped.message
            answer["to_resume"] = stopped.hint
        return answer

    async def track_cost(self, operation: str, amount_usd: str, *, task_id: str | None = None,
                         model: str | None = None) -> dict[str, Any]:
        """Debit what an operation cost from this swarm's budget."""
        operation = _text(operation, "operation", limit=100, line=True) or ""
        if not operation:
            raise ConfigurationError("operation: name what cost money (e.g. llm_call)")
        micros = parse_dollars(amount_usd, what="amount_usd", negative=False)
        if task_id is not None:
            task_id = _ident(task_id, "task_id")
        model = _text(model, "model", limit=200, line=True)
        debit = await self.fleet.governor.track_cost(self.swarm_id, operation, micros, task_id=task_id,
                                                     model=model)
        answer: dict[str, Any] = {"debited": format_usd(micros),
                                  "budget_left": format_usd(debit.remaining_micros)}
        if debit.tripped:
            answer["stopped"] = "the budget is spent: the breaker tripped; finish or release what you hold"
        return answer

    # -- hooks: leases renewed by real activity ------------------------------------------

    async def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """The answer to one control-socket request: a lifecycle hook
        (:meth:`on_hook`) or a guard (``op: guard``, :func:`answer_guard`)."""
        op = request.get("op")
        if op == "guard":
            return await answer_guard(self.fleet, self.swarm_id, request)
        if op == "heartbeat":
            return await self.forwarded_heartbeat(request)
        if op not in ("start", "activity", "stop"):
            raise ConfigurationError(f"op {str(op)[:20]!r} is not start, activity, stop, guard or heartbeat")
        return await self.on_hook(str(op), repeat=bool(request.get("repeat", False)))

    async def forwarded_heartbeat(self, request: dict[str, Any]) -> dict[str, Any]:
        """``ifctl task heartbeat`` of this swarm, forwarded by the command
        (:func:`infrafabric.agent.control.heartbeat`) so that it costs a
        process start and one round trip instead of loading the library: the
        same :meth:`IFCoordinator.heartbeat <infrafabric.coordinator.IFCoordinator.heartbeat>`
        the command would call. Refused (the command then acts itself) when
        the command names another bus, or a field is malformed."""
        return await answer_heartbeat(self.coordinator, self.swarm_id, self.bus_setting, request)

    async def on_hook(self, op: str, *, repeat: bool = False) -> dict[str, Any]:
        """A lifecycle hook's answer (``context`` to inject, or ``block``: why
        the agent must not stop yet), for ``op``:

        * ``start``: the protocol, and the task the agent holds if any;
        * ``activity``: renew every claim it holds; a lost one is named;
        * ``stop``: refused while it holds a task; if the board has work for
          it, that work is claimed and handed over instead of going idle.
          ``repeat`` (the client asks again after a refusal) lets an agent
          that has not touched its task since go (see :meth:`stop_decision`)."""
        if op == "start":
            return {"context": await self.start_context()}
        if op == "activity":
            lost = await self.renew_held()
            return {"context": " ".join(lost)} if lost else {}
        if op == "stop":
            return await self.stop_decision(repeat=repeat)
        raise ConfigurationError(f"op {op!r} is not start, activity or stop")

    async def start_context(self) -> str:
        held = await self.held()
        text = PROTOCOL + f"You are swarm {self.swarm_id}.\n"
        for task in held:
            self._claims[task.id] = task.claim_id
            text += (f"You hold task {task.id} ({task.title}), claim {task.claim_id}. Go on with it"
                     + (f"; your last progress note: {task.progress}" if task.progress else "") + ".\n")
        return text

    async def renew_held(self) -> list[str]:
        """Renew every claim this swarm holds (what its tool use proves it is
        alive for); returns a sentence for each claim found lost."""
        lost = []
        claims = dict(self._claims)
        if not claims:
            claims = {t.id: t.claim_id for t in await self.held()}
            self._claims.update(claims)
        for task_id, claim_id in claims.items():
            try:
                await self.coordinator.heartbeat(self.swarm_id, task_id, claim_id)
            except (NotOwnerError, TaskNotFoundError) as exc:
                self._claims.pop(task_id, None)
                lost.append(f"You no longer hold task {task_id} ({exc.message}): stop working on it and "
                            "call task_next.")
        return lost

    async def stop_decision(self, *, repeat: bool = False) -> dict[str, Any]:
        """Whether the agent may stop: not while it holds a task; and when the
        board has work for it, that work is claimed and handed over.

        A client asks again after a refusal (``repeat``). Then the agent is
        held only to a task it is working on: one renewed since it was
        claimed, within :data:`ACTIVE_WINDOW` seconds (its tool use renews
        it). A task it never touched (handed over at the last stop, or an
        agent that cannot go on) is released for another agent and the stop
        allowed, so no client loops for ever on a stop hook."""
        async with self._handing:
            held = await self.held()
            now = self.fleet.clock()
            if held and repeat:
                working = [t for t in held if _renewed_since_claim(t) and t.updated_at >= now - ACTIVE_WINDOW]
                if not working:
                    for task in held:
                        if not _renewed_since_claim(task):
                            await self.release(task.id, "handed over at a stop but never taken up",
                                               task.claim_id)
                    return {"notes": [f"{self.swarm_id} stops holding {', '.join(t.id for t in held)}: "
                                      "untouched since its last refused stop (a released task goes to "
                                      "another agent; a held one comes back after its lease)"]}
                held = working
            if held:
                names = ", ".join(f"{t.id} ({t.title})" for t in held)
                return {"block": f"You still hold {names} on the InfraFabric board. Do not stop: finish it "
                                 "and call task_complete with the result, or task_fail with the error, or "
                                 "task_release to give it back."}
            if await self.fleet.governor.stopped(self.swarm_id) is not None:
                return {}
            try:
                got = await self._next_unlocked(0, None)
            except InfraFabricError:
                return {}
        given: dict[str, Any] | None = got.get("task")
        if not given:
            return {}
        criteria = "; ".join(given["acceptance_criteria"]) or "none given"
        about = f"{given['description'].strip()} " if given["description"].strip() else ""
        return {"block": f"The board has work for you: you now hold task {given['id']} ({given['title']}), "
                         f"claim {got['claim_id']}, lease {got['lease_s']:.0f} s. {about}"
                         f"Acceptance criteria: {criteria}. Work on it, then call task_complete with task_id "
                         f"{given['id']}."}

    # -- helpers -------------------------------------------------------------------

    async def _owned(self, act: Any, task_id: str) -> Any:
        """Run an owner-only action, turning "not the owner" into what to do next."""
        try:
            return await act()
        except NotOwnerError as exc:
            raise NotOwnerError(exc.message, hint=f"you ({self.swarm_id}) no longer hold {task_id}: do not "
                                                  "go on with it; call task_next for other work") from exc


def _cap(value: object) -> str:
    if not isinstance(value, str) or re.fullmatch(CAPABILITY_PATTERN, value) is None:
        raise ConfigurationError(f"capabilities: {brief(value)} is not a capability (lowercase, "
                                 "optionally domain:skill)")
    return value


def _renewed_since_claim(task: Task) -> bool:
    """The holder renewed the claim (a heartbeat, a tool use) after taking it."""
    claimed = next((h.at for h in reversed(task.history) if h.to is TaskStatus.CLAIMED), None)
    return claimed is not None and task.updated_at > claimed + 0.001


def _row(task: Task, now: float) -> dict[str, Any]:
    row: dict[str, Any] = {"id": task.id, "title": task.title, "status": task.status.value}
    if task.status is TaskStatus.CLAIMED:
        row["owner"] = task.owner
        if task.lease_until is not None:
            row["lease_s"] = round(task.lease_until - now, 1)
    if task.status is TaskStatus.BLOCKED:
        row["waits_on"] = task.dependencies
    if task.capabilities:
        row["capabilities"] = task.capabilities
    return row



async def answer_heartbeat(coordinator: IFCoordinator, swarm_id: str, bus_setting: str | None,
                           request: dict[str, Any]) -> dict[str, Any]:
    """A forwarded ``ifctl task heartbeat`` (``task_id``, ``claim_id``,
    ``lease_ttl``, ``bus``) of ``swarm_id``, answered by a server on the bus
    ``bus_setting`` (None: the embedded default): ``task_id`` and
    ``lease_until``. A :class:`ConfigurationError` when the command names
    another bus or a field is malformed: the command then acts itself."""
    bus = request.get("bus") or None
    if bus != bus_setting:
        mine, theirs = bus_setting or "the embedded default", bus or "the embedded default"
        raise ConfigurationError(f"this server's bus is {mine}, not {theirs}")
    task_id, claim_id = request.get("task_id"), request.get("claim_id")
    lease_ttl = request.get("lease_ttl")
    if not isinstance(task_id, str) or not (claim_id is None or isinstance(claim_id, str)):
        raise ConfigurationError("a heartbeat needs task_id (text) and claim_id (text or null)")
    if lease_ttl is not None and (isinstance(lease_ttl, bool) or not isinstance(lease_ttl, int | float)):
        raise ConfigurationError("lease_ttl must be a number of seconds or null")
    until = await coordinator.heartbeat(_ident(swarm_id, "swarm_id"), _ident(task_id, "task_id"), claim_id,
                                        lease_ttl=None if lease_ttl is None else float(lease_ttl))
    return {"task_id": task_id, "lease_until": until}


async def answer_guard(fleet: Fleet, swarm_id: str | None, request: dict[str, Any]) -> dict[str, Any]:
    """``ifctl guard tool``'s question (``cwd``, ``paths``, ``branches``)
    answered on the fleet's board: ``refusals`` (each naming the holder and
    its task) and ``notes``. A malformed request is a
    :class:`ConfigurationError`."""
    cwd, paths, branches = request.get("cwd"), request.get("paths", []), request.get("branches", [])
    if not isinstance(cwd, str) or not all(isinstance(x, list) and all(isinstance(i, str) for i in x)
                                           for x in (paths, branches)):
        raise ConfigurationError("a guard request needs cwd (text), paths and branches (lists of text)")
    verdict = await guard.check(fleet.coordinator, cwd=cwd, paths=paths, branches=branches, swarm_id=swarm_id)
    return {"refusals": verdict.refusals, "notes": verdict.notes}
