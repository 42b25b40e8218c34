"""``ifctl governor register|status|policy|match|trip|reset-circuit-breaker``."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.markup import escape
from rich.table import Table

from infrafabric.cli.app import EXIT_REFUSED, Outcome, contract, settings
from infrafabric.cli.common import Check, current_user, falsify_report, who, with_fleet
from infrafabric.cli.output import print_table
from infrafabric.coordinator.models import CAPABILITY_PATTERN, TASK_ID_PATTERN
from infrafabric.coordinator.presence import Liveness
from infrafabric.errors import ConfigurationError, TaskNotFoundError
from infrafabric.fleet import Fleet
from infrafabric.governor import (
    Breaker,
    BreakerState,
    Budget,
    IFGovernor,
    ResourcePolicy,
    SwarmProfile,
    format_usd,
    usd,
)
from infrafabric.governor.policy import dump_policy, load_policy, plain_usd, policy_as_dict
from infrafabric.governor.schema import parse_manifest, read_manifest

__all__ = ["dollars", "governor", "swarm_state", "who", "with_governor"]

T = TypeVar("T")
_SWARM_ID = re.compile(f"^{TASK_ID_PATTERN}$")
_CAPABILITY = re.compile(f"^{CAPABILITY_PATTERN}$")


def with_governor(fn: Callable[[IFGovernor], Awaitable[T]]) -> T:
    """Run ``fn`` with the fleet's governor on the configured bus; everything it
    does (registering swarms included) is witnessed."""
    return with_fleet(lambda fleet: fn(fleet.governor))


# -- input -------------------------------------------------------------------------------


def dollars(text: str | None, flag: str, *, positive: bool = False) -> int | None:
    """A dollar amount from the command line as micro-dollars (None if not given)."""
    if text is None:
        return None
    micros = usd(text, what=flag)
    if micros < 0 or (positive and micros == 0):
        raise ConfigurationError(f"{flag} {text!r} must be {'more than' if positive else 'at least'} $0")
    return micros


def swarm_id_arg(swarm_id: str) -> str:
    if not _SWARM_ID.match(swarm_id):
        raise ConfigurationError(f"swarm id {swarm_id!r} is invalid: use letters, digits and ._-:@+=~ "
                                 "(1 to 128 characters)")
    return swarm_id


async def require_profile(gov: IFGovernor, swarm_id: str) -> SwarmProfile:
    profile = await gov.profile(swarm_id)
    if profile is None:
        raise TaskNotFoundError(f"no swarm {swarm_id!r} is registered with the governor",
                                hint=f"ifctl governor register {swarm_id} --cap DOMAIN:SKILL "
                                     "--cost-per-hour USD --budget USD")
    return profile


# -- rendering ---------------------------------------------------------------------------


def budget_dict(budget: Budget | None) -> dict[str, Any] | None:
    if budget is None:
        return None
    return {"limit_usd": plain_usd(budget.limit_micros), "spent_usd": plain_usd(budget.spent_micros),
            "reserved_usd": plain_usd(budget.reserved_micros),
            "remaining_usd": plain_usd(budget.remaining_micros),
            "limit_micros": budget.limit_micros, "spent_micros": budget.spent_micros,
            "reserved_micros": budget.reserved_micros, "remaining_micros": budget.remaining_micros,
            "held_by_claims": {cid: {"task_id": h.task_id, "micros": h.micros}
                               for cid, h in sorted(budget.holds.items())}}


def breaker_dict(breaker: Breaker) -> dict[str, Any]:
    return {"state": breaker.state.value, "reason": breaker.reason, "changed_at": breaker.changed_at or None,
            "changed_by": breaker.changed_by, "consecutive_failures": breaker.consecutive_failures}


def refusal(budget: Budget | None, breaker: Breaker) -> str | None:
    """Why the governor would refuse this swarm any claim now (None: it would not)."""
    if breaker.state is BreakerState.OPEN:
        return f"circuit breaker open: {breaker.reason}"
    if budget is not None and budget.exhausted:  # no budget at all: unmetered
        return "budget exhausted"
    return None


async def swarm_state(gov: IFGovernor, profile: SwarmProfile) -> dict[str, Any]:
    budget, breaker = await gov.usable_budget(profile.id), await gov.breaker(profile.id)
    return {"id": profile.id, "capabilities": profile.capabilities,
            "cost_per_hour_usd": plain_usd(profile.cost_per_hour_micros),
            "cost_per_hour_micros": profile.cost_per_hour_micros,
            "reputation": str(profile.reputation), "model": profile.model,
            "budget": budget_dict(budget), "breaker": breaker_dict(breaker),
            "refused": refusal(budget, breaker)}


def budget_text(b: dict[str, Any] | None) -> str:
    if b is None:
        return "no budget set (unmetered)"
    holds = b.get("held_by_claims") or {}
    held = (f", {len(holds)} claim{'s' if len(holds) != 1 else ''} in progress holding "
            f"{format_usd(sum(h['micros'] for h in holds.values()))}") if holds else ""
    return (f"{format_usd(b['remaining_micros'])} left of {format_usd(b['limit_micros'])} "
            f"(spent {format_usd(b['spent_micros'])}, reserved {format_usd(b['reserved_micros'])}{held})")


def breaker_text(b: dict[str, Any]) -> str:
    if b["state"] == BreakerState.CLOSED.value:
        extra = f", {b['consecutive_failures']} consecutive failures" if b["consecutive_failures"] else ""
        return f"[green]closed[/]{extra}"
    return f"[bold red]OPEN[/]: {escape(b['reason'])} (by {escape(b['changed_by'] or '-')})"


# -- the group ---------------------------------------------------------------------------


@click.group()
def governor() -> None:
    """Swarm profiles, capability matching, budgets, circuit breakers and policy.

    \b
    Examples:
      ifctl governor register session-4 --cap integration:sip --cap code-analysis:python \\
          --cost-per-hour 2.00 --reputation 0.9 --model haiku --budget 10
      ifctl governor register --manifest session-4.json
      ifctl governor match integration:sip --max-cost 5 --why
      ifctl governor status
      ifctl governor policy policy.yaml --mode=falsify
      ifctl governor reset-circuit-breaker session-4 --budget 20
    """


by_option = click.option("--by", metavar="NAME", help="Who does it [default: $USER].")


@governor.command("register")
@click.argument("swarm_id", required=False, metavar="[SWARM]")
@click.option("--cap", "caps", multiple=True, metavar="CAP",
              help="A capability: built in or custom domain:skill (repeatable).")
@click.option("--cost-per-hour", metavar="USD", help="What the swarm costs per hour, in dollars.")
@click.option("--reputation", metavar="R", help="0..1 (default 1).")
@click.option("--model", metavar="M", help="The model it runs (haiku, sonnet, opus...).")
@click.option("--budget", metavar="USD", help="Budget limit in dollars (spending so far is kept).")
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path),
              help="A JSON or YAML capability manifest; the flags above override its fields.")
@contract
def governor_register(swarm_id: str | None, caps: tuple[str, ...], cost_per_hour: str | None,
                      reputation: str | None, model: str | None, budget: str | None,
                      manifest: Path | None) -> Outcome:
    """Register (or update) a swarm's profile and budget with the governor (and
    the coordinator). Validated like a capability manifest.

    Example: ifctl governor register session-4 --cap integration:sip --cost-per-hour 2 --budget 10
    """
    s = settings()
    if swarm_id is None and manifest is None:
        raise ConfigurationError("give SWARM or --manifest FILE",
                                 hint="ifctl governor register SWARM --cap C --cost-per-hour USD")
    data: dict[str, Any] = {}
    if manifest is not None:
        raw = read_manifest(manifest)
        if not isinstance(raw, dict):
            raise ConfigurationError(f"{manifest}: a capability manifest must be an object (mapping), "
                                     f"got {type(raw).__name__}")
        data.update(raw)
    if swarm_id is not None:
        if manifest is not None and "id" in data and data["id"] != swarm_id:
            raise ConfigurationError(f"SWARM {swarm_id!r} differs from the manifest's id {data['id']!r}")
        data["id"] = swarm_id
    flags = {"capabilities": list(caps) or None, "cost_per_hour": cost_per_hour,
             "reputation": reputation, "model": model, "budget": budget}
    data.update({k: v for k, v in flags.items() if v is not None})
    try:
        parsed = parse_manifest(data, str(manifest) if manifest else None)
    except ConfigurationError as exc:
        if manifest is not None:
            raise
        raise ConfigurationError(exc.message, hint="fields map to flags: capabilities --cap, cost_per_hour "
                                 "--cost-per-hour, reputation --reputation, model --model, budget --budget"
                                 ) from None
    profile = parsed.to_profile()
    notes = [f"custom capability {c} (not built in)" for c in parsed.custom_capabilities]

    async def go(gov: IFGovernor) -> Outcome:
        existing, current, breaker = (await gov.profile(profile.id), await gov.usable_budget(profile.id),
                                      await gov.breaker(profile.id))
        if s.falsify:
            health = await gov.bus.health_check()
            checks = [Check("manifest valid", True, f"{profile.id}: {', '.join(profile.capabilities)}"),
                      Check("bus reachable", bool(health), health.detail or "")]
            checks.append(Check("profile", True, "would update the existing profile" if existing
                                else "would register a new swarm"))
            if parsed.budget_micros is not None:
                limit = parsed.budget_micros
                spent = (current.spent_micros + current.reserved_micros) if current else 0
                checks.append(Check("budget", True, f"would set the limit to {format_usd(limit)}; "
                                    f"{format_usd(limit - spent)} left after spending so far"))
            elif current is None:
                checks.append(Check("budget", True, "none set: the swarm can claim nothing until one is "
                                                    "(--budget USD)"))
            if breaker.state is BreakerState.OPEN:
                checks.append(Check("breaker", True,
                                    f"open ({breaker.reason}); registering does not close it"))
            return falsify_report(checks)
        await gov.register_swarm(profile, budget_micros=parsed.budget_micros)
        state = await swarm_state(gov, profile)
        verb = "updated" if existing else "registered"
        lines = [f"{verb} {profile.id}: {', '.join(profile.capabilities)}; "
                 f"{format_usd(profile.cost_per_hour_micros)}/h, reputation {profile.reputation}"
                 + (f", model {escape(profile.model)}" if profile.model else ""),
                 f"  budget: {budget_text(state['budget'])}"]
        if state["refused"]:
            lines.append(f"  [yellow]warning:[/yellow] claims will be refused: {escape(state['refused'])}")
        why = [*notes, "registered with the coordinator too, so it can claim and be pushed tasks",
               "budget limit " + ("set; spending so far kept" if parsed.budget_micros is not None
                                  else "unchanged (no --budget)"),
               f"breaker {breaker.state.value}" + (f": {escape(breaker.reason)}" if breaker.reason else "")]
        return Outcome(data=state, lines=lines, why=why)

    return with_governor(go)


@governor.command("status")
@click.argument("swarm_id", required=False, metavar="[SWARM]")
@contract
def governor_status(swarm_id: str | None) -> Outcome:
    """Show swarm profiles, whether each is live, the budget each has left
    and its breaker (with the reason it is open), the policy in force, and
    any available work no live qualified agent can take.

    A swarm is live while an agent of it is connected (ifctl mcp), waits for
    work (task next --wait), or holds a claim whose lease has not lapsed;
    otherwise it is dead, and work only it could take waits unattended.

    Example: ifctl governor status session-4 --json
    """
    s = settings()
    if swarm_id is not None:
        swarm_id_arg(swarm_id)

    async def go(fleet: Fleet) -> Outcome:
        gov = fleet.governor
        if s.falsify:
            health = await gov.bus.health_check()
            checks = [Check("bus reachable", bool(health), health.detail or "")]
            if swarm_id is not None:
                known = await gov.profile(swarm_id) is not None
                checks.append(Check(f"swarm {swarm_id} registered", known, "" if known else "unknown swarm"))
            return falsify_report(checks)
        profiles = [await require_profile(gov, swarm_id)] if swarm_id else await gov.profiles()
        states = [await swarm_state(gov, p) for p in profiles]
        policy = await gov.policy()
        board = await fleet.coordinator.list_tasks()
        live = await fleet.coordinator.liveness(board)
        waits = [] if swarm_id else await fleet.coordinator.unattended(board, live)
        now = fleet.coordinator.clock()
        for st in states:
            st["live"] = Liveness.of(live.get(st["id"]))
        if not s.json and len(states) > 1:
            table = Table(title=f"{len(states)} swarms")
            for col in ("swarm", "live", "capabilities", "$/h", "rep", "model", "budget left", "breaker"):
                table.add_column(col, overflow="fold")
            for st in states:
                b = st["budget"]
                table.add_row(st["id"], live_text(st["live"], now, short=True), ", ".join(st["capabilities"]),
                              st["cost_per_hour_usd"], st["reputation"], escape(st["model"] or "-"),
                              "-" if b is None else f"{format_usd(b['remaining_micros'])} / "
                                                    f"{format_usd(b['limit_micros'])}",
                              breaker_text(st["breaker"]))
            print_table(s.console, table)
        lines: list[str] = []
        if s.json or len(states) <= 1:
            for st in states:
                lines += [f"[bold]{st['id']}[/bold] {', '.join(st['capabilities'])}",
                          f"  {live_text(st['live'], now)}",
                          f"  {format_usd(st['cost_per_hour_micros'])}/h, reputation {st['reputation']}, "
                          f"model {escape(st['model'] or '-')}",
                          f"  budget: {budget_text(st['budget'])}",
                          f"  breaker: {breaker_text(st['breaker'])}"]
        if not states:
            lines.append("no swarms registered (ifctl governor register)")
        refused = [st for st in states if st["refused"]]
        able = [st for st in states if not st["refused"]]
        dead = [st for st in able if not st["live"]["live"]]
        lines.append(f"{len(able) - len(dead)} of {len(states)} swarms can take work now"
                     + (f" ({len(dead)} more would, but no agent of theirs is live)" if dead else ""))
        if waits:
            shown = ", ".join(t.id for t in waits[:10]) + (f" and {len(waits) - 10} more"
                                                           if len(waits) > 10 else "")
            lines.append(f"[yellow]available tasks with no live qualified agent: {len(waits)}[/yellow] "
                         f"({shown})")
        why = [f"{st['id']}: claims refused: {escape(st['refused'])}" for st in refused]
        why += [f"{st['id']}: {live_text(st['live'], now)}" for st in dead]
        why.append("live: an agent connected (ifctl mcp) or waiting (task next --wait), or a claim "
                   "whose lease has not lapsed")
        why.append("policy: " + ", ".join(f"{k} {v}" for k, v in policy_as_dict(policy).items()))
        data: dict[str, Any] = {"swarms": states, "policy": policy_as_dict(policy)}
        if not swarm_id:
            data["unattended"] = [t.id for t in waits]
        return Outcome(data=data, lines=lines, why=why)

    return with_fleet(go)


def live_text(state: dict[str, Any], now: float, *, short: bool = False) -> str:
    """A swarm's liveness for people: live and why, or dead and when last seen."""
    if state["live"]:
        return "[green]live[/]" if short else "[green]live[/]: " + escape("; ".join(state["because"]))
    seen = state["last_seen"]
    when = f" (last seen {_ago(now - seen)} ago)" if seen else ""
    if short:
        return f"[red]dead[/]{when}"
    return f"[red]dead[/]: no agent connected, waiting or holding a claim{when}"


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


