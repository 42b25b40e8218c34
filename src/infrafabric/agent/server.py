"""``ifctl mcp``: the fleet as an MCP server, for agents that reach tools through MCP.

Built with the official ``mcp`` SDK (:class:`mcp.server.MCPServer`). Every
tool acts through an :class:`~infrafabric.agent.session.AgentSession` on the
assembled fleet, so claims are governed (breakers, budgets, capability
policy) and every change is witnessed, exactly as from the CLI.

Who acts: over stdio (one server per agent session) the swarm given with
``--swarm``; over HTTP the swarm the request's bearer token is bound to
(:mod:`infrafabric.agent.tokens`). Results are compact JSON text. A refusal
is a tool error whose text says what to do next; a bad argument is a tool
error naming it; nothing is written then.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, ParamSpec

from pydantic import Field

from infrafabric.agent.session import DEFAULT_WAIT, MAX_WAIT, PROTOCOL, AgentSession
from infrafabric.errors import BusError, InfraFabricError

log = logging.getLogger("infrafabric.agent")

__all__ = ["build_server", "compact"]

P = ParamSpec("P")

#: how the tools find the acting swarm's session for the current request
SessionFor = Callable[[], Awaitable[AgentSession]]

TaskId = Annotated[str, Field(description="The task's id, as task_next returned it.", min_length=1,
                              max_length=128, pattern=r"^[A-Za-z0-9._\-:@+=~]{1,128}$")]
ClaimToken = Annotated[str | None, Field(
    description="Optional fencing: the claim_id task_next returned. With it, the call is refused if the "
                "task was claimed again since (by you in another session, after a lapse).",
    max_length=64)]


def compact(data: Any) -> str:
    """The JSON text of a tool's answer: compact, keys in the order built."""
    return json.dumps(data, separators=(",", ":"), default=str)


def refusal_text(exc: InfraFabricError) -> str:
    """What the agent reads when a tool refuses: the reason, then what to do next."""
    text = exc.message
    if isinstance(exc, BusError):
        text = f"the fleet's bus did not answer: {exc.message}"
        return text + " Retry in a few seconds." if exc.transient else text
    if exc.hint:
        text += f" Next: {exc.hint}"
    return text


