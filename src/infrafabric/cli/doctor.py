"""``ifctl doctor``: find records on the bus that no longer read (quarantine them) and claims
without their witness entry (write it)."""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape

from infrafabric.cli.app import EXIT_REFUSED, Outcome, contract, settings
from infrafabric.cli.common import bus_check, who, with_fleet
from infrafabric.errors import CorruptRecordError
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

    It also lists claims without their witness entry: a claim's entry is
    written just after the claim is acknowledged, so an agent process killed
    in that moment leaves the claim only in its task's history. `--repair`
    writes those entries from the history (marked recovered).

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
        from infrafabric.doctor import examine, quarantine, unwitnessed_claims, witness_claims

        findings, seen = await examine(fleet.bus)
        try:
            claims = await unwitnessed_claims(fleet.bus, fleet.witness)
            chain_problem = None
        except (CorruptRecordError, ValueError) as exc:  # a tampered chain: verify says where
            claims, chain_problem = [], f"claims not checked: the witness chain does not read ({exc}); " \
                                        "run ifctl witness verify"
        rows = [f"{escape(f.key)} (revision {f.revision}, {f.size:,} bytes, {escape(f.kind)}): "
                f"{escape(f.problem)}" for f in findings]
        claim_rows = [f"task {escape(c.task_id)}: claim {c.claim_id} by {escape(c.swarm_id or '?')}"
                      for c in claims]
        data: dict[str, Any] = {"records": seen, "unreadable": [f.as_dict() for f in findings],
                                "unwitnessed_claims": [c.as_dict() for c in claims], "repaired": [],
                                "witnessed": 0}
        notes = [chain_problem] if chain_problem else []
        if s.falsify or not repair or not (findings or claims):
            if s.falsify:
                health = await bus_check(fleet.bus)
                data.update(mode="falsify", would_fail=bool(findings or claims), bus=health.detail,
                            problems=[f"{f.key}: {f.problem}" for f in findings]
                            + [f"task {c.task_id}: claim {c.claim_id} has no witness entry" for c in claims])
            lines = ([f"{len(findings)} of {seen} records do not read:"] + [f"  {r}" for r in rows]
                     if findings else [f"all {seen} records read"])
            lines += ([f"{len(claims)} claims have no witness entry (their process ended before it "
                       "was written):"] + [f"  {r}" for r in claim_rows] if claims else [])
            if findings or claims:
                lines.append("repair: ifctl doctor --repair (moves unreadable records to quarantine/, "
                             "writes the claims' entries from their tasks' histories)")
            return Outcome(data=data, lines=lines + notes, why=_why(),
                           exit_code=EXIT_REFUSED if findings or claims else 0)
        assert actor is not None
        moved = await quarantine(fleet.bus, findings, witness=fleet.witness, by=actor)
        left = [f for f in findings if f not in moved]
        data.update(repaired=[f.key for f in moved],
                    witnessed=await witness_claims(fleet.witness, claims, by=actor))
        lines = ([f"quarantined {len(moved)} of {len(findings)} unreadable records (of {seen}):"]
                 + [f"  {escape(f.key)} -> quarantine/{escape(f.key)}" for f in moved]
                 + [f"  {escape(f.key)}: changed since examined, left alone (run doctor again)" for f in left]
                 if findings else [f"all {seen} records read"])
        if claims:
            lines += [f"wrote the witness entries of {len(claims)} claims (marked recovered):"] + \
                     [f"  {r}" for r in claim_rows]
        return Outcome(data=data, lines=lines + notes, why=_why(), exit_code=EXIT_REFUSED if left else 0)

    return with_fleet(go)


def _why() -> list[str]:
    return ["every record kind is decoded as the library reads it: with its model and its bounds",
            "a record that does not read fails only the commands about it; listings skip it with a warning",
            "--repair deletes under a compare-and-swap on the revision examined, after keeping the bytes "
            "at quarantine/<key>; each move is witnessed as record_quarantined",
            "a claim's task_claimed entry is written after the claim is acknowledged; claims older than "
            "a minute whose claim id no entry names are listed, and --repair writes their entries"]