POLICY_HELP = {
    "max_swarms_per_task": "most swarms sent to help with one task",
    "max_cost_per_task": "most one task may cost, in dollars",
    "min_capability_match": "share of a task's required capabilities a swarm must offer",
    "circuit_breaker_failure_threshold": "consecutive failures that open a swarm's breaker",
    "push_fanout": "waiting agents a task that becomes available is pushed to at once",
    "escalation_webhook": "URL escalations are POSTed to as JSON (none: subject and stderr only)",
}


def _policy_changes(old: ResourcePolicy, new: ResourcePolicy) -> list[str]:
    a, b = policy_as_dict(old), policy_as_dict(new)
    return [f"{k}: {a[k]} -> {b[k]}" for k in a if a[k] != b[k]]


@governor.command("policy")
@click.argument("path", required=False, metavar="[FILE]", type=click.Path(path_type=Path))
@contract
def governor_policy(path: Path | None) -> Outcome:
    """Show the resource policy in force; with FILE, validate it and put it in
    force (--mode=falsify only validates it and shows what would change).

    \b
    The file holds one top-level mapping:
      resource_policy:
        max_swarms_per_task: 3
        max_cost_per_task: "10.00"
        min_capability_match: 0.7
        circuit_breaker_failure_threshold: 3
        push_fanout: 3
        escalation_webhook: https://ops.example/hooks/if   # optional

    Example: ifctl governor policy policy.yaml --mode=falsify
    """
    s = settings()
    new = load_policy(path) if path is not None else None

    async def go(gov: IFGovernor) -> Outcome:
        stored = await gov.policy_is_set()
        current = await gov.policy()
        why = [f"{k}: {v} — {POLICY_HELP[k]}" for k, v in policy_as_dict(new or current).items()]
        if new is None:
            if s.falsify:
                health = await gov.bus.health_check()
                return falsify_report([Check("bus reachable", bool(health), health.detail or ""),
                                       Check("policy readable", True,
                                             "on the bus" if stored else "defaults")])
            lines = dump_policy(current).splitlines()
            lines.append("(set on the bus)" if stored else "(the defaults: no policy has been set)")
            return Outcome(data={"policy": policy_as_dict(current), "source": "bus" if stored else "default"},
                           lines=lines, why=why)
        changes = _policy_changes(current, new)
        if s.falsify:
            health = await gov.bus.health_check()
            out = falsify_report([Check(f"{path} valid", True),
                                  Check("bus reachable", bool(health), health.detail or "")],
                                 summary="would change: " + ("; ".join(changes) or "nothing"))
            out.data.update(policy=policy_as_dict(new), changes=changes)
            return out
        await gov.set_policy(new, by=current_user())
        return Outcome(data={"policy": policy_as_dict(new), "source": str(path), "changes": changes},
                       lines=[f"policy from {path} in force"] + [f"  {c}" for c in changes]
                       + ([] if changes else ["  (no change)"]), why=why)

    return with_governor(go)