def build_server(session_for: SessionFor, *, name: str = "infrafabric", token_verifier: Any = None,
                 base_url: str | None = None) -> Any:
    """The MCP server (an :class:`mcp.server.MCPServer`) whose tools act
    through ``session_for()``'s session. Transport and lifetime are the
    caller's (see :mod:`infrafabric.agent.stdio` and :mod:`infrafabric.agent.http`).
    With a ``token_verifier`` (HTTP), every request must carry a bearer
    token it accepts; ``base_url`` is where the server is reached."""
    from mcp.server import MCPServer
    from mcp.server.mcpserver.exceptions import ResourceError, ToolError
    from mcp.types import ToolAnnotations

    auth: dict[str, Any] = {}
    if token_verifier is not None:
        from mcp.server.auth.settings import AuthSettings

        assert base_url is not None
        auth = {"token_verifier": token_verifier,
                "auth": AuthSettings(issuer_url=base_url, resource_server_url=f"{base_url}/mcp",
                                     validate_token_resource=False)}
    server: Any = MCPServer(name, instructions=PROTOCOL, title="InfraFabric fleet",
                            description="Claim, renew and finish tasks on an InfraFabric board", **auth)

    def refusing(fn: Callable[P, Awaitable[Any]]) -> Callable[P, Awaitable[str]]:
        @functools.wraps(fn)
        async def tool(*args: P.args, **kwargs: P.kwargs) -> str:
            try:
                return compact(await fn(*args, **kwargs))
            except InfraFabricError as exc:
                log.info("tool %s refused: %s", fn.__name__, exc.message)
                raise ToolError(refusal_text(exc)) from exc
        return tool

    def tool(*, read_only: bool = False, destructive: bool = False, idempotent: bool = False,
             title: str) -> Callable[[Callable[..., Awaitable[Any]]], Any]:
        annotations = ToolAnnotations(title=title, readOnlyHint=read_only, destructiveHint=destructive,
                                      idempotentHint=idempotent, openWorldHint=False)
        return lambda fn: server.tool(annotations=annotations, structured_output=False)(refusing(fn))

    @tool(title="Claim your next task")
    async def task_next(
        wait_s: Annotated[float, Field(ge=0, le=MAX_WAIT, description=(
            f"Seconds to wait for a task if none is free now (0..{MAX_WAIT:g}, default {DEFAULT_WAIT:g}). "
            "Returns as soon as one is pushed to you."))] = DEFAULT_WAIT,
        lease_s: Annotated[float | None, Field(ge=30, le=86400, description=(
            "How long the claim lasts without a heartbeat, in seconds (default: the server's, 600)."))
        ] = None,
        workspace: Annotated[str | None, Field(min_length=1, max_length=4096, description=(
            "A directory (absolute, or relative to the project) under which to make or reuse a git "
            "worktree for the task, <workspace>/<task-id>, on the task's branch; its path is returned. "
            "A task taken over from a lapsed holder gets their branch, commits and last note."))] = None,
    ) -> Any:
        """Claim the best task on the board you can do, and get what you need to do it: title,
        description, acceptance criteria, deliverable, your claim's lease, and the results of the
        tasks it depends on. If you already hold a task you get that one back. If there is nothing
        for you, `task` is null and `reason`/`details` say why (claimed by whom, blocked by what);
        call again to keep waiting. A swarm stopped by its budget or breaker gets an error."""
        if workspace is not None and token_verifier is not None:
            # over HTTP the worktree would be made on the gateway's machine, at a path the agent chose
            raise ToolError("workspace is not available through the agent gateway: a worktree would be "
                            "made on the coordinator's machine, not yours. Call task_next without it and "
                            "check the task's branch out in your own checkout.")
        return await (await session_for()).next(wait_s, lease_s, workspace)

    @tool(title="Renew your claim", idempotent=True)
    async def task_heartbeat(
        task_id: TaskId,
        note: Annotated[str | None, Field(max_length=4000, description=(
            "A short progress note (what is done, what is next): kept on the task, and handed to "
            "whoever takes it over if your claim lapses."))] = None,
        claim_id: ClaimToken = None,
    ) -> Any:
        """Renew the lease on the task you hold (do it every few minutes while you work), with an
        optional progress note. An error means you no longer hold it: stop working on it."""
        return await (await session_for()).heartbeat(task_id, note, claim_id)

    @tool(title="Complete your task")
    async def task_complete(
        task_id: TaskId,
        summary: Annotated[str | None, Field(max_length=8000, description=(
            "What you did, in a few sentences."))] = None,
        result: Annotated[Any, Field(description=(
            "The result: any JSON value (paths, numbers, a short text)."))] = None,
        commit: Annotated[str | None, Field(max_length=200, description="The commit that holds the work.")
                          ] = None,
        pr: Annotated[str | None, Field(max_length=500, description="The pull request's URL or number.")
                      ] = None,
        cost_usd: Annotated[str | None, Field(max_length=40, description=(
            "What the task cost in dollars (e.g. \"0.42\"), debited from your budget."))] = None,
        claim_id: ClaimToken = None,
    ) -> Any:
        """Mark the task you hold as done, with its result. Tasks that waited on it become available
        to the fleet. Then call task_next."""
        return await (await session_for()).complete(task_id, result=result, summary=summary, commit=commit,
                                                     pr=pr, cost_usd=cost_usd, claim_id=claim_id)

    @tool(title="Report a failed attempt", destructive=True)
    async def task_fail(
        task_id: TaskId,
        error: Annotated[str, Field(min_length=1, max_length=4000, description="What went wrong.")],
        claim_id: ClaimToken = None,
    ) -> Any:
        """Give up on the task you hold because the attempt failed. It is retried (by you or another
        agent) until its attempts run out, then marked failed for a human."""
        return await (await session_for()).fail(task_id, error, claim_id)

    @tool(title="Give your task back")
    async def task_release(
        task_id: TaskId,
        reason: Annotated[str, Field(max_length=1000, description="Why you give it back.")] = "released",
        claim_id: ClaimToken = None,
    ) -> Any:
        """Give the task you hold back unfinished (no attempt is counted): it becomes available to
        the fleet again. Use it when you must stop, or the task is not for you."""
        return await (await session_for()).release(task_id, reason, claim_id)

    @tool(title="Report a blocker")
    async def task_block(
        message: Annotated[str, Field(min_length=1, max_length=4000, description=(
            "What blocks you and what would unblock you."))],
        task_id: Annotated[str | None, Field(max_length=128, description="The blocked task.")] = None,
        capabilities: Annotated[list[str], Field(max_length=20, description=(
            "The capabilities a helper needs (e.g. [\"infra:kubernetes\"])."))] = [],  # noqa: B006
    ) -> Any:
        """Report that you are blocked and what is needed. The orchestrator hears it and the fleet
        looks for agents that offer the capabilities. Keep heartbeating your task meanwhile, or
        release it."""
        return await (await session_for()).block(message, task_id=task_id, capabilities=capabilities)

    @tool(title="Show the board", read_only=True, idempotent=True)
    async def board_status(
        limit: Annotated[int, Field(ge=1, le=500, description="Open tasks to list (default 50).")] = 50,
    ) -> Any:
        """The board: how many tasks are in each state, the open ones in hand-out order (owner and
        lease of claimed ones, what blocked ones wait on), which you hold, which swarms have a live
        agent, and the available tasks no live qualified agent can take (unattended)."""
        return await (await session_for()).board(limit)

    @tool(title="Show your budget", read_only=True, idempotent=True)
    async def budget_status() -> Any:
        """Your budget (limit, spent, remaining) and breaker; if you are stopped, why and what
        resumes you."""
        return await (await session_for()).budget()

    @tool(title="Answer a lifecycle hook")
    async def session_hook(
        op: Annotated[Literal["start", "activity", "stop"], Field(description=(
            "start: the protocol and what you hold; activity: renew your claims; stop: may you stop?"))],
        repeat: Annotated[bool, Field(description="The client asks again after a refused stop.")] = False,
    ) -> Any:
        """Used by `ifctl hook` on a machine that reaches the fleet through a gateway (the hooks
        your client runs); you need not call it yourself."""
        return await (await session_for()).on_hook(op, repeat=repeat)

    @tool(title="Record a cost")
    async def cost_track(
        operation: Annotated[str, Field(min_length=1, max_length=100, description=(
            "What cost money, e.g. llm_call."))],
        amount_usd: Annotated[str, Field(min_length=1, max_length=40, description=(
            "The cost in dollars, e.g. \"0.0125\" (up to 6 decimals)."))],
        task_id: Annotated[str | None, Field(max_length=128, description="The task it was for.")] = None,
        model: Annotated[str | None, Field(max_length=200, description="The model used, if any.")] = None,
    ) -> Any:
        """Debit a cost from your budget. Spending past the budget trips your breaker: you get no
        more tasks until an operator resets it."""
        return await (await session_for()).track_cost(operation, amount_usd, task_id=task_id, model=model)

    async def board_resource() -> str:
        try:
            return compact(await (await session_for()).board(500))
        except InfraFabricError as exc:
            raise ResourceError(refusal_text(exc)) from exc

    async def task_resource(task_id: str) -> str:
        try:
            return compact(await (await session_for()).task(task_id))
        except InfraFabricError as exc:
            raise ResourceError(refusal_text(exc)) from exc

    server.resource("infrafabric://board", name="board", mime_type="application/json",
                    description="The board: counts by status and the open tasks")(board_resource)
    server.resource("infrafabric://task/{task_id}", name="task", mime_type="application/json",
                    description="One task: its spec, state and history")(task_resource)
    return server
