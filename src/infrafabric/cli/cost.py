"""``ifctl cost report|budget|history|track`` (also ``ifctl optimise ...``):
the cost ledger and budgets the governor keeps on the bus.

Sums are integer micro-dollars; CSV files carry dollars as exact decimal
strings (``2.50``, ``0.000001``) next to the micro-dollars.
"""

from __future__ import annotations

import csv
import io
import os
import re
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from infrafabric.cli.app import EXIT_REFUSED, Outcome, contract, settings
from infrafabric.cli.common import Check, falsify_report, parse_time
from infrafabric.cli.governor import all_budgets, budget_dict, dollars, swarm_id_arg, with_governor
from infrafabric.coordinator.models import TASK_ID_PATTERN
from infrafabric.errors import ConfigurationError
from infrafabric.governor import BreakerState, IFGovernor, format_usd
from infrafabric.governor.policy import plain_usd

__all__ = ["cost"]

_TASK_ID = re.compile(f"^{TASK_ID_PATTERN}$")
GROUP_FIELD = {"swarm": "swarm_id", "operation": "operation", "model": "model", "task": "task_id"}

csv_option = click.option("--csv", "csv_path", metavar="FILE",
                          help="Also write the rows as CSV to FILE ('-' for stdout only).")


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).isoformat(timespec="microseconds")