@governor.command("match")
@click.argument("caps", nargs=-1, required=True, metavar="CAP...")
@click.option("--max-cost", metavar="USD", help="Most a swarm may cost per hour, in dollars.")
@contract
def governor_match(caps: tuple[str, ...], max_cost: str | None) -> Outcome:
    """Find the best qualified swarm for the capabilities: coverage at least the
    policy's min_capability_match, breaker closed, budget left, within
    --max-cost; best score = coverage x reputation / cost per hour. Exit 1 when
    nobody qualifies; --why lists every candidate and why it was excluded.

    Example: ifctl governor match integration:sip code-analysis:python --max-cost 5 --why
    """
    s = settings()
    bad = [c for c in caps if not _CAPABILITY.match(c)]
    if bad:
        raise ConfigurationError(f"invalid capability {bad[0]!r}: use lowercase domain:skill "
                                 "(e.g. integration:sip)")
    required = sorted(set(caps))
    limit = dollars(max_cost, "--max-cost", positive=True)

    async def go(gov: IFGovernor) -> Outcome:
        candidates = await gov.explain_match(required, limit)
        policy = await gov.policy()
        chosen = next((c for c in candidates if c.excluded is None), None)
        rows = [{"swarm_id": c.swarm_id, "coverage": round(c.coverage, 6),
                 "score": str(c.score.quantize(Decimal("0.000001"))), "excluded": c.excluded}
                for c in candidates]
        why = [f"{r['swarm_id']}: coverage {c.coverage:.0%}, score {r['score']}, "
               + ("chosen" if c is chosen else f"excluded: {escape(c.excluded)}" if c.excluded
                  else "qualified, lower score")
               for r, c in zip(rows, candidates, strict=True)]
        why += [f"threshold: coverage >= {policy.min_capability_match} (policy min_capability_match)",
                "score = coverage x reputation / cost per hour in dollars; ties go to the lower swarm id"]
        if not candidates:
            why.insert(0, "no swarms are registered with the governor")
        data: dict[str, Any] = {"required": required, "chosen": chosen.swarm_id if chosen else None,
                                "candidates": rows,
                                "max_cost_per_hour_usd": None if limit is None else plain_usd(limit)}
        if s.falsify:
            data.update(mode="falsify", would_fail=chosen is None)
        if chosen is None:
            return Outcome(data=data, why=why, exit_code=EXIT_REFUSED,
                           lines=[f"no qualified swarm for {', '.join(required)}"
                                  + (f" within {format_usd(limit)}/h" if limit is not None else "")
                                  + f" ({len(candidates)} considered; --why for the reasons)"])
        return Outcome(data=data, why=why, lines=[
            f"{chosen.swarm_id} (coverage {chosen.coverage:.0%}, score {rows[0]['score']})"])

    return with_governor(go)


