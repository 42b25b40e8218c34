"""``ifctl doctor``: find records on the bus that no longer read, and quarantine them."""

from __future__ import annotations

import click
from rich.markup import escape

from infrafabric.cli.app import EXIT_REFUSED, Outcome, contract, settings
from infrafabric.cli.common import bus_check, who, with_fleet
from infrafabric.fleet import Fleet


@click.command()
@click.option("--repair", is_flag=True,
              help="Move each unreadable record to quarantine/<key> and delete it (witnessed).")
@click.option("--by", metavar="NAME", help="Who repairs [default: $USER].")
@contract
def doctor(repair: bool, by: str | None) -> Outcome:
    """Check every record on the bus (tasks, swarms, profiles, budgets,
    breakers, the policy, the ledger, credentials, reputation, SLO) and list
    each one that does not read as its kind: written by hand, by an older
    version, or by something that is not InfraFabric. Such a record fails
    only the commands about it (listings skip it with a warning) until it is
    repaired: `--repair` moves it to quarantine/<key>, its bytes kept for
    inspection, and deletes it (only if it is unchanged since it was
    examined); each move is witnessed. A budget or breaker can also be
    repaired in place: `ifctl governor reset-circuit-breaker SWARM --budget USD`.

    Exit 0: every record reads (or all found were quarantined); 1: unreadable
    records remain.

    \b
    Examples:
      ifctl doctor
      ifctl doctor --repair --by alice --json
    """
    s = settings()
    actor = who(by) if repair else None

    async def go(fleet: Fleet) -> Outcome:
        from infrafabric.doctor import examine, quarantine

        findings, seen = await examine(fleet.bus)
        rows = [f"{escape(f.key)} (revision {f.revision}, {f.size:,} bytes, {escape(f.kind)}): "
                f"{escape(f.problem)}" for f in findings]
        if s.falsify or not repair or not findings:
            data = {"records": seen, "unreadable": [f.as_dict() for f in findings], "repaired": []}
            if s.falsify:
                health = await bus_check(fleet.bus)
                data.update(mode="falsify", would_fail=bool(findings), bus=health.detail,
                            problems=[f"{f.key}: {f.problem}" for f in findings])
            lines = ([f"{len(findings)} of {seen} records do not read:"] + [f"  {r}" for r in rows]
                     + ["repair: ifctl doctor --repair (moves them to quarantine/)"]) if findings \
                else [f"all {seen} records read"]
            return Outcome(data=data, lines=lines, why=_why(), exit_code=EXIT_REFUSED if findings else 0)
        assert actor is not None
        moved = await quarantine(fleet.bus, findings, witness=fleet.witness, by=actor)
        left = [f for f in findings if f not in moved]
        lines = [f"quarantined {len(moved)} of {len(findings)} unreadable records (of {seen}):"] + \
                [f"  {escape(f.key)} -> quarantine/{escape(f.key)}" for f in moved] + \
                [f"  {escape(f.key)}: changed since examined, left alone (run doctor again)" for f in left]
        return Outcome(data={"records": seen, "unreadable": [f.as_dict() for f in findings],
                             "repaired": [f.key for f in moved]},
                       lines=lines, why=_why(), exit_code=EXIT_REFUSED if left else 0)

    return with_fleet(go)


def _why() -> list[str]:
    return ["every record kind is decoded as the library reads it: with its model and its bounds",
            "a record that does not read fails only the commands about it; listings skip it with a warning",
            "--repair deletes under a compare-and-swap on the revision examined, after keeping the bytes "
            "at quarantine/<key>; each move is witnessed as record_quarantined"]