def write_csv(path: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Write a CSV with a header row to ``path`` ('-': stdout)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    if path == "-":
        sys.stdout.write(buf.getvalue())
        sys.stdout.flush()
        return
    try:
        Path(path).write_text(buf.getvalue(), encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot write the CSV file: {exc.strerror or exc}") from None


def csv_check(path: str) -> Check:
    """Would writing the CSV to ``path`` work? (for --mode=falsify)"""
    if path == "-":
        return Check("CSV to stdout", True)
    p = Path(path)
    if p.is_dir():
        return Check(f"CSV file {path} writable", False, "is a directory")
    parent = p.parent if str(p.parent) else Path(".")
    ok = os.access(p, os.W_OK) if p.exists() else (parent.is_dir() and os.access(parent, os.W_OK))
    return Check(f"CSV file {path} writable", ok, "" if ok else f"cannot write to {parent}")


def finish(out: Outcome, csv_path: str | None, header: Sequence[str],
           rows: Sequence[Sequence[Any]]) -> Outcome:
    """Write the CSV (unless falsifying) and say so."""
    if csv_path is None:
        return out
    s = settings()
    if s.falsify:
        report = falsify_report([csv_check(csv_path)],
                                summary=f"would write {len(rows)} rows to {csv_path} (nothing written)")
        report.data.update({k: v for k, v in out.data.items() if k not in report.data})
        return report
    write_csv(csv_path, header, rows)
    if csv_path == "-":
        return Outcome(data=out.data, streamed=True)
    out.lines.append(f"wrote {len(rows)} rows to {escape(csv_path)}")
    out.data["csv"] = csv_path
    return out


async def bus_check(gov: IFGovernor) -> Check:
    health = await gov.bus.health_check()
    return Check("bus reachable", bool(health), health.detail or "")


@click.group()
def cost() -> None:
    """What the fleet spends: the cost ledger, budgets, debits (alias: optimise).

    \b
    Examples:
      ifctl cost track session-4 code-review 0.35 --task P0.2.1 --model haiku
      ifctl cost report --by model
      ifctl cost budget --csv budgets.csv
      ifctl cost history --swarm session-4 --since 24h --csv history.csv
      ifctl optimise report        # the same group, by the seeds' name
    """


@cost.command("report")
@click.option("--by", "by", type=click.Choice(sorted(GROUP_FIELD)), default="swarm", show_default=True,
              help="Group the ledger by this field.")
@csv_option
@contract
def cost_report(by: str, csv_path: str | None) -> Outcome:
    """Total spend from the ledger, grouped by swarm, operation, model or task.

    Example: ifctl cost report --by operation --csv costs.csv
    """
    field = GROUP_FIELD[by]

    async def go(gov: IFGovernor) -> Outcome:
        check = await bus_check(gov)
        entries = await gov.ledger()
        totals: dict[str, list[int]] = {}
        for e in entries:
            key = e.get(field)
            slot = totals.setdefault("" if key is None else str(key), [0, 0])
            slot[0] += 1
            slot[1] += int(e.get("cost_micros", 0))
        ordered = sorted(totals.items(), key=lambda kv: (-kv[1][1], kv[0]))
        total = sum(m for _, (_, m) in ordered)
        rows = [{by: key or None, "entries": n, "cost_usd": plain_usd(m), "cost_micros": m}
                for key, (n, m) in ordered]
        width = max([len(k or "(none)") for k, _ in ordered] + [len(by), 5])
        lines = [f"{by:<{width}} {'entries':>8} {'cost':>14}"]
        lines += [f"{escape(key or '(none)'):<{width}} {n:>8} {format_usd(m):>14}" for key, (n, m) in ordered]
        lines.append(f"{'total':<{width}} {len(entries):>8} {format_usd(total):>14}")
        data = {"by": by, "rows": rows, "entries": len(entries), "total_usd": plain_usd(total),
                "total_micros": total}
        out = Outcome(data=data, lines=lines,
                      why=[f"{len(entries)} ledger entries (gov/ledger/), summed in integer micro-dollars",
                           f"grouped by {field}; '(none)' when an entry has no {by}"])
        if settings().falsify and csv_path is None:
            return falsify_report([check], summary="read-only: nothing would change")
        return finish(out, csv_path, [by, "entries", "cost_usd", "cost_micros"],
                      [[r[by], r["entries"], r["cost_usd"], r["cost_micros"]] for r in rows])

    return with_governor(go)


@cost.command("budget")
@csv_option
@contract
def cost_budget(csv_path: str | None) -> Outcome:
    """Every swarm's budget: limit, spent, reserved, remaining, and its breaker.

    Example: ifctl cost budget --csv budgets.csv
    """
    async def go(gov: IFGovernor) -> Outcome:
        check = await bus_check(gov)
        budgets = await all_budgets(gov)
        swarms = sorted(set(budgets) | {p.id for p in await gov.profiles()})
        rows: list[dict[str, Any]] = []
        for sid in swarms:
            breaker = await gov.breaker(sid)
            rows.append({"swarm_id": sid, "budget": budget_dict(budgets.get(sid)),
                         "breaker": breaker.state.value,
                         "breaker_reason": breaker.reason if breaker.state is BreakerState.OPEN else ""})
        width = max([len(r["swarm_id"]) for r in rows] + [5])
        lines = [f"{'swarm':<{width}} " + " ".join(f"{h:>12}" for h in ("limit", "spent", "reserved",
                                                                      "remaining")) + "  breaker"]
        for r in rows:
            b = r["budget"]
            money = (["-"] * 4 if b is None else
                     [format_usd(b[k]) for k in ("limit_micros", "spent_micros", "reserved_micros",
                                                 "remaining_micros")])
            flag = "" if b is None or b["remaining_micros"] > 0 else "  [red]exhausted[/red]"
            breaker = r["breaker"] + (f": {escape(r['breaker_reason'])}" if r["breaker_reason"] else "")
            lines.append(f"{escape(r['swarm_id']):<{width}} " + " ".join(f"{m:>12}" for m in money)
                         + f"  {breaker}{flag}")
        if not rows:
            lines = ["no budgets set (ifctl governor register SWARM --budget USD)"]
        totals = {k: sum(r["budget"][k] for r in rows if r["budget"])
                  for k in ("limit_micros", "spent_micros", "reserved_micros", "remaining_micros")}
        data = {"swarms": rows, "totals": {**totals, **{k.replace("_micros", "_usd"): plain_usd(v)
                                                        for k, v in totals.items()}}}
        out = Outcome(data=data, lines=lines,
                      why=["remaining = limit - spent - reserved (integer micro-dollars)",
                           "reserved includes what claims in progress hold: each claim holds its "
                           "estimated cost (cost per hour x estimate, 1 h if none) until it ends",
                           "a claim is refused when its estimate exceeds what remains, "
                           "max_cost_per_task or the task's budget",
                           "a swarm with everything spent, or an open breaker, is refused every claim"])
        if settings().falsify and csv_path is None:
            return falsify_report([check], summary="read-only: nothing would change")
        header = ["swarm_id", "limit_usd", "spent_usd", "reserved_usd", "remaining_usd", "breaker",
                  "breaker_reason"]
        csv_rows = [[r["swarm_id"], *([None] * 4 if r["budget"] is None else
                                      [r["budget"][k] for k in ("limit_usd", "spent_usd", "reserved_usd",
                                                                "remaining_usd")]),
                     r["breaker"], r["breaker_reason"]] for r in rows]
        return finish(out, csv_path, header, csv_rows)

    return with_governor(go)


@cost.command("history")
@click.option("--swarm", "swarm_id", metavar="S", help="Only this swarm's entries.")
@click.option("--operation", metavar="O", help="Only this operation.")
@click.option("--since", metavar="T", help="From this time: epoch seconds, ISO 8601 or an age (2h, 7d).")
@click.option("--until", metavar="T", help="Up to this time (same forms).")
@csv_option
@contract
def cost_history(swarm_id: str | None, operation: str | None, since: str | None, until: str | None,
                 csv_path: str | None) -> Outcome:
    """Ledger entries over time, oldest first, with a running total.

    Example: ifctl cost history --swarm session-4 --since 24h --csv history.csv
    """
    now = time.time()
    start, end = parse_time(since, "--since", now), parse_time(until, "--until", now)
    if start is not None and end is not None and start > end:
        raise ConfigurationError(f"--since {since!r} is after --until {until!r}")

    async def go(gov: IFGovernor) -> Outcome:
        check = await bus_check(gov)
        picked = [e for e in await gov.ledger()
                  if (swarm_id is None or e.get("swarm_id") == swarm_id)
                  and (operation is None or e.get("operation") == operation)
                  and (start is None or float(e.get("at", 0)) >= start)
                  and (end is None or float(e.get("at", 0)) <= end)]
        picked.sort(key=lambda e: float(e.get("at", 0)))
        running = 0
        rows: list[dict[str, Any]] = []
        for e in picked:
            micros = int(e.get("cost_micros", 0))
            running += micros
            remaining = e.get("remaining_micros")
            rows.append({"at": iso(float(e.get("at", 0))), "swarm_id": e.get("swarm_id"),
                         "operation": e.get("operation"), "cost_usd": plain_usd(micros),
                         "cost_micros": micros,
                         "task_id": e.get("task_id"), "model": e.get("model"),
                         "remaining_usd": None if remaining is None else plain_usd(int(remaining)),
                         "running_total_usd": plain_usd(running)})
        lines = [f"{r['at'][:19]} {escape(str(r['swarm_id']))} {escape(str(r['operation']))} "
                 f"{format_usd(r['cost_micros'])}"
                 + (f" task {escape(r['task_id'])}" if r["task_id"] else "")
                 + (f" model {escape(r['model'])}" if r["model"] else "")
                 + (f" (left {format_usd(int(e['remaining_micros']))})"
                    if e.get("remaining_micros") is not None else "")
                 for r, e in zip(rows, picked, strict=True)]
        lines.append(f"{len(rows)} entries, {format_usd(running)} in total")
        filters = [f"{k} {v}" for k, v in (("swarm", swarm_id), ("operation", operation),
                                            ("since", since), ("until", until)) if v is not None]
        data = {"entries": rows, "count": len(rows), "total_usd": plain_usd(running), "total_micros": running}
        out = Outcome(data=data, lines=lines,
                      why=[f"filters: {', '.join(filters) or 'none'}",
                           "times are UTC; remaining is the budget left right after each debit"])
        if settings().falsify and csv_path is None:
            return falsify_report([check], summary="read-only: nothing would change")
        header = ["at", "swarm_id", "operation", "cost_usd", "cost_micros", "task_id", "model",
                  "remaining_usd", "running_total_usd"]
        return finish(out, csv_path, header, [[r[h] for h in header] for r in rows])

    return with_governor(go)


@cost.command("track")
@click.argument("swarm_id", metavar="SWARM")
@click.argument("operation", metavar="OPERATION")
@click.argument("amount", metavar="USD")
@click.option("--task", "task_id", metavar="T", help="The task the cost belongs to.")
@click.option("--model", metavar="M", help="The model that incurred it.")
@contract
def cost_track(swarm_id: str, operation: str, amount: str, task_id: str | None, model: str | None) -> Outcome:
    """Debit a cost from a swarm's budget and record it in the ledger. The cost
    is always recorded; if it overdraws the budget the swarm's circuit breaker
    opens and the command exits 1.

    Example: ifctl cost track session-4 code-review 0.35 --task P0.2.1 --model haiku
    """
    s = settings()
    swarm_id_arg(swarm_id)
    if not operation.strip() or len(operation) > 128 or not operation.isprintable():
        raise ConfigurationError(f"OPERATION {operation!r} must be 1 to 128 printable characters")
    if task_id is not None and not _TASK_ID.match(task_id):
        raise ConfigurationError(f"--task {task_id!r} is not a task id (letters, digits and ._-:@+=~)")
    if model is not None and (not model.strip() or len(model) > 128):
        raise ConfigurationError(f"--model {model!r} must be 1 to 128 characters")
    micros = dollars(amount, "USD")
    assert micros is not None

    async def go(gov: IFGovernor) -> Outcome:
        if s.falsify:
            budget, breaker = await gov.usable_budget(swarm_id), await gov.breaker(swarm_id)
            checks = [await bus_check(gov),
                      Check(f"swarm {swarm_id} has a budget", budget is not None,
                            "" if budget else f"none: ifctl governor register {swarm_id} --budget USD")]
            if budget is not None:
                after = budget.remaining_micros - micros
                checks.append(Check("stays within budget", after >= 0,
                                    f"{format_usd(budget.remaining_micros)} left, {format_usd(after)} after"
                                    + ("" if after >= 0 else "; the breaker would open")))
            if breaker.state is BreakerState.OPEN:
                checks.append(Check("breaker", True, f"already open ({breaker.reason}); "
                                                     "the cost would be recorded anyway"))
            return falsify_report(checks)
        debit = await gov.track_cost(swarm_id, operation, micros, task_id=task_id, model=model)
        breaker = await gov.breaker(swarm_id)
        data = {"swarm_id": swarm_id, "operation": operation, "cost_usd": plain_usd(micros),
                "cost_micros": micros, "remaining_usd": plain_usd(debit.remaining_micros),
                "remaining_micros": debit.remaining_micros, "tripped": debit.tripped,
                "breaker": breaker.state.value, "ledger_key": debit.ledger_key, "task_id": task_id,
                "model": model}
        lines = [f"debited {format_usd(micros)} from {swarm_id} ({escape(operation)}); "
                 f"{format_usd(debit.remaining_micros)} left"]
        why = [f"recorded as {debit.ledger_key}", "debited by compare-and-swap on gov/budgets/" + swarm_id]
        if debit.remaining_micros >= 0:
            if debit.remaining_micros == 0:
                lines.append("[yellow]warning:[/yellow] budget exhausted: no new claims will be admitted")
            if breaker.state is BreakerState.OPEN:
                lines.append(f"[yellow]warning:[/yellow] circuit breaker is open: {escape(breaker.reason)}")
            return Outcome(data=data, lines=lines, why=why)
        if debit.tripped:
            lines.append(f"[bold red]circuit breaker OPEN[/] for {swarm_id}: {escape(breaker.reason)}")
        else:
            lines.append(f"budget overdrawn; the circuit breaker was already open: {escape(breaker.reason)}")
        lines.append(f"to resume: ifctl governor reset-circuit-breaker {swarm_id} --budget USD")
        why.append("the cost was incurred, so it is recorded even though it overdraws the budget")
        return Outcome(data=data, lines=lines, why=why, exit_code=EXIT_REFUSED)

    return with_governor(go)
