"""``ifctl chassis load|exec|creds|slo|reputation``: the chassis's shared state on the bus."""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml
from rich.markup import escape

from infrafabric.bus.bounds import parse_failure, read_limited
from infrafabric.chassis.core import IFChassis
from infrafabric.chassis.models import ServiceLevelObjective, parse_contract
from infrafabric.chassis.slo import Compliance, p99_nearest_rank
from infrafabric.cli.app import EXIT_REFUSED, Outcome, contract, settings
from infrafabric.cli.chassis import (
    ISOLATION,
    _payload,
    chassis,
    limits_line,
    process_sandbox,
    scratch_sandbox,
)
from infrafabric.cli.common import ID, READ_ONLY, Check, bus_check, current_user, falsify_report, with_fleet
from infrafabric.errors import ConfigurationError, InvalidCredentialError, SandboxError, TaskNotFoundError
from infrafabric.governor import IFGovernor

T = TypeVar("T")


def with_chassis(fn: Callable[[IFChassis, IFGovernor], Awaitable[T]], *, isolation: str = "thread") -> T:
    """Run ``fn`` with the fleet's chassis (whose reputations go to the
    governor) on the configured bus; everything both do is witnessed with this
    command's trace. ``isolation="process"`` runs its tasks in worker processes."""
    with contextlib.ExitStack() as stack:
        sandbox: object | None = None
        if settings().falsify:
            # compiles (a module fetched from the bus) without touching the compile cache
            sandbox = stack.enter_context(scratch_sandbox())
        elif isolation == "process":
            sandbox = stack.enter_context(process_sandbox())
        return with_fleet(lambda fleet: fn(fleet.chassis, fleet.governor), sandbox=sandbox)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def load_contract_file(path: Path) -> Any:
    """A contract file (YAML or JSON) as plain data; exit 2 naming the file."""
    try:
        text = read_limited(path, what="contract file", limit=1024 * 1024).decode("utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"{path}: no such contract file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{path}: cannot read the contract file: {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigurationError(f"{where}: invalid YAML/JSON: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path}: invalid YAML/JSON: {exc}") from None
    except (RecursionError, ValueError) as exc:
        raise ConfigurationError(f"{path}: not a usable contract: {parse_failure(exc)}") from None


# -- load / exec ------------------------------------------------------------------------------


@chassis.command("load")
@click.argument("swarm", type=ID)
@click.argument("module", type=click.Path(path_type=Path))
@click.option("--contract", "contract_file", type=click.Path(path_type=Path), required=True,
              metavar="FILE", help="The swarm's service contract (YAML or JSON).")
@contract
def chassis_load(swarm: str, module: Path, contract_file: Path) -> Outcome:
    """Load a task module (.wasm or .wat) for SWARM under its contract: the
    contract is validated, the module compiled and checked against what the
    host grants, and both recorded on the bus (witnessed), so any process can
    then run the swarm's tasks with `ifctl chassis exec`.

    \b
    A contract file:
      swarm_id: coder
      capabilities: [code-analysis:python]
      version: 1.0.0
      resource_limits: {max_memory_mb: 64, max_fuel: 100000000, max_execution_time_seconds: 5}
      slos: {p99_latency_ms: 500, success_rate: 0.95, availability: 0.99}
      allowed_endpoints: [search/*]

    Example: ifctl chassis load coder agent.wasm --contract coder.yaml
    """
    s = settings()
    terms = parse_contract(load_contract_file(contract_file), source=str(contract_file))
    if terms.swarm_id != swarm:
        raise ConfigurationError(f"{contract_file}: swarm_id is {terms.swarm_id!r}, not {swarm!r}")
    if not module.is_file():
        raise ConfigurationError(f"{module}: no such module file")

    async def go(ch: IFChassis, gov: IFGovernor) -> Outcome:
        if s.falsify:
            checks = [Check(f"{contract_file} valid", True, f"version {terms.version}")]
            try:
                compiled = ch.sandbox.compile(module, name=swarm)  # falsify: a scratch compile cache
                checks.append(Check(f"{module} loads", compiled.kind == "task",
                                    f"{compiled.kind} module, sha256 {compiled.digest[:12]}"))
            except SandboxError as exc:
                checks.append(Check(f"{module} loads", False, exc.message))
            checks.append(await bus_check(ch.bus))
            try:
                current = await ch.loaded(swarm)
                checks.append(Check("would replace", True, f"{swarm} now runs sha256 "
                                    f"{current.module.digest[:12]} under version {current.contract.version}"))
            except (TaskNotFoundError, SandboxError) as exc:
                checks.append(Check("would load", True, f"nothing usable loaded now: {exc.message}"))
            return falsify_report(checks, summary="nothing compiled into a cache, recorded or witnessed")
        loaded = await ch.load_swarm(swarm, module, terms)
        limits = terms.resource_limits
        lines = [f"loaded {swarm} {escape(terms.version)}: {escape(str(module))} "
                 f"(sha256 {loaded.module.digest[:12]}, "
                 f"{'shared on the bus' if loaded.shared else 'too large to share: this process only'})",
                 f"  limits: {limits_line(limits)}, {limits.max_api_calls_per_second} api calls/s",
                 f"  endpoints: {escape(', '.join(terms.allowed_endpoints) or 'none')}"]
        return Outcome(data={"swarm_id": swarm, "digest": loaded.module.digest, "shared": loaded.shared,
                             "contract": terms.model_dump(mode="json")}, lines=lines,
                       why=[f"imports: {', '.join(f'{m}.{n}' for m, n in loaded.module.imports) or 'none'}",
                            "the contract was validated and the module compiled and checked against "
                            "the host's imports before anything was recorded",
                            "contract and module are on the bus (chassis/), so any process can run "
                            f"its tasks: ifctl chassis exec {swarm}"])

    return with_chassis(go)


@chassis.command("exec")
@click.argument("swarm", type=ID)
@click.option("--input", "input_json", metavar="JSON|@FILE", help="The task (JSON) [default {}].")
@click.option("--task-id", type=ID, help="The task's id (for credentials, SLO samples and the witness).")
@ISOLATION
@contract
def chassis_exec(swarm: str, input_json: str | None, task_id: str | None, isolation: str) -> Outcome:
    """Run one task of a loaded SWARM in the sandbox, under its contract: a
    fresh instance, the contract's limits, a credential for this task only
    (when the contract allows endpoints). The result is printed as JSON; the
    run is an SLO sample and updates the swarm's reputation. A limit or trap
    exits 1 naming it.

    \b
    Examples:
      ifctl chassis exec coder --input '{"id": "T1", "file": "main.py"}'
      ifctl chassis exec coder --input @job.json --isolation process   # long CPU-bound work
    """
    s = settings()
    payload = _payload(input_json)

    async def go(ch: IFChassis, gov: IFGovernor) -> Outcome:
        if s.falsify:
            try:
                loaded = await ch.loaded(swarm)
                found = Check(f"{swarm} loaded", True, f"sha256 {loaded.module.digest[:12]}, contract "
                              f"{loaded.contract.version}")
            except (TaskNotFoundError, SandboxError) as exc:
                found = Check(f"{swarm} loaded", False, exc.message)
            return falsify_report([await bus_check(ch.bus), found, Check("payload is JSON", True)],
                                  summary="nothing was run; traps and limits are only known by running")
        try:
            run = await ch.execute_task(swarm, payload, task_id=task_id)
        except SandboxError as exc:
            return Outcome(data={"swarm_id": swarm, "stopped": True, "limit": exc.limit,
                                 "error": type(exc).__name__, "message": exc.message},
                           lines=[f"[red]sandbox: {exc.limit}: {escape(exc.message)}[/red]"],
                           exit_code=EXIT_REFUSED)
        return Outcome(data={"swarm_id": swarm, "task_id": run.task_id, "output": run.output,
                             "latency_ms": round(run.latency_ms, 3), "fuel_used": run.fuel_used,
                             "api_calls": run.api_calls, "refusals": run.refusals, "logs": run.logs,
                             "reputation": None if run.reputation is None else str(run.reputation)},
                       lines=[escape(json.dumps(run.output))],
                       why=[f"latency {run.latency_ms:.2f} ms, "
                            + (f"fuel {run.fuel_used:,}, " if run.fuel_used is not None else "")
                            + f"{run.api_calls} api calls", *[f"log: {x}" for x in run.logs],
                            *[f"refused: {x}" for x in run.refusals],
                            f"reputation now {run.reputation}"])

    return with_chassis(go, isolation=isolation)


# -- credentials ------------------------------------------------------------------------------


@chassis.group("creds")
def creds() -> None:
    """Scoped credentials: task-scoped, expiring tokens; the bus keeps only their hash.

    \b
    Examples:
      ifctl chassis creds issue coder T1 --ttl 600 --endpoint 'search/*'
      ifctl chassis creds list --swarm coder
      ifctl chassis creds revoke 3f9a0c1d2b4e5f60
    """


_CRED = re.compile(r"([0-9a-f]{16})|ifc_([0-9a-f]{16})_[A-Za-z0-9_-]+")


@creds.command("issue")
@click.argument("swarm", type=ID)
@click.argument("task")
@click.option("--ttl", type=int, default=300, show_default=True, help="Seconds until it expires.")
@click.option("--endpoint", "endpoints", multiple=True, metavar="NAME",
              help="An endpoint it may call: name/path, or name/* for everything below name (repeatable).")
@contract
def creds_issue(swarm: str, task: str, ttl: int, endpoints: tuple[str, ...]) -> Outcome:
    """Issue a credential for SWARM's TASK. The token is shown once, now:
    nothing on the bus can give it back.

    Example: ifctl chassis creds issue coder T1 --ttl 600 --endpoint search/*
    """
    s = settings()

    async def go(ch: IFChassis, gov: IFGovernor) -> Outcome:
        if s.falsify:
            health = await ch.bus.health_check()
            return falsify_report([Check("ttl", 0 < ttl <= 86400, f"{ttl} s"),
                                   Check("endpoints given", bool(endpoints),
                                         ", ".join(endpoints) or "none: the credential would allow nothing"),
                                   Check("bus reachable", bool(health), health.detail or "")])
        cred = await ch.credentials.generate_scoped_credentials(swarm, task, ttl, list(endpoints))
        return Outcome(data=cred.as_dict(include_token=True),
                       why=["the bus keeps only the token's SHA-256: nothing on it can give the token back",
                            f"valid for {ttl} s, for {swarm}/{task} only, and only for "
                            + (", ".join(cred.allowed_endpoints) or "nothing (no --endpoint)"),
                            "revoke it with: ifctl chassis creds revoke " + cred.id],
                       lines=[f"credential {cred.id} for {swarm}/{task}, expires {_when(cred.expires_at)}",
                              f"  endpoints: {', '.join(cred.allowed_endpoints) or 'none'}",
                              f"  token (shown once): {cred.api_token}"])

    return with_chassis(go)


@creds.command("revoke")
@click.argument("credential", metavar="ID|TOKEN")
@contract
def creds_revoke(credential: str) -> Outcome:
    """Revoke a credential by its id or its token; a task using it is refused
    at its next api_call. Revoking twice changes nothing.

    Example: ifctl chassis creds revoke 3f9a0c1d2b4e5f60
    """
    s = settings()

    async def go(ch: IFChassis, gov: IFGovernor) -> Outcome:
        if s.falsify:
            named = _CRED.fullmatch(credential)
            cred = await ch.credentials.get(named.group(1) or named.group(2)) if named else None
            checks = [Check("an id or a token", named is not None,
                            "" if named else "neither a 16-hex-digit id nor an ifc_ token"),
                      Check("credential exists", cred is not None, credential[:24])]
            if cred is not None:
                checks.append(Check("state", True, "already revoked: nothing would change" if cred.revoked
                                    else f"live until {_when(cred.expires_at)}: would revoke it"))
            return falsify_report(checks)
        try:
            cred = await ch.credentials.revoke(credential, by=(current_user() or "cli"))
        except InvalidCredentialError as exc:  # naming one that does not exist is bad input
            raise ConfigurationError(exc.message, hint="ifctl chassis creds list --all") from None
        return Outcome(data=cred.as_dict(), lines=[f"credential {cred.id} revoked (by {cred.revoked_by})"],
                       why=["revocation is one compare-and-swap on the record; revoking twice changes "
                            "nothing",
                            "every process validating the token sees it at its next use: a task using it "
                            "is refused at its next api_call"])

    return with_chassis(go)


@creds.command("list")
@click.option("--swarm", help="Only this swarm's credentials.")
@click.option("--all", "show_all", is_flag=True, help="Include expired credentials.")
@contract
def creds_list(swarm: str | None, show_all: bool) -> Outcome:
    """List credentials (never their tokens): live ones, revoked ones until
    they expire, and with --all the expired ones too.

    Example: ifctl chassis creds list --swarm coder
    """

    s = settings()

    async def go(ch: IFChassis, gov: IFGovernor) -> Outcome:
        found = await ch.credentials.list(swarm, include_expired=show_all)
        if s.falsify:
            return falsify_report([await bus_check(ch.bus),
                                   Check("credentials readable", True, f"{len(found)} to list")],
                                  summary=READ_ONLY)
        lines = [f"{c.id}  {c.swarm_id}/{c.task_id}  "
                 f"{'revoked' if c.revoked else ('expired' if c.is_expired else 'live')}  "
                 f"until {_when(c.expires_at)}  {escape(', '.join(c.allowed_endpoints) or '-')}"
                 for c in found]
        return Outcome(data={"credentials": [c.as_dict() for c in found]},
                       lines=lines or ["no credentials"],
                       why=["tokens are never stored, so never listed: only their SHA-256 is on the bus",
                            "revoked credentials are listed until they expire"
                            + ("; expired ones too (--all)" if show_all else "; expired ones with --all")])

    return with_chassis(go)


# -- SLO and reputation ------------------------------------------------------------------------


async def _compliance(ch: IFChassis, swarm: str, slo: ServiceLevelObjective) -> Compliance:
    """How ``swarm`` does against ``slo`` now, computed without recording it
    (``calculate_slo_compliance`` also stores a change of violations): for
    --mode=falsify."""
    now = time.time()
    window = await ch.slo.samples(swarm, since=now - slo.window_seconds)
    latencies = [x.latency_ms for x in window if x.latency_ms is not None]
    return Compliance(swarm_id=swarm, slo=slo, evaluated_at=now, samples=len(window),
                      successes=sum(x.success for x in window),
                      available_samples=sum(x.available for x in window),
                      latency_samples=len(latencies), p99_latency_ms=p99_nearest_rank(latencies))


@chassis.command("slo")
@click.argument("swarm", type=ID)
@click.option("--p99-ms", type=click.IntRange(1), help="Set the p99 latency objective (ms).")
@click.option("--success-rate", help="Set the success-rate objective (0-1).")
@click.option("--availability", help="Set the availability objective (0-1).")
@click.option("--window", type=click.IntRange(1), help="Set the window the SLO is judged over (seconds).")
@contract
def chassis_slo(swarm: str, p99_ms: int | None, success_rate: str | None, availability: str | None,
                window: int | None) -> Outcome:
    """Show SWARM's service-level objective and how it does against it over
    the window (samples recorded by every process on the bus); with the
    options, change the objective first. Exit 1 when it is out of compliance.

    Example: ifctl chassis slo coder --p99-ms 800 --success-rate 0.97
    """
    s = settings()
    changes: dict[str, Any] = {k: v for k, v in {"p99_latency_ms": p99_ms, "success_rate": success_rate,
                                                 "availability": availability,
                                                 "window_seconds": window}.items() if v is not None}

    async def go(ch: IFChassis, gov: IFGovernor) -> Outcome:
        if not changes and not await ch.slo.has_slo(swarm) and await gov.profile(swarm) is None:
            # with no objective, samples or profile, "compliant" would describe a swarm that is not there
            raise TaskNotFoundError(f"no swarm {swarm!r}: it has no SLO objective and no governor profile",
                                    hint=f"ifctl chassis load {swarm} MODULE --contract FILE, "
                                         f"or set one: ifctl chassis slo {swarm} --p99-ms N")
        current = await ch.slo.slo(swarm)
        if changes:
            try:
                current = ServiceLevelObjective.model_validate(current.model_dump() | changes)
            except ValueError as exc:
                raise ConfigurationError(f"invalid SLO: {exc}".splitlines()[0] + " "
                                         + "; ".join(str(exc).splitlines()[1:3])) from None
            if not s.falsify:
                await ch.slo.set_slo(swarm, current, by=(current_user() or "cli"))
        if s.falsify:
            checks = [await bus_check(ch.bus)]
            if changes:
                checks.append(Check("new objective valid", True,
                                    ", ".join(f"{k} {v}" for k, v in changes.items())
                                    + " (would be stored; compliance below is judged against it)"))
            c = await _compliance(ch, swarm, current)
            checks.append(Check("compliant", c.overall_compliant, ", ".join(c.violations)
                                or f"yes ({c.samples} samples)"))
            return falsify_report(checks)
        c = await ch.slo.calculate_slo_compliance(swarm)
        data = c.as_dict()
        mark = ("[green]compliant[/green]" if c.overall_compliant
                else f"[red]VIOLATED: {', '.join(c.violations)}[/red]")
        lines = [f"{swarm}: {mark} ({c.samples} samples in the last {current.window_seconds} s)",
                 f"  success rate {data['success_rate'] or '-'} (objective >= {current.success_rate})",
                 f"  p99 latency {'-' if c.p99_latency_ms is None else round(c.p99_latency_ms, 3)} ms "
                 f"(objective <= {current.p99_latency_ms})",
                 f"  availability {data['availability'] or '-'} (objective >= {current.availability})"]
        return Outcome(data=data, lines=lines, exit_code=0 if c.overall_compliant else EXIT_REFUSED,
                       why=[*(f"objective changed: {k} {v}" for k, v in changes.items()),
                            f"{c.samples} samples (one per task run, from every process) in the last "
                            f"{current.window_seconds} s",
                            "p99: nearest rank over the window's latencies; with no samples every "
                            "objective counts as met"])

    return with_chassis(go)


@chassis.command("reputation")
@click.argument("swarm", type=ID)
@click.option("--history", "history_n", type=click.IntRange(0), default=10, show_default=True,
              help="How many past evaluations to show.")
@click.option("--recompute", is_flag=True,
              help="Evaluate it now from the SLO samples (and tell the governor).")
@contract
def chassis_reputation(swarm: str, history_n: int, recompute: bool) -> Outcome:
    """Show SWARM's reputation (0-1) from its SLO compliance, the seeds'
    formula: success rate, x0.8 when below its objective, x0.9 when p99 is
    over; 1 for a swarm without samples. The governor scores matches by it.

    Example: ifctl chassis reputation coder --history 20
    """
    s = settings()

    async def go(ch: IFChassis, gov: IFGovernor) -> Outcome:
        if s.falsify:
            c = await _compliance(ch, swarm, await ch.slo.slo(swarm))
            profile = await gov.profile(swarm)
            checks = [await bus_check(ch.bus),
                      Check("governor profile", True, f"reputation {profile.reputation}" if profile
                            else "warning: none (the value is kept, but no match uses it)")]
            if recompute:
                checks.append(Check("recompute", True, f"would evaluate {c.samples} samples "
                                    f"({'compliant' if c.overall_compliant else ', '.join(c.violations)})"))
            return falsify_report(checks, summary="nothing evaluated or stored" if recompute else READ_ONLY)
        if recompute:
            await ch.reputation.calculate_reputation(swarm)
        value = await ch.reputation.get_reputation(swarm)
        history = await ch.reputation.history(swarm, limit=history_n) if history_n else []
        profile = await gov.profile(swarm)
        lines = [f"{swarm}: reputation {value}"
                 + (f" (governor profile: {profile.reputation})" if profile else " (no governor profile)")]
        lines += [f"  {_when(h.at)}  {h.reputation}  {h.successes}/{h.samples} ok"
                  + (f"  violations: {', '.join(h.violations)}" if h.violations else "")
                  + ("  (decayed)" if h.decayed else "") for h in history]
        return Outcome(data={"swarm_id": swarm, "reputation": str(value),
                             "governor_reputation": None if profile is None else str(profile.reputation),
                             "history": [h.model_dump(mode="json") for h in history]}, lines=lines,
                       why=["reputation = success rate over the SLO window, x0.8 when below its objective, "
                            "x0.9 when p99 is over it (the seeds' formula); 1 without samples",
                            "recomputed after every task run"
                            + ("; and now (--recompute)" if recompute else ""),
                            "the governor scores matches by coverage x reputation / cost per hour"])

    return with_chassis(go)