@governor.command("reset-circuit-breaker")
@click.argument("swarm_id", metavar="SWARM")
@click.option("--budget", metavar="USD", help="A new budget limit; spent and reserved start again at $0.")
@by_option
@contract
def governor_reset(swarm_id: str, budget: str | None, by: str | None) -> Outcome:
    """Close a swarm's circuit breaker (the only way it closes), optionally with
    a new budget. Witnessed, with who did it.

    Example: ifctl governor reset-circuit-breaker session-4 --budget 20 --by alice
    """
    s = settings()
    swarm_id_arg(swarm_id)
    limit = dollars(budget, "--budget")
    actor = who(by)

    async def go(gov: IFGovernor) -> Outcome:
        profile = await gov.profile(swarm_id)
        breaker, current = await gov.breaker(swarm_id), await gov.usable_budget(swarm_id)
        left_after = limit if limit is not None else (current.remaining_micros if current else None)
        warning = None
        if left_after is None:
            warning = "it has no budget: claims stay refused until one is set (--budget USD)"
        elif left_after <= 0:
            warning = (f"its budget stays exhausted ({format_usd(left_after)} left): claims stay refused "
                       "(pass --budget USD)")
        if s.falsify:
            checks = [Check(f"swarm {swarm_id} registered", profile is not None,
                            "" if profile else "unknown swarm"),
                      Check("breaker", True, "open: " + breaker.reason + "; would close it"
                            if breaker.state is BreakerState.OPEN else "already closed; would re-record it")]
            if limit is not None:
                checks.append(Check("budget", True, f"would set the limit to {format_usd(limit)} "
                                                    "with spent and reserved at $0.00"))
            elif warning:
                checks.append(Check("budget", True, "warning: " + warning))
            return falsify_report(checks)
        profile = await require_profile(gov, swarm_id)
        closed = await gov.reset_circuit_breaker(swarm_id, by=actor, budget_micros=limit)
        state = await swarm_state(gov, profile)
        lines = [f"circuit breaker for {swarm_id} closed by {escape(actor)}"
                 + ("" if breaker.state is BreakerState.OPEN else " (it was not open)"),
                 f"  budget: {budget_text(state['budget'])}"]
        if warning:
            lines.append(f"  [yellow]warning:[/yellow] {warning}")
        why = [f"was {breaker.state.value}" + (f": {escape(breaker.reason)}" if breaker.reason else ""),
               f"closed at {closed.changed_at:.3f} by {escape(actor)}",
               "budget " + ("reset: limit set, spent and reserved to $0" if limit is not None
                            else "unchanged")]
        return Outcome(data={**state, "was": breaker_dict(breaker)}, lines=lines, why=why)

    return with_governor(go)


