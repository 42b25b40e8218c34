"""``ifctl witness verify|checkpoint|query|trace``: the audit chain."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from datetime import datetime
from pathlib import Path

import click
from rich.markup import escape

from infrafabric.bus import connect
from infrafabric.bus.bounds import read_limited
from infrafabric.bus.embedded import state_dir
from infrafabric.cli.app import EXIT_REFUSED, Outcome, contract, run_async, settings, terminal_safe
from infrafabric.cli.common import READ_ONLY, Check, bus_check, falsify_report, parse_time
from infrafabric.errors import ConfigurationError
from infrafabric.witness import SEVERITIES, Checkpoint, Filter, Signer, Verifier, Witness, WitnessEntry


def _line(e: WitnessEntry) -> str:
    when = datetime.fromtimestamp(e.time).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    params = json.dumps(e.params, sort_keys=True)  # JSON escapes control characters itself
    return terminal_safe(f"#{e.seq:<6} {when} {e.severity:<8} {e.component} {e.operation} "
                         f"actor={e.actor or '-'} trace={e.trace_id or '-'} {params}")


def _time(text: str | None, flag: str) -> float | None:
    return parse_time(text, flag, time.time())


@click.group()
def witness() -> None:
    """The tamper-evident audit chain: verify it, sign checkpoints, query it.

    \b
    Examples:
      ifctl witness verify
      ifctl witness checkpoint --out head.checkpoint
      ifctl witness verify --from-checkpoint head.checkpoint
      ifctl witness query --component IF.coordinator --operation task_claimed --limit 5
      ifctl witness trace 3f2a9c1d0b7e4a66
    """


def _text(path: Path, what: str) -> str:
    """A small text file (a key, a checkpoint): bounded, UTF-8, else exit 2 naming it."""
    try:
        return read_limited(path, what=what, limit=64 * 1024).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigurationError(f"{what} {path}: {exc.strerror or exc}") from None


def _trusted(key_files: tuple[Path, ...]) -> tuple[list[Verifier], list[str]]:
    notes = []
    keys = [Verifier.parse(_text(p, "key file"), source=str(p)) for p in key_files]
    local = state_dir(settings().home) / "witness.pub"
    if not keys and local.exists():
        keys.append(Verifier.parse(_text(local, "key file"), source=str(local)))
        notes.append(f"trusting the key in {local}")
    return keys, notes


@witness.command("verify")
@click.option("--from-checkpoint", "checkpoint_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A checkpoint kept elsewhere (repeatable): catches truncation and rewrites.")
@click.option("--key", "key_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A trusted public key file (default: IF_HOME/witness.pub).")
@contract
def witness_verify(checkpoint_files: tuple[Path, ...], key_files: tuple[Path, ...]) -> Outcome:
    """Recompute the whole chain and check every checkpoint. Exit 0 if intact,
    1 if tampered (with the first bad sequence number and what is wrong).

    Example: ifctl witness verify --from-checkpoint head.checkpoint --why
    """
    s = settings()
    checkpoints = [Checkpoint.parse(_text(p, "checkpoint file"), source=str(p)) for p in checkpoint_files]
    keys, notes = _trusted(key_files)

    async def go() -> Outcome:
        async with connect(s.bus_url()) as bus:
            w = Witness(bus)
            if not keys:
                keys.extend(await w.published_verifiers())
                if keys:
                    notes.append("no local key: trusting the keys published on the bus "
                                 "(a rewrite by whoever controls the bus would go unnoticed)")
            health = await bus_check(bus) if s.falsify else None
            started = time.perf_counter()
            report = await w.verify(checkpoints=checkpoints, verifiers=keys)
            seconds = time.perf_counter() - started
        if health is not None:  # verify only reads: falsify runs it and reports what it found
            where = f" at entry {report.first_bad_seq}" if report.first_bad_seq else ""
            return falsify_report(
                [health, Check(f"{len(checkpoints)} checkpoint file(s) parse", True),
                 Check("trusted keys", True, "; ".join([f"{len(keys)} key(s)", *notes])),
                 Check("chain intact", report.ok, f"{report.entries} entries, {report.checkpoints_checked} "
                       "checkpoint(s) checked" if report.ok else f"tampered{where}: {report.problem}")],
                summary=READ_ONLY)
        data = {"ok": report.ok, "entries": report.entries, "head_hash": report.head_hash,
                "first_bad_seq": report.first_bad_seq, "problem": report.problem,
                "checkpoints_checked": report.checkpoints_checked, "seconds": round(seconds, 3),
                "problems": report.problems, "notes": notes + report.notes}
        if report.ok:
            lines = [f"witness chain intact: {report.entries} entries, "
                     f"{report.checkpoints_checked} checkpoint(s) checked ({seconds:.2f} s)"]
        else:
            where = f"at entry {report.first_bad_seq}" if report.first_bad_seq else "in a checkpoint"
            lines = [f"[bold red]TAMPERED[/] {where}: {escape(report.problem or '')}"]
            lines += [f"  also: {escape(p)}" for p in report.problems[1:]]
            lines.append(f"  the chain was checked through entry {report.entries}")
        return Outcome(data=data, lines=lines, why=[
            "every entry's hash is recomputed over its canonical encoding",
            "every entry's prev_hash must equal the previous entry's hash, with no gap in seq",
            "every checkpoint's Ed25519 signature is checked against the trusted keys",
            "the chain must still hold each signed size with the signed hash", *notes, *report.notes],
            exit_code=0 if report.ok else EXIT_REFUSED)

    return run_async(go())


@witness.command("checkpoint")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the checkpoint to this file (keep it somewhere else).")
@contract
def witness_checkpoint(out: Path | None) -> Outcome:
    """Sign the chain's head with the key in IF_HOME (created on first use)
    and print the checkpoint.

    Example: ifctl witness checkpoint --out /backup/head.checkpoint
    """
    s = settings()
    home = state_dir(s.home)
    if s.falsify:
        return run_async(_falsify_checkpoint(home, out))

    async def go() -> Outcome:
        async with connect(s.bus_url()) as bus:
            signer = Signer.load_or_create(home)  # once the bus answers: an unreachable one creates nothing
            cp = await Witness(bus, signer=signer).checkpoint()
        text = cp.to_text()
        return Outcome(data={"size": cp.size, "head_hash": cp.head_hash, "checkpoint": text,
                             "key_id": signer.id.hex()},
                       lines=[text.rstrip("\n")] + ([f"written to {out}"] if out else []),
                       why=[f"signed with the Ed25519 key in {home / 'witness.key'} (id {signer.id.hex()})"])

    outcome = run_async(go())
    if out is not None:
        out.write_text(outcome.data["checkpoint"])
    outcome.why.append(f"signs (size {outcome.data['size']}, head hash): a later verify --from-checkpoint "
                       "catches a chain cut below that size or rewritten up to it")
    outcome.why.append("stored on the bus under witness/checkpoints/ with the public key; keep a copy "
                       "elsewhere (--out) so a rewrite of the bus cannot rewrite it too")
    return outcome


def _writable(path: Path) -> tuple[bool, str]:
    """Could a file be created (or replaced) at ``path``?"""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if path.exists():
        ok = path.is_file() and os.access(path, os.W_OK)
        return ok, "would be replaced" if ok else f"{path} is not a writable file"
    ok = probe.is_dir() and os.access(probe, os.W_OK)
    return ok, "would be created" if ok else f"{probe} is not a writable directory"


async def _falsify_checkpoint(home: Path, out: Path | None) -> Outcome:
    key = home / "witness.key"
    checks = []
    if key.exists():
        try:
            signer = Signer.load(home)
            checks.append(Check("signing key", True, f"{key} (id {signer.id.hex() if signer else '?'})"))
        except ConfigurationError as exc:
            checks.append(Check("signing key", False, exc.message))
    else:
        ok, detail = _writable(key)
        checks.append(Check("signing key", ok, f"none yet: {key} {detail}" if ok else detail))
    if out is not None:
        ok, detail = _writable(out)
        checks.append(Check(f"--out {out}", ok, detail))
    async with connect(settings().bus_url()) as bus:
        checks.append(await bus_check(bus))
        size, head_hash = await Witness(bus).head()
    checks.append(Check("chain head", True, f"would sign size {size}, head {head_hash[:16]}…"))
    return falsify_report(checks, summary="nothing signed, stored or written")


@witness.command("query")
@click.option("--component")
@click.option("--operation")
@click.option("--actor", help="A swarm id or other actor.")
@click.option("--trace-id")
@click.option("--since", help="Epoch seconds, ISO 8601 time or an age (90m, 2h, 7d).")
@click.option("--until", help="Epoch seconds, ISO 8601 time or an age (90m, 2h, 7d).")
@click.option("--severity", type=click.Choice(SEVERITIES), help="This severity or worse.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--oldest-first", is_flag=True, help="Oldest first (default newest first).")
@click.option("--follow", is_flag=True, help="Keep printing new matching entries as they are written.")
@contract
def witness_query(component: str | None, operation: str | None, actor: str | None, trace_id: str | None,
                  since: str | None, until: str | None, severity: str | None, limit: int,
                  oldest_first: bool, follow: bool) -> Outcome:
    """Find entries by component, operation, actor, trace, time and severity
    (JSON lines with --json, ready to export).

    Example: ifctl witness query --actor session-7 --since 2026-11-23T00:00 --json > audit.jsonl
    """
    s = settings()
    f = Filter(component=component, operation=operation, actor=actor, trace_id=trace_id,
               since=_time(since, "--since"), until=_time(until, "--until"), min_severity=severity)

    given = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(f).items() if v is not None)
    why = [f"filter: {given or 'none'}",
           f"{'oldest' if oldest_first else 'newest'} first, at most {limit}"
           + ("; then new entries as they are written" if follow else "")]

    async def go() -> Outcome:
        async with connect(s.bus_url()) as bus:
            w = Witness(bus)
            found = await w.query(f, newest_first=not oldest_first, limit=limit)
            if s.falsify:
                return falsify_report([await bus_check(bus), Check("filter valid", True, why[0]),
                                       Check("entries match", True, f"would print {len(found)}")],
                                      summary=READ_ONLY)
            for e in found:
                click.echo(json.dumps(e.to_dict(), sort_keys=True) if s.json else _line(e))
            if follow:
                async for e in w.follow(f):
                    click.echo(json.dumps(e.to_dict(), sort_keys=True) if s.json else _line(e))
        return Outcome(data={"matched": len(found)}, streamed=True, why=[*why, f"{len(found)} matched"])

    return run_async(go())


@witness.command("trace")
@click.argument("trace_id")
@contract
def witness_trace(trace_id: str) -> Outcome:
    """Every entry of one trace id, in order, with the time between them.

    Example: ifctl witness trace 3f2a9c1d0b7e4a66
    """
    s = settings()

    async def go() -> Outcome:
        async with connect(s.bus_url()) as bus:
            entries = await Witness(bus).trace(trace_id)
            if s.falsify:
                return falsify_report([await bus_check(bus),
                                       Check(f"entries with trace id {trace_id}", bool(entries),
                                             f"{len(entries)} found")], summary=READ_ONLY)
        if not entries:
            return Outcome(data={"trace_id": trace_id, "entries": []},
                           lines=[f"no entries with trace id {trace_id}"], exit_code=EXIT_REFUSED)
        t0 = entries[0].time
        rows = [{**e.to_dict(), "offset_ms": round((e.time - t0) * 1000, 3),
                 "since_previous_ms": round((e.time - (entries[i - 1].time if i else t0)) * 1000, 3)}
                for i, e in enumerate(entries)]
        lines = [f"+{r['offset_ms']:>9.3f} ms (+{r['since_previous_ms']:.3f}) {escape(_line(e))}"
                 for r, e in zip(rows, entries, strict=True)]
        total = round((entries[-1].time - t0) * 1000, 3)
        return Outcome(data={"trace_id": trace_id, "entries": rows, "duration_ms": total},
                       lines=[*lines, f"{len(entries)} entries over {total} ms"],
                       why=["every command and library call stamps its entries with one trace id "
                            "(ifctl --trace prints it)", "offsets are from the first entry's time"])

    return run_async(go())