@governor.command("trip")
@click.argument("swarm_id", metavar="SWARM")
@click.option("--reason", required=True, help="Why the swarm is halted (shown by status and --why).")
@by_option
@contract
def governor_trip(swarm_id: str, reason: str, by: str | None) -> Outcome:
    """Open a swarm's circuit breaker by hand: it can claim nothing until
    `reset-circuit-breaker`. The escalation goes to the orchestrator subject.

    Example: ifctl governor trip session-4 --reason "looping on the same error"
    """
    s = settings()
    swarm_id_arg(swarm_id)
    if not reason.strip():
        raise ConfigurationError("--reason must not be empty")
    actor = who(by)

    async def go(gov: IFGovernor) -> Outcome:
        profile = await gov.profile(swarm_id)
        breaker = await gov.breaker(swarm_id)
        if s.falsify:
            return falsify_report([
                Check(f"swarm {swarm_id} registered", profile is not None,
                      "" if profile else "unknown swarm"),
                Check("breaker", True, f"already open: {breaker.reason}; nothing would change"
                      if breaker.state is BreakerState.OPEN else "closed; would open it")])
        profile = await require_profile(gov, swarm_id)
        opened = await gov.trip(swarm_id, f"manual: {reason}", by=actor)
        state = await swarm_state(gov, profile)
        line = (f"circuit breaker for {swarm_id} OPEN: {escape(reason)} (by {escape(actor)})" if opened
                else f"circuit breaker for {swarm_id} was already open: {escape(breaker.reason)}; unchanged")
        return Outcome(data={**state, "opened": opened}, lines=[line],
                       why=["an open breaker refuses every claim and every match",
                            f"close it with: ifctl governor reset-circuit-breaker {swarm_id}"])

    return with_governor(go)


async def all_budgets(gov: IFGovernor) -> dict[str, Budget]:
    """Every swarm's budget record."""
    return await gov.budgets()
