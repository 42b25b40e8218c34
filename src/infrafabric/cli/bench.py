"""``ifctl bench``: ``bus`` (our event bus against the raw engine client),
``coordinator`` (claims, push, blockers and the sustained claim rate against
the raw engine CAS) and ``witness`` (appends/s from 1 and 4 writer processes
against raw creates, and the time and memory of verifying a long chain), each
on the same server in the same run."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import signal
import socket
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import click
from rich import box
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from infrafabric.bench._common import default_warmup, throughput_rounds
from infrafabric.bench.all import BENCHMARKS, FULL, QUICK, Plan
from infrafabric.bench.all import PHASES as ALL_PHASES
from infrafabric.bench.all import bench_all as run_all
from infrafabric.bench.bus import OPERATIONS, bench_bus
from infrafabric.bench.chassis import LIMIT_TARGET, LIMITS, VARIANTS, bench_chassis
from infrafabric.bench.chassis import PHASES as CHASSIS_PHASES
from infrafabric.bench.coordinator import COMPARED, PHASES, bench_coordinator, compare_topologies
from infrafabric.bench.stats import QUANTILE_METHOD
from infrafabric.bench.waste import MAX_ATTEMPTS, STRATEGIES, bench_waste
from infrafabric.bench.waste import PHASES as WASTE_PHASES
from infrafabric.bench.witness import CONFIGS as WITNESS_CONFIGS
from infrafabric.bench.witness import PHASES as WITNESS_PHASES
from infrafabric.bench.witness import bench_witness
from infrafabric.bus import parse_url
from infrafabric.bus.servers import EtcdServer, LocalServer, NatsServer, find_etcd, find_nats_server
from infrafabric.bus.url import with_options
from infrafabric.cli.app import EXIT_REFUSED, Outcome, Settings, contract, run_async, settings
from infrafabric.cli.output import print_table
from infrafabric.errors import ConfigurationError, InfraFabricError
from infrafabric.governor.models import format_usd

BACKENDS = ("nats", "etcd", "memory")
_CLIENT_LIBS = {"nats": ("nats", "nats-py"), "etcd": ("aetcd", "aetcd"), "memory": None}


@click.group()
def bench() -> None:
    """Benchmarks: latency and throughput, reported (never asserted).

    \b
    Examples:
      ifctl bench bus --backend nats --n 2000 --json
      ifctl bench bus --backend etcd --n 500
      ifctl --bus nats://127.0.0.1:4222?namespace=bench bench bus --n 1000
      ifctl bench coordinator --backend nats --n 2000 --json
      ifctl bench witness --backend nats --json
      ifctl bench waste --seed 1 --json
      ifctl bench chassis --n 2000 --why
      ifctl bench startup --json      # what a process costs before it works
      ifctl bench all --backend nats --json > bench.json
      ifctl bench all --quick          # a CI-sized run of every benchmark
    """


def _why(backend: str, n: int, warmup: int, inflight: int, pace_ms: float) -> list[str]:
    raw = {
        "nats": "nats-py called directly on the same server over its own connection: KV "
                "create/update/put/watch on a separate bucket copied from ours (same storage, "
                "replicas, history; deleted afterwards), core NATS publish/subscribe",
        "etcd": "aetcd called directly on the same server: txn version==0 (create), txn "
                "mod_revision==rev (update), put + watch_prefix, and for pub/sub a put of a "
                "fresh key with a lease, watched by prefix from another process (how our etcd "
                "pub/sub works)",
        "memory": "memory:// has no raw client: raw figures and ratios are null",
    }[backend]
    return [
        f"every latency is {n} samples after {warmup} discarded warm-up samples, one request "
        "at a time; percentiles are " + QUANTILE_METHOD,
        "timed: create (win) = create of a fresh key; create (lose) = create of an existing "
        "key; update = CAS at the current revision; put→watch = from just before the put "
        "until an open watch in the same process yields the event",
        "publish→subscribe crosses processes: a subscriber subprocess stamps time.monotonic_ns() "
        "on arrival, the publisher embedded time.monotonic_ns() in the message; "
        "CLOCK_MONOTONIC is one system-wide clock on Linux, so the difference is a valid "
        "latency. A 'ready' line and a ping handshake ensure nothing is sent before the "
        f"subscription is live; each message waits for the previous one to arrive plus "
        f"{pace_ms:g} ms, so it measures latency, not queueing"
        + (" (memory:// is in-process, so there it is measured within one process)"
           if backend == "memory" else ""),
        f"throughput = {n} creates of fresh keys per side with {inflight} in flight, in "
        f"{throughput_rounds(n)} segments per side alternating ours/raw (ABBA ABBA ...), so "
        "load that changes during the run hits both alike",
        f"raw = {raw}",
        "ours and raw samples are interleaved, alternating which goes first, so noise on "
        "this shared machine hits both alike",
        "ratio = ours p50 / raw p50 (throughput: raw ops/s / ours ops/s): 1.0 = no overhead, "
        "above 1 = ours is slower; it isolates InfraFabric's own cost from the engine's",
        "targets (durable local NATS): CAS create (win) and update p50 <= 1.2x raw; "
        "publish→subscribe across processes p99 <= 2 ms; a benchmark reports them and never "
        "fails because of a timing",
    ]


def _tcp_reachable(host: str, port: int) -> tuple[bool, str]:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True, f"{host}:{port} accepts connections"
    except OSError as exc:
        return False, f"{host}:{port}: {exc}"


def _falsify_checks(backend: str, url: str | None, url_error: str | None, n: int,
                    n_detail: str, modules: Sequence[str] = ()) -> list[tuple[str, bool, str]]:
    """The preconditions of a benchmark on ``backend``: (check, ok, detail)."""
    checks: list[tuple[str, bool, str]] = []
    if url is not None:
        checks.append(("bus URL parses", url_error is None, url_error or url))
    if url is None:
        if backend == "nats":
            try:
                checks.append(("nats-server binary", True, find_nats_server()))
            except InfraFabricError as exc:
                checks.append(("nats-server binary", False, exc.message))
        elif backend == "etcd":
            try:
                checks.append(("etcd binary", True, find_etcd()))
            except InfraFabricError as exc:
                checks.append(("etcd binary", False, exc.message))
        if backend != "memory":
            tmp = tempfile.gettempdir()
            checks.append(("temporary directory writable", os.access(tmp, os.W_OK), tmp))
    lib = _CLIENT_LIBS[backend]
    if lib is not None:
        module, dist = lib
        try:
            importlib.import_module(module)
            checks.append((f"client library {dist}", True, "imports"))
        except ImportError as exc:
            checks.append((f"client library {dist}", False, str(exc)))
    bus_module = f"infrafabric.bus.{backend}"
    try:
        importlib.import_module(bus_module)
        checks.append((f"bus backend {bus_module}", True, "imports"))
    except ImportError as exc:
        checks.append((f"bus backend {bus_module}", False, str(exc)))
    for module in modules:
        try:
            importlib.import_module(module)
            checks.append((f"module {module}", True, "imports"))
        except ImportError as exc:
            checks.append((f"module {module}", False, str(exc)))
    found = importlib.util.find_spec("infrafabric.bench._subscriber") is not None
    checks.append(("subscriber module", found, "infrafabric.bench._subscriber"))
    if url is not None and url_error is None and backend != "memory":
        host, port = parse_url(url).hosts[0]
        ok, detail = _tcp_reachable(host, port)
        checks.append(("bus reachable", ok, detail))
    checks.append(("n sane", n >= 10, n_detail))
    return checks


def _checks_outcome(checks: list[tuple[str, bool, str]], why: list[str] | None = None,
                    **data: Any) -> Outcome:
    """The --mode=falsify outcome of a benchmark: exit 1 if any check fails."""
    failing = [c for c in checks if not c[1]]
    lines = [f"{'ok  ' if ok else 'FAIL'} {name}: {detail}" for name, ok, detail in checks]
    return Outcome(
        data={"mode": "falsify", **data, "would_fail": bool(failing),
              "problems": [f"{c}: {d}" for c, ok, d in failing],
              "checks": [{"check": c, "ok": ok, "detail": d} for c, ok, d in checks]},
        lines=lines, why=lines + (why or []), exit_code=EXIT_REFUSED if failing else 0,
    )


def _require_extra(what: str, *modules: str) -> None:
    """Exit 2 naming the ``bench`` extra when a benchmark's optional modules are
    missing (a runtime-only install has no MCP SDK, web server or etcd client)."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ConfigurationError(f"{what} needs {', '.join(missing)}, which {verb} not installed",
                                 hint="pip install 'infrafabric[bench]'")


def _falsify(backend: str, url: str | None, url_error: str | None, n: int,
             n_detail: str, modules: Sequence[str] = ()) -> Outcome:
    return _checks_outcome(_falsify_checks(backend, url, url_error, n, n_detail, modules),
                           backend=backend)


@contextlib.contextmanager
def _target(backend: str, url: str | None) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """(url, server description, managed): the given server, or a temporary
    durable one that is stopped and removed on exit (also on errors and Ctrl-C)."""
    if url is not None:
        server: dict[str, Any] = {"managed": False}
        if backend == "nats":
            server["sync_interval"] = "unknown (external server)"
        elif backend == "etcd":
            server["fsync"] = "every commit (etcd default)"
        yield url, server, False
        return
    if backend == "memory":
        yield (f"memory://bench-{uuid.uuid4().hex[:8]}",
               {"managed": True, "kind": "in-process store"}, True)
        return
    srv: LocalServer
    if backend == "nats":
        srv = NatsServer(sync_always=True)
        server = {"managed": True, "sync_interval": "always", "jetstream_storage": "file"}
    else:
        srv = EtcdServer()
        server = {"managed": True, "fsync": "every commit (etcd default)"}
    server["data_dir"] = "temporary, removed after the run"
    with srv:
        yield srv.url, server, True


_SHORT = {"create_win": "create win", "create_lose": "create lose", "update": "update CAS",
          "put_watch": "put→watch", "pubsub": "pub→sub"}
_SHORT_COORD = {"claim_win": "claim win", "claim_lose": "claim lose", "push": "push",
                "blocker": "blocker"}
#: delivery operations, labelled x-proc or in-proc in the table
_DELIVERY = ("pubsub", "push", "blocker")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C while the benchmark runs, so the temporary
    server and the subscriber processes are stopped rather than orphaned."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fmt(value: Any) -> str:
    """A number in at most 5-6 characters: 3 significant decimals below 10."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if value < 10:
            return f"{value:.3f}"
        if value < 100:
            return f"{value:.2f}"
        return f"{value:.1f}"
    return str(value)


def _table(result: dict[str, Any], width: int, short: Mapping[str, str]) -> Table:
    """ours and raw side by side, one row per operation in ``short`` (its
    label); on a terminal narrower than 76 columns, one row per side."""
    wide = width >= 76
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1),
                  collapse_padding=True)
    table.add_column("operation\n(ms)", min_width=9)
    sides = ("ours", "raw") if wide else ("",)
    if not wide:
        table.add_column("\nside")
    for side in sides:
        for stat in ("p50", "p95", "p99", "max"):
            table.add_column(f"{side}\n{stat}", justify="right", no_wrap=True, min_width=5)
    table.add_column("ratio\np50", justify="right", no_wrap=True, min_width=5)
    stats = ("p50", "p95", "p99", "max")
    for op, entry in result["operations"].items():
        if op not in short:
            continue
        ours, raw = entry["ours"], entry["raw"] or {}
        label = short[op]
        if op in _DELIVERY:
            label += " x-proc" if entry.get("cross_process") else " in-proc"
        ratio = entry["ratio"]
        ratio_text = _fmt(ratio)
        if ratio is not None and ratio > 1.2:
            ratio_text = f"[yellow]{ratio_text}[/yellow]"
        if wide:
            table.add_row(label, *(_fmt(ours[s]) for s in stats),
                          *(_fmt(raw.get(s)) for s in stats), ratio_text)
        else:
            table.add_row(label, "ours", *(_fmt(ours[s]) for s in stats), ratio_text)
            table.add_row("", "raw", *(_fmt(raw.get(s)) for s in stats), "")
    return table


def _header(result: dict[str, Any]) -> str:
    """The first line: what ran where, on which server, how long."""
    engine, server = result["engine"], result["server"]
    client = f" ({engine['client']})" if engine.get("client") else ""
    if "sync_interval" in server:
        durability = f"sync_interval: {server['sync_interval']}"
    elif "fsync" in server:
        durability = f"fsync: {server['fsync']}"
    else:
        durability = server.get("kind", "")
    where = "temporary server" if server.get("managed") else "given server"
    return (f"bench {result['benchmark']} on {engine['name']} {engine.get('version') or ''}{client}, "
            f"{where} ({durability}); n={result['n']} (+{result['warmup']} warm-up), "
            f"{result['machine']['cores']} cores, {result['duration_s']} s")


def _target_lines(targets: list[dict[str, Any]]) -> list[str]:
    lines = []
    for t in targets:
        if t["pass"] is None:
            verdict = "[dim]n/a[/dim]"
        elif t["pass"]:
            verdict = "[green]PASS[/green]"
        else:
            verdict = "[red]MISS[/red]"
        note = f" [dim]({t['note']})[/dim]" if t["note"] else ""
        lines.append(f"target {t['target']}: {_fmt(t['value'])} {verdict}{note}")
    return lines


def _lost_line(lost: Mapping[str, int], what: str) -> list[str]:
    return [f"[yellow]{what} messages lost: {dict(lost)}[/yellow]"] if any(lost.values()) else []


def _lines(result: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(header lines printed above the table, lines printed below it)."""
    head = [_header(result), "latency in ms; ratio = ours p50 / raw p50 (>1 = ours slower)"]
    lines: list[str] = []
    tp = result["operations"]["throughput"]
    raw_tp = tp["raw"]["ops_per_s"] if tp["raw"] else None
    ours_tp = tp["ours"]["ops_per_s"]
    lines.append(
        f"throughput ({tp['inflight']} in flight): ours {ours_tp:,.0f} creates/s"
        + (f", raw {raw_tp:,.0f} creates/s, ratio {_fmt(tp['ratio'])} (raw/ours)"
           if raw_tp else "")
    )
    cpu_ours = tp["ours"]["client_cpu_us_per_op"]
    lines.append(
        f"client CPU per create: ours {cpu_ours:.0f} µs"
        + (f", raw {tp['raw']['client_cpu_us_per_op']:.0f} µs, ratio {_fmt(tp['cpu_ratio'])}"
           if raw_tp else "")
    )
    lines += _lost_line(result["operations"]["pubsub"].get("lost") or {}, "publish→subscribe")
    lines += _target_lines(result["targets"])
    return head, lines


def _coordinator_lines(result: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(header lines printed above the table, lines printed below it)."""
    ops = result["operations"]
    head = [
        _header(result) + f", namespace {result['namespace']}",
        "latency in ms; raw = the engine's own CAS (claims) or pub/sub of a message of the same "
        "size (push, blocker); ratio = ours p50 / raw p50 (>1 = ours slower)",
    ]
    lines: list[str] = []
    sus = ops["sustained"]
    ours, raw = sus["ours"], sus["raw"]
    lines.append(
        f"sustained ({sus['inflight']} in flight): {ours['ops_per_s']:,.0f} claims/s, "
        f"1,000 claims take {ours['seconds_per_1000']:.2f} s"
        + (f"; raw CAS {raw['ops_per_s']:,.0f}/s, ratio {_fmt(sus['ratio'])} (raw/ours)"
           if raw else "")
    )
    lines.append(
        f"client CPU per claim: {ours['client_cpu_us_per_op']:.0f} µs"
        + (f"; raw CAS {raw['client_cpu_us_per_op']:.0f} µs, ratio {_fmt(sus['cpu_ratio'])}"
           if raw else "")
    )
    lose = ops["claim_lose"]
    lines.append(f"claim (lose): {lose['returned_false']} of {lose['calls_made']} calls returned "
                 "False, as they must")
    setup = result["setup"]
    lines.append(f"setup (not timed): {setup['tasks']:,} task records written in "
                 f"{setup['seconds']:.2f} s, {setup['claimed_record_bytes']} bytes per claimed task")
    for op in ("push", "blocker"):
        lines += _lost_line(ops[op].get("lost") or {}, ops[op]["label"])
    lines += _target_lines(result["targets"])
    return head, lines


class _Progress:
    """Progress on stderr: a rich bar on a terminal, one line per phase otherwise."""

    def __init__(self, s: Settings, labels: Mapping[str, str]) -> None:
        self.labels = labels
        self.console = s.err
        self.live = self.console.is_terminal
        self.bar: Progress | None = None
        self.task: Any = None
        self.phase = ""

    def __enter__(self) -> _Progress:
        if self.live:
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TimeElapsedColumn(),
                                console=self.console, transient=True, auto_refresh=False)
            self.bar.start()
            self.task = self.bar.add_task("starting", total=None)
        return self

    def __call__(self, phase: str, done: int, total: int) -> None:
        label = self.labels.get(phase, phase)
        if self.bar is not None:
            self.bar.update(self.task, description=label, completed=done, total=total)
            self.bar.refresh()
        elif phase != self.phase:
            self.console.print(f"bench: {label} ...")
        self.phase = phase

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _resolve(s: Settings, backend: str | None,
             default: str = "nats") -> tuple[str, str | None, str | None]:
    """(backend, bus URL or None, URL error): the backend is the scheme of
    --bus/IF_BUS_URL when given (a conflicting --backend is a usage error),
    else --backend, else ``default``. A bad URL raises, except in falsify mode."""
    url = s.bus
    url_error: str | None = None
    if url is not None:
        try:
            scheme = parse_url(url).scheme
        except InfraFabricError as exc:
            if not s.falsify:
                raise
            url_error, scheme = exc.message, backend or default
        if backend is not None and backend != scheme:
            raise click.UsageError(
                f"--backend {backend} conflicts with the bus URL {url!r} (from --bus or "
                f"IF_BUS_URL), which is {scheme}://; drop one of them")
        backend = scheme
    return backend or default, url, url_error


def _common_options(inflight_help: str, n_help: str, pace_help: str | None, *,
                    n_default: int = 2000) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options every benchmark takes: --backend, --n, --inflight, --warmup,
    and --pace-ms for those that pace deliveries (``pace_help`` not None)."""
    options = [
        click.option("--backend", type=click.Choice(BACKENDS), default=None,
                     help="Engine to benchmark [default: the scheme of --bus/IF_BUS_URL, else nats]."),
        click.option("--n", "n", type=click.IntRange(10, 1_000_000), default=n_default,
                     show_default=True, help=n_help),
        click.option("--inflight", type=click.IntRange(1, 4096), default=64, show_default=True,
                     help=inflight_help),
        click.option("--warmup", type=click.IntRange(0, 100_000), default=None,
                     help="Discarded samples before measuring [default: 10% of n, 10..200]."),
    ]
    if pace_help is not None:
        options.append(click.option("--pace-ms", type=click.FloatRange(0, 1000), default=1.0,
                                    show_default=True, help=pace_help))

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def _width(s: Settings) -> int:
    """The width :func:`_table` lays out for: the terminal's; unbounded when the
    output is not a terminal (it is printed as plain columns, never cut)."""
    return s.console.width if s.console.is_terminal else 1_000_000


def _render(s: Settings, result: dict[str, Any], head: list[str], short: Mapping[str, str]) -> None:
    if not s.json:
        for line in head:
            s.console.print(line)
        print_table(s.console, _table(result, _width(s), short))


@bench.command("bus")
@_common_options(inflight_help="Creates in flight for the throughput run.",
                 n_help="Samples per latency, and creates for throughput (at least 10).",
                 pace_help="Pause after each publish→subscribe message has arrived.")
@contract
def bus(backend: str | None, n: int, inflight: int, warmup: int | None, pace_ms: float) -> Outcome:
    """Measure our bus against the raw client on the same server.

    Times create (win and lose), CAS update, put→watch and publish→subscribe
    across processes (p50/p95/p99/max), and throughput, for InfraFabric's
    EventBus and for the engine's own client called directly, and reports
    ours/raw. With --bus (or IF_BUS_URL) it uses that server (backend from the
    URL's scheme; it writes under bench/<run>/ and removes it afterwards);
    otherwise it starts a temporary durable server (NATS with sync_interval:
    always, or etcd) and removes it at the end.

    \b
    Examples:
      ifctl bench bus --backend nats --n 2000 --json
      ifctl bench bus --backend etcd --why
      ifctl bench bus --backend memory --n 500
      ifctl bench bus --mode=falsify
    """
    s = settings()
    backend, url, url_error = _resolve(s, backend)
    warm = default_warmup(n) if warmup is None else warmup
    if s.falsify:
        return _falsify(backend, url, url_error, n,
                        f"{n} samples (+{warm} warm-up) per latency, {n} creates for throughput, "
                        f"{inflight} in flight")

    labels = {k: v[0] for k, v in OPERATIONS.items()}
    with (_sigterm_as_interrupt(), _target(backend, url) as (target_url, server, managed),
          _Progress(s, labels) as progress):
        result = run_async(bench_bus(
            target_url, n, inflight=inflight, warmup=warm, pace_ms=pace_ms,
            server=server, cleanup=not managed, progress=progress,
        ))
    head, tail = _lines(result)
    _render(s, result, head, _SHORT)
    return Outcome(data=result, lines=tail,
                   why=_why(backend, n, warm, inflight, pace_ms))


def _coordinator_why(backend: str, n: int, warmup: int, inflight: int, pace_ms: float) -> list[str]:
    raw = {
        "nats": "nats-py called directly on the same server over its own connection: "
                "kv.update(key, value, last=revision) on a separate bucket copied from ours "
                "(deleted afterwards) for the CAS; core NATS publish/subscribe for push and blocker",
        "etcd": "aetcd called directly on the same server: txn mod_revision==rev for the CAS; a "
                "leased put of a fresh key watched by prefix from another process for push and "
                "blocker (how our etcd pub/sub works)",
        "memory": "memory:// has no raw client: raw figures and ratios are null, and push and "
                  "blocker are received in this process",
    }[backend]
    return [
        "the run works in a fresh namespace (?namespace=bench<random>) on the server; on a "
        "given server (--bus) it deletes every key of that namespace afterwards",
        f"every latency is {n} samples after {warmup} discarded warm-up samples, one call at a "
        "time; percentiles are " + QUANTILE_METHOD,
        "claim (win) = claim_task of a fresh available task by the registered swarm bench-a "
        "(a parallel read of task and swarm, then one compare-and-swap); it must return True",
        "claim (lose) = claim_task by bench-b of a task bench-a holds: it reads and refuses, "
        "writes nothing, and must return False",
        "raw CAS = the engine's own compare-and-swap at the key's current revision, writing the "
        "exact bytes of a claimed task record, interleaved with the claims (alternating which "
        "goes first) so noise hits both alike; ratio = claim p50 / raw CAS p50",
        "push and blocker cross processes: a subscriber subprocess runs pushed_tasks(swarm) or "
        "blockers() and stamps time.monotonic_ns() when the decoded task or report is handed "
        "to it; the sender embedded time.monotonic_ns() in the task's description or the "
        "blocker info. CLOCK_MONOTONIC is one system-wide clock on Linux, so the difference "
        "is a valid latency. A 'ready' line and a ping handshake ensure nothing is sent "
        "before the subscription is live; each message waits for the previous one to arrive "
        f"plus {pace_ms:g} ms (latency, not queueing); raw = engine pub/sub of the same size",
        f"sustained = {n} claim_task calls over fresh tasks with {inflight} in flight from this "
        f"one process, and {n} raw CASes the same way, in {throughput_rounds(n)} segments per "
        "side run ABBA ABBA ...; '1,000 claims take' = 1000 / claims per second; client CPU "
        "is this process's CPU time per claim",
        "the claiming coordinator runs no watcher and no observers: the calls themselves are "
        "timed; the tasks are written as the exact records create_task writes (checked against "
        "one made by create_task) with bus.create, because create_task lists the swarms on every "
        "call and on NATS each list leaves a consumer behind for 30 s (1,000 at most)",
        f"raw = {raw}",
        "targets: durable local NATS: claim p95 <= 2.5 ms, p99 <= 5 ms, p50 <= 2x raw CAS p50, "
        "push p99 <= 2 ms, >= 1,000 claims/s; etcd: claim p95 <= 5 ms; seeds' floor (every "
        "backend): p95 < 10 ms, p99 < 15 ms, 1,000 claims < 5 s, >= 100 claims/s. Claim "
        "targets are judged on the winners (the losers write nothing and are faster). A "
        "benchmark reports them and never fails because of a timing",
    ]


#: --topology of ``bench coordinator``
TOPOLOGIES = ("single", "cluster", "both")
#: nodes of the temporary cluster of ``--topology cluster|both``
CLUSTER_NODES = 3
#: the bus deadline on a temporary cluster: a cluster formed a moment ago places its first
#: consumers (a list's, a watch's) slowly on a loaded machine; a deadline never shapes a latency
CLUSTER_TIMEOUT_S = 15.0


@contextlib.contextmanager
def _cluster_target(backend: str) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """(url, server description, managed) of a temporary :data:`CLUSTER_NODES`-node
    cluster of ``backend`` on loopback, stopped and removed on exit."""
    from infrafabric.bench.cluster import EtcdCluster, LocalCluster, NatsCluster

    made: LocalCluster[Any]
    server: dict[str, Any] = {"managed": True, "topology": "cluster", "nodes": CLUSTER_NODES}
    if backend == "nats":
        made = NatsCluster(CLUSTER_NODES)
        server.update({"sync_interval": "always", "jetstream_storage": "file",
                       "replicas": made.replicas})
    elif backend == "etcd":
        made = EtcdCluster(CLUSTER_NODES)
        server["fsync"] = "every commit (etcd default)"
    else:
        raise click.UsageError(f"--topology cluster needs nats or etcd, not {backend}")
    server["data_dir"] = "temporary, removed after the run"
    server["bus_timeout_s"] = CLUSTER_TIMEOUT_S
    with made:
        yield with_options(made.url, timeout=f"{CLUSTER_TIMEOUT_S:g}"), server, True


def _coordinator_run(s: Settings, topology: str, backend: str, url: str | None, n: int,
                     inflight: int, warm: int, pace_ms: float,
                     labels: Mapping[str, str]) -> dict[str, Any]:
    """One ``bench_coordinator`` run on one node (``url`` or a temporary server) or a cluster."""
    target = _cluster_target(backend) if topology == "cluster" else _target(backend, url)
    with target as (target_url, server, managed), _Progress(s, labels) as progress:
        return run_async(bench_coordinator(
            target_url, n, inflight=inflight, warmup=warm, pace_ms=pace_ms,
            server=server, cleanup=not managed, progress=progress,
        ))


def _comparison_table(comparison: Mapping[str, Mapping[str, Any]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1),
                  collapse_padding=True)
    table.add_column("operation\n(ms)", min_width=9, no_wrap=True)
    for title in ("single\np50", "clust.\np50", "single\np99", "clust.\np99", "ratio\np50",
                  "raw\nsgl p50", "raw\ncl p50", "o/raw\nsgl", "o/raw\ncl"):
        table.add_column(title, justify="right", min_width=5)
    for op in COMPARED:
        row = comparison[op]
        table.add_row(_SHORT_COORD[op], _fmt(row["single_p50"]), _fmt(row["cluster_p50"]),
                      _fmt(row["single_p99"]), _fmt(row["cluster_p99"]), _fmt(row["ratio"]),
                      _fmt(row["raw_single_p50"]), _fmt(row["raw_cluster_p50"]),
                      _fmt(row["single_ours_over_raw"]), _fmt(row["cluster_ours_over_raw"]))
    return table


def _comparison_lines(result: Mapping[str, Any]) -> list[str]:
    sus = result["comparison"]["sustained"]

    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:,.0f}"

    lines = [
        f"sustained claims/s: single {rate(sus['single_ops_per_s'])}, cluster "
        f"{rate(sus['cluster_ops_per_s'])} (single/cluster {_fmt(sus['ratio'])}); raw CAS/s: "
        f"single {rate(sus['raw_single_ops_per_s'])}, cluster {rate(sus['raw_cluster_ops_per_s'])}",
    ]
    lines += [f"single: {line}" for line in _target_lines(result["results"]["single"]["targets"])]
    shown = ", ".join(
        f"{t['id']} {_fmt(t['value'])} ({'-' if t['pass'] is None else 'PASS' if t['pass'] else 'MISS'})"
        for t in result["results"]["cluster"]["targets"])
    lines.append(f"[dim]cluster (targets are defined for one node; for comparison only): {shown}[/dim]")
    return lines


@bench.command("coordinator")
@_common_options(inflight_help="Claims in flight for the sustained run.",
                 n_help="Samples per latency, and claims for the sustained rate (at least 10).",
                 pace_help="Pause after each push / blocker report has arrived.")
@click.option("--topology", type=click.Choice(TOPOLOGIES), default="single", show_default=True,
              help="single: one node (the given --bus, or a temporary server); cluster: a temporary "
                   f"{CLUSTER_NODES}-node cluster of the backend (nats or etcd); both: one then the other "
                   "in this run, side by side.")
@contract
def coordinator(backend: str | None, n: int, inflight: int, warmup: int | None,
                pace_ms: float, topology: str) -> Outcome:
    """Measure the coordinator's claims, push and blockers on a real server.

    Times claim_task (winners and losers) interleaved with the engine's own
    CAS on the same server, push to a swarm and blocker to the orchestrator
    received by another process, and the sustained claim rate from one
    process (p50/p95/p99/max, claims/s), and reports them against the
    targets. The run uses a fresh namespace; with --bus (or IF_BUS_URL) it
    uses that server and deletes the namespace's keys afterwards, otherwise it
    starts a temporary durable server (NATS with sync_interval: always, or
    etcd) and removes it at the end.

    --topology cluster runs the same benchmark on a temporary 3-node cluster
    (NATS: replicas=3), where every write is replicated; --topology both runs
    a single node and then the cluster and reports them side by side (--json:
    {"topology": "both", "results": {"single": ..., "cluster": ...},
    "comparison": {op: {"single_p50", "cluster_p50", "ratio", ...}}}).
    Targets are defined for one node: on the cluster they are shown with
    applies: false.

    \b
    Examples:
      ifctl bench coordinator --backend nats --n 2000 --json
      ifctl bench coordinator --backend etcd --why
      ifctl bench coordinator --backend memory --n 500
      ifctl bench coordinator --backend nats --topology both
      ifctl bench coordinator --mode=falsify
    """
    s = settings()
    backend, url, url_error = _resolve(s, backend)
    warm = default_warmup(n) if warmup is None else warmup
    if topology != "single":
        if url is not None:
            raise click.UsageError(f"--topology {topology} starts its own temporary cluster; drop --bus "
                                   "(and IF_BUS_URL), or use --topology single")
        if backend == "memory":
            raise click.UsageError(f"--topology {topology} needs --backend nats or etcd (memory:// has "
                                   "no cluster)")
    why = _coordinator_why(backend, n, warm, inflight, pace_ms)
    if topology != "single":
        why.append(f"cluster = a temporary {CLUSTER_NODES}-node cluster on loopback (each node durable as "
                   "the single server: NATS sync_interval: always with replicas=3; etcd fsync per commit), "
                   "URL naming every node; our bus and the raw client each pick their node as they "
                   "normally do, so a write may be forwarded to the leader. comparison ratio = cluster "
                   "p50 / single p50 (sustained: single claims/s / cluster claims/s); >1 = the cluster "
                   "is slower. Targets are defined for one node and shown with applies: false there")
    if s.falsify:
        checks = _falsify_checks(backend, url, url_error, n,
                                 f"{n} samples (+{warm} warm-up) per latency, {n} claims for the "
                                 f"sustained rate, {inflight} in flight, {2 * n + warm} tasks",
                                 modules=("infrafabric.coordinator",)
                                 + (("infrafabric.bench.cluster",) if topology != "single" else ()))
        if topology != "single":
            checks.append(("topology", True,
                           f"{topology}: a temporary {CLUSTER_NODES}-node {backend} cluster on 127.0.0.1"
                           + (", after a single-node run" if topology == "both" else "")))
        return _checks_outcome(checks, why, backend=backend, topology=topology)

    if topology != "both":
        with _sigterm_as_interrupt():
            result = _coordinator_run(s, topology, backend, url, n, inflight, warm, pace_ms, PHASES)
        if topology == "cluster":
            result["topology"] = "cluster"
        head, tail = _coordinator_lines(result)
        if topology == "cluster":
            head[0] += f", {result['server']['nodes']}-node cluster"
        _render(s, result, head, _SHORT_COORD)
        return Outcome(data=result, lines=tail, why=why)

    results: dict[str, dict[str, Any]] = {}
    with _sigterm_as_interrupt():
        for step, name in enumerate(("single", "cluster"), 1):
            labels = {k: f"[{step}/2] {name}: {v}" for k, v in PHASES.items()}
            results[name] = _coordinator_run(s, name, backend, url, n, inflight, warm, pace_ms, labels)
    results["cluster"]["topology"] = "cluster"
    both: dict[str, Any] = {
        "benchmark": "coordinator", "topology": "both", "backend": backend, "n": n,
        "nodes": {"single": 1, "cluster": CLUSTER_NODES},
        "units": {"latency": "ms", "throughput": "claims/s (raw: CAS/s)",
                  "ratio": "cluster / single (p50); sustained: single claims/s / cluster claims/s; "
                           ">1 = the cluster is slower"},
        "results": results,
        "comparison": compare_topologies(results["single"], results["cluster"]),
        "duration_s": round(sum(r["duration_s"] for r in results.values()), 2),
    }
    if not s.json:
        single, cluster = results["single"], results["cluster"]
        s.console.print(_header(single) + " (single node)")
        s.console.print(_header(cluster) + f" ({CLUSTER_NODES}-node cluster)")
        s.console.print("latency in ms: ours on a single node vs a cluster; ratio = cluster p50 / single "
                        "p50 (>1 = cluster slower); raw = the engine's own client on each")
        print_table(s.console, _comparison_table(both["comparison"]))
    return Outcome(data=both, lines=_comparison_lines(both), why=why)


# -- ifctl bench witness ------------------------------------------------------------


def _witness_why(backend: str, n: int, warmup: int, inflight: int, verify_entries: int) -> list[str]:
    raw = {
        "nats": "nats-py called directly on the same server over its own connection: "
                "kv.create(key, bytes of a one-entry block) on a separate bucket copied from ours "
                "(same storage, replicas, history; deleted afterwards)",
        "etcd": "aetcd called directly on the same server: txn version(key)==0 then put of the "
                "bytes of a one-entry block",
        "memory": "memory:// has no raw client: raw figures and ratios are null",
    }[backend]
    fifth = verify_entries // 5
    where = ("each writer is a task of this process (memory:// is per process)"
             if backend == "memory" else "each writer is a separate OS process")
    return [
        "the run works in fresh namespaces (?namespace=bench<run>-<phase>), one chain per phase; "
        "on a given server (--bus) it deletes every key it wrote afterwards",
        f"appends/s: 1 and 4 writers, {where}, with a Witness of its own on one chain, "
        f"appending {n} entries after {warmup} untimed ones; the writers connect and warm up, "
        "say 'ready', and start together on 'go'; each reports its window in CLOCK_MONOTONIC "
        "(one clock system-wide on Linux) and appends/s = all appends / (last end - first start)",
        "sequential = each writer awaits each append (one in flight); concurrent = each keeps "
        f"{inflight} appends in flight, which group commit writes together (one create per "
        "block); lost creates = creates that lost the race for a position (the writer reads "
        "the winner and tries the next position)",
        f"raw = {raw}" + ("" if backend == "memory" else
                          "; the raw writers are the same kind of processes with the same "
                          "warm-up, count and in-flight count; ours and raw of each "
                          "configuration run one after the other, alternating which goes first"),
        "ratio = raw creates/s / appends/s (latency: ours p50 / raw p50): 1.0 = an append costs "
        "what its one create costs, above 1 = ours is slower; below 1 = group commit beats one "
        "create per entry",
        f"latency = each append of the 1-writer sequential run ({n} samples); percentiles are "
        + QUANTILE_METHOD,
        f"verify: a chain of {verify_entries:,} entries, one per block (what many sequential "
        "writers leave, the worst case for verify), built with WitnessEntry.build and written "
        "with creates in flight, in order (not timed); Witness.verify() then runs in a separate "
        "process, which reports its wall time and its own peak RSS (VmHWM, reset just before "
        "verifying; getrusage ru_maxrss is reported as ru_maxrss_mb but on Linux includes the "
        f"parent's peak RSS at the time the child started). Done at {fifth:,} entries and again at "
        f"{verify_entries:,}: memory that does not grow with the chain keeps the ratio near 1"
        + (" (memory:// is per process: the verifying process writes the chain itself, so its "
           "RSS holds the chain)" if backend == "memory" else ""),
        "targets (durable local NATS): >= 1,000 appends/s with 4 writers (reported for both "
        "sequential and concurrent writers); verify 100,000 entries in <= 5 s; and (any "
        "server) verify's peak RSS at all entries <= 1.25x at 1/5. A benchmark reports them "
        "and never fails because of a timing",
    ]


def _mb(value: Any) -> str:
    return "-" if value is None else f"{value:.1f} MB"


def _witness_table(result: dict[str, Any]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1),
                  collapse_padding=True)
    for title in ("writers", "mode", "in\nflight", "appends\n/s", "raw\ncreates/s",
                  "ratio\nraw/ours", "entries\n/block", "lost\ncreates", "CPU µs\n/append"):
        table.add_column(title, justify="left" if title == "mode" else "right", no_wrap=True)
    for writers, mode in WITNESS_CONFIGS:
        entry = result["operations"][f"{mode}_{writers}w"]
        ours, raw = entry["ours"], entry["raw"] or {}
        ratio = entry["ratio"]
        ratio_text = _fmt(ratio)
        if ratio is not None and ratio > 1.2:
            ratio_text = f"[yellow]{ratio_text}[/yellow]"
        table.add_row(str(writers), mode, str(entry["inflight_per_writer"]),
                      f"{ours['ops_per_s']:,.0f}",
                      f"{raw['ops_per_s']:,.0f}" if raw else "-", ratio_text,
                      _fmt(ours.get("entries_per_block")), str(ours.get("lost_creates", "-")),
                      _fmt(ours["client_cpu_us_per_op"]))
    return table


def _witness_lines(result: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(header lines printed above the tables, lines printed below them)."""
    head = [
        _header(result) + f", namespace {result['namespace']}-*",
        "appends/s from "
        + ("separate writer processes started together"
           if result["writers_are_processes"] else "writer tasks in this process")
        + "; raw = the engine's create of a one-entry block; ratio = raw creates/s / "
          "appends/s (>1 = ours slower)",
    ]
    v = result["operations"]["verify"]
    full, fifth = v["full"], v["fifth"]

    def run(r: dict[str, Any]) -> str:
        growth = f", +{_mb(r['growth_mb'])} while verifying" if r["growth_mb"] is not None else ""
        return (f"{r['entries']:,} entries in {r['seconds']:.2f} s ({r['entries_per_s']:,.0f}/s), "
                f"peak RSS {_mb(r['peak_rss_mb'])}{growth}")

    lines = [
        f"verify in a separate process: {run(full)}; {run(fifth)}; peak RSS ratio "
        f"{_fmt(v['peak_rss_ratio'])} [dim](getrusage ru_maxrss {_mb(full['ru_maxrss_mb'])} and "
        f"{_mb(fifth['ru_maxrss_mb'])}: on Linux it includes this process's peak when the "
        "verifier started)[/dim]",
    ]
    chain = v["chain"]
    if chain.get("write_seconds") is not None:
        lines.append(f"the chain to verify (one entry per block) was written in "
                     f"{chain['write_seconds']:.1f} s ({chain['write_entries_per_s']:,.0f} "
                     "entries/s, not timed)")
    lines += _target_lines(result["targets"])
    return head, lines


@bench.command("witness")
@_common_options(inflight_help="Appends in flight per writer in the concurrent runs.",
                 n_help="Timed appends per writer (at least 10).", pace_help=None,
                 n_default=1000)
@click.option("--verify-entries", type=click.IntRange(10, 10_000_000), default=100_000,
              show_default=True, help="Entries in the chain whose verify is timed "
                                      "(also timed at 1/5 of it).")
@contract
def witness(backend: str | None, n: int, inflight: int, warmup: int | None,
            verify_entries: int) -> Outcome:
    """Measure witness appends/s and the time and memory of verify.

    Appends/s with 1 and 4 writers (each a separate process with its own
    Witness on one chain), each awaiting each append (sequential) or keeping
    --inflight in flight (concurrent, batched by group commit), against the
    engine's own create of the same bytes; the latency of each append; and
    Witness.verify() of a chain of --verify-entries entries in a separate
    process (wall time, peak RSS), at 1/5 and at all of it. The run uses
    fresh namespaces; with --bus (or IF_BUS_URL) it uses that server and
    deletes what it wrote afterwards, otherwise it starts a temporary durable
    server (NATS with sync_interval: always, or etcd) and removes it at the end.

    \b
    Examples:
      ifctl bench witness --backend nats --json
      ifctl bench witness --backend etcd --n 500 --verify-entries 20000
      ifctl bench witness --backend memory --why
      ifctl bench witness --mode=falsify
    """
    s = settings()
    backend, url, url_error = _resolve(s, backend)
    warm = default_warmup(n) if warmup is None else warmup
    if s.falsify:
        return _falsify(backend, url, url_error, n,
                        f"{n} appends (+{warm} warm-up) per writer, 1 and 4 writers, "
                        f"sequential and {inflight} in flight; verify of {verify_entries:,} "
                        f"entries and of {verify_entries // 5:,}",
                        modules=("infrafabric.witness", "infrafabric.bench._witness_worker"))

    with (_sigterm_as_interrupt(), _target(backend, url) as (target_url, server, managed),
          _Progress(s, WITNESS_PHASES) as progress):
        result = run_async(bench_witness(
            target_url, n, verify_entries=verify_entries, inflight=inflight, warmup=warm,
            server=server, cleanup=not managed, progress=progress,
        ))
    head, tail = _witness_lines(result)
    if not s.json:
        for line in head:
            s.console.print(line)
        print_table(s.console, _witness_table(result))
        s.console.print("latency of an append (1 writer, sequential), ms; ratio = ours p50 / "
                        "raw create p50")
        print_table(s.console, _table(result, _width(s), {"latency": "append"}))
    return Outcome(data=result, lines=tail,
                   why=_witness_why(backend, n, warm, inflight, verify_entries))


# -- ifctl bench waste --------------------------------------------------------------


def _waste_why(seed: int, tasks: int, swarms: int) -> list[str]:
    return [
        f"a seeded workload (random.Random({seed})): {swarms} swarms with 2-5 declared "
        "capabilities from the built-in pool, a cost per hour of $0.50-$5.00, and a hidden "
        "skill per capability (0.970-0.999 declared: what meets the default 95 % SLO; 0.10-0.30 "
        f"otherwise); every reputation starts at 1; {tasks} tasks needing 1-3 capabilities "
        "of some swarm's declared set, 0.5-8 h each",
        "an attempt costs estimate x cost per hour (integer micro-dollars) and succeeds with "
        f"probability = product of the assignee's hidden skill over the required capabilities; "
        f"a failed attempt is redone by the same strategy, at most {MAX_ATTEMPTS} attempts",
        "random = each attempt to a uniformly random swarm; governor = a real IFGovernor on the "
        "bus (fresh namespace, budgets too large to trip, each attempt debited with "
        "track_cost, its outcome fed back as reputation with the seeds' formula) and "
        "find_qualified_swarm(required), falling back to the best explain_match candidate when "
        "none qualifies (counted); floor = an oracle that knows the hidden skill",
        "waste = (spend on failed attempts + spend on attempts by a swarm covering < 70 % of the "
        "task, each attempt once) / total spend; the model is in docs/waste-model.md",
        "targets: governor waste <= 5 %, random waste >= 40 %; reported, never asserted",
    ]


def _waste_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    gov = result["strategies"]["governor"]
    if gov["fallbacks"]:
        lines.append(f"[yellow]governor: {gov['fallbacks']} attempts fell back to an "
                     "unqualified swarm (nobody qualified)[/yellow]")
    spent = sum(b["spent_micros"] for b in result["budgets"].values())
    lines.append(f"governor budgets: {format_usd(spent)} debited over "
                 f"{len(result['budgets'])} swarms, {result['ledger_entries']} ledger entries")
    lines += _target_lines(result["targets"])
    return lines


def _waste_table(result: dict[str, Any]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1),
                  collapse_padding=True)
    for title in ("strategy", "total\nspend", "wasted\nspend", "waste\n%", "tasks\ndone",
                  "attempts", "attempts\n/task", "unqualified\nattempts"):
        table.add_column(title, justify="left" if title == "strategy" else "right", no_wrap=True)
    for name in STRATEGIES:
        r = result["strategies"][name]
        table.add_row(name, r["total_spend"], r["wasted_spend"], f"{r['waste_pct']:.1f}",
                      f"{r['tasks_done']}/{r['tasks']}", str(r["attempts"]),
                      f"{r['avg_attempts_per_task']:.2f}", str(r["attempts_unqualified"]))
    return table


@bench.command("waste")
@click.option("--backend", type=click.Choice(BACKENDS), default=None,
              help="Bus for the governor [default: the scheme of --bus/IF_BUS_URL, else memory].")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the workload.")
@click.option("--tasks", type=click.IntRange(1, 100_000), default=200, show_default=True,
              help="Tasks in the workload.")
@click.option("--swarms", type=click.IntRange(1, 1000), default=12, show_default=True,
              help="Swarms in the fleet.")
@contract
def waste(backend: str | None, seed: int, tasks: int, swarms: int) -> Outcome:
    """Measure the spend wasted by random assignment and by the governor.

    Generates a seeded workload (swarms with capabilities, costs and a hidden
    skill; tasks with required capabilities and estimates), runs it with
    random assignment and with the governor's find_qualified_swarm in the same
    run, and reports waste = spend on failed (redone) attempts or attempts by
    an unqualified swarm / total spend. See docs/waste-model.md.

    \b
    Examples:
      ifctl bench waste --seed 1 --json
      ifctl bench waste --seed 2 --tasks 1000 --why
      ifctl bench waste --backend nats
    """
    s = settings()
    backend, url, url_error = _resolve(s, backend, default="memory")
    if s.falsify:
        return _falsify(backend, url, url_error, tasks,
                        f"{tasks} tasks, {swarms} swarms, seed {seed}",
                        modules=("infrafabric.governor", "infrafabric.bench.waste"))

    with (_sigterm_as_interrupt(), _target(backend, url) as (target_url, server, managed),
          _Progress(s, WASTE_PHASES) as progress):
        result = run_async(bench_waste(target_url, seed=seed, tasks=tasks, swarms=swarms,
                                       server=server, cleanup=not managed, progress=progress))
    if not s.json:
        where = "temporary" if result["server"].get("managed") else "given"
        s.console.print(f"bench waste on {result['backend']}:// ({where}), seed {seed}, "
                        f"{tasks} tasks, {swarms} swarms, {result['duration_s']} s")
        print_table(s.console, _waste_table(result))
    return Outcome(data=result, lines=_waste_lines(result), why=_waste_why(seed, tasks, swarms))


# -- ifctl bench hooks ----------------------------------------------------------------


@bench.command("hooks")
@click.option("--backend", type=click.Choice(("nats", "etcd")), default=None,
              help="Bus [default: the scheme of --bus/IF_BUS_URL, else nats].")
@click.option("--n", type=click.IntRange(3, 10_000), default=30, show_default=True,
              help="Hook runs per event, board size and path.")
@click.option("--tasks", "sizes", type=click.IntRange(1, 100_000), multiple=True,
              help="Board sizes (repeatable) [default: 100 and 2000].")
@contract
def hooks(backend: str | None, n: int, sizes: tuple[int, ...]) -> Outcome:
    """Time `ifctl hook` and `ifctl guard` as an agent's client and git run them.

    For each board size, with one task claimed by the agent's swarm, times
    the whole process (spawn to exit, the client's payload on stdin) of the
    post-tool-use hook (renews the lease) and the stop hook (refused: a task
    is held), through the agent's running `ifctl mcp` and with none running
    (straight to the bus); beside them, an in-process heartbeat (the raw bus
    work) and `python -c pass` (the floor of any process). In a real git
    repository, with 50 path leases held by another swarm, it also times the
    PreToolUse tool guard (an edit refused, an edit allowed) and the
    pre-commit guard. Targets: 100 ms at p95 through the server for hooks
    and the tool guard; 1 s for the pre-commit guard.

    \b
    Examples:
      ifctl bench hooks --json
      ifctl bench hooks --backend etcd --n 50 --tasks 100 --tasks 10000
    """
    s = settings()
    backend, url, url_error = _resolve(s, backend, default="nats")
    board = sizes or (100, 2000)
    if s.falsify:
        return _falsify(backend, url, url_error, n,
                        f"{n} runs per event at {', '.join(map(str, board))} tasks",
                        modules=("mcp", "infrafabric.bench.hooks"))
    _require_extra("`ifctl bench hooks` (it starts agents' `ifctl mcp` servers)", "mcp")
    from infrafabric.bench.hooks import bench_hooks

    with (_sigterm_as_interrupt(), _target(backend, url) as (target_url, server, _managed),
          _Progress(s, {}) as progress):
        result = run_async(bench_hooks(target_url, sizes=board, n=n, progress=progress))
    result.update(backend=backend, server=server)
    lines = [f"bench hooks on {backend}:// ({'temporary' if server.get('managed') else 'given'}), "
             f"{n} runs each, {result['duration_s']} s",
             f"process floor (python -c pass): p50 {_fmt(result['process_floor']['p50'])} ms"]
    for run in result["runs"]:
        for path in ("server", "direct"):
            for event, st in run[path].items():
                lines.append(f"{run['tasks']:>6} tasks  {path:<6} {event:<13} p50 {_fmt(st['p50'])} ms  "
                             f"p95 {_fmt(st['p95'])} ms")
        pre = run["pre_commit"]
        lines.append(f"{run['tasks']:>6} tasks  guard pre-commit     p50 {_fmt(pre['p50'])} ms  "
                     f"p95 {_fmt(pre['p95'])} ms")
        lines.append(f"{run['tasks']:>6} tasks  raw heartbeat in-process p50 "
                     f"{_fmt(run['raw_heartbeat']['p50'])} ms")
    lines += _target_lines(result["targets"])
    return Outcome(data=result, lines=lines,
                   why=["wall time of each `ifctl hook claude EVENT` process, spawn to exit",
                        "server: the agent's ifctl mcp answers over its control socket; direct: none runs",
                        f"percentiles: {QUANTILE_METHOD}"])


# -- ifctl bench startup ----------------------------------------------------------------


@bench.command("startup")
@click.option("--backend", type=click.Choice(("nats", "etcd")), default=None,
              help="Bus [default: the scheme of --bus/IF_BUS_URL, else nats].")
@click.option("--n", type=click.IntRange(3, 10_000), default=20, show_default=True,
              help="Runs of each command.")
@contract
def startup(backend: str | None, n: int) -> Outcome:
    """Time what an `ifctl` process costs before it does anything.

    Times the whole process, spawn to exit, of `ifctl --help`, of a real
    `ifctl task heartbeat` on a claim (with no agent server, through the
    connection the first call leaves behind, that first call timed too;
    with the agent's `ifctl mcp` running, which answers it; and with
    IF_PERSIST=0, loading the library every time), and of the post-tool-use
    and stop hooks through the agent's server; beside them `python -c pass`
    (the floor of any process) and the heartbeat's work in a warm process
    (connect, assemble, renew, close). The start-up of a heartbeat that
    loads the library is its wall time less that work. Targets (p50):
    150 ms for each but the IF_PERSIST=0 heartbeat, which is reported.

    \b
    Examples:
      ifctl bench startup --json
      ifctl bench startup --backend etcd --n 50
    """
    s = settings()
    backend, url, url_error = _resolve(s, backend, default="nats")
    if s.falsify:
        return _falsify(backend, url, url_error, n, f"{n} runs of each command",
                        modules=("mcp", "infrafabric.bench.startup"))
    _require_extra("`ifctl bench startup` (it starts an agent's `ifctl mcp` server)", "mcp")
    from infrafabric.bench.startup import bench_startup

    with (_sigterm_as_interrupt(), _target(backend, url) as (target_url, server, _managed),
          _Progress(s, {}) as progress):
        result = run_async(bench_startup(target_url, n=n, progress=progress))
    result.update(backend=backend, server=server)
    ops = result["operations"]
    names = {"python": "python -c pass (the floor)", "help": "ifctl --help",
             "heartbeat_library": "ifctl task heartbeat (IF_PERSIST=0)",
             "heartbeat_warm": "the heartbeat's work, warm process",
             "heartbeat_first": "ifctl task heartbeat (first, no server)",
             "heartbeat": "ifctl task heartbeat (then, no server)",
             "heartbeat_server": "ifctl task heartbeat (agent's server)",
             "hook_post-tool-use": "ifctl hook claude post-tool-use", "hook_stop": "ifctl hook claude stop"}
    lines = [f"bench startup on {backend}:// ({'temporary' if server.get('managed') else 'given'}), "
             f"{n} runs each, {result['duration_s']} s"]
    lines += [f"{names.get(op, op):<38} p50 {_fmt(st['p50'])} ms  p95 {_fmt(st['p95'])} ms"
              for op, st in ops.items()]
    started = result["heartbeat_startup"]
    lines.append(f"{'IF_PERSIST=0 start-up (wall - warm work)':<38} p50 {_fmt(started['p50'])} ms  "
                 f"p95 {_fmt(started['p95'])} ms")
    lines += _target_lines(result["targets"])
    return Outcome(data=result, lines=lines,
                   why=["wall time of each process, spawn to exit, as subprocess.run sees it",
                        "the heartbeat's start-up with IF_PERSIST=0: its wall time less the same work in a "
                        "warm process",
                        "the first heartbeat with no server leaves the persisted connection behind; the next "
                        "ones go through it",
                        f"percentiles: {QUANTILE_METHOD}"])


# -- ifctl bench gateway ----------------------------------------------------------------


@bench.command("gateway")
@click.option("--backend", type=click.Choice(("nats", "etcd")), default=None,
              help="Bus [default: the scheme of --bus/IF_BUS_URL, else nats].")
@click.option("--n", type=click.IntRange(3, 10_000), default=50, show_default=True,
              help="Tasks each agent claims and completes, through the gateway and in-process.")
@click.option("--agents", type=click.IntRange(1, 200), default=4, show_default=True,
              help="Agents working at once on each side.")
@contract
def gateway(backend: str | None, n: int, agents: int) -> Outcome:
    """Time the agent tools as an agent on another machine calls them: through the agent gateway.

    Starts a real gateway (`ifctl mcp --http` over TLS, as `ifctl coordinator
    start --listen` runs it) on the bus, and has --agents agents each claim
    (task_next) and complete (task_complete) --n tasks on a kept MCP session
    with it, with their own tokens. Beside them, in the same run: the same
    calls on the agent tools in this process (what the gateway adds is the
    difference), opening a session (TLS, token, initialize), and one
    compare-and-swap on the bus. Targets: the gateway adds at most 10 ms to a
    claim at p50; a claim through it within 50 ms at p99.

    \b
    Examples:
      ifctl bench gateway --json
      ifctl bench gateway --backend etcd --agents 16 --n 100
    """
    s = settings()
    backend, url, url_error = _resolve(s, backend, default="nats")
    if s.falsify:
        return _falsify(backend, url, url_error, n, f"{agents} agents x {n} tasks on each side",
                        modules=("mcp", "uvicorn", "infrafabric.bench.gateway"))
    _require_extra("`ifctl bench gateway`", "mcp", "uvicorn", "starlette")
    from infrafabric.bench.gateway import bench_gateway

    with (_sigterm_as_interrupt(), _target(backend, url) as (target_url, server, _managed),
          _Progress(s, {}) as progress):
        result = run_async(bench_gateway(target_url, n=n, agents=agents, progress=progress))
    result.update(backend=backend, server=server)
    ops = result["ops"]
    lines = [f"bench gateway on {backend}:// ({'temporary' if server.get('managed') else 'given'}), "
             f"{agents} agents x {n} tasks, {result['duration_s']} s"]
    for key, label in (("gateway_next", "claim (task_next), through the gateway"),
                       ("served_next", "claim (task_next), in-process"),
                       ("gateway_complete", "task_complete, through the gateway"),
                       ("served_complete", "task_complete, in-process"),
                       ("connect", "open a session with the gateway"), ("bus_cas", "bus compare-and-swap")):
        st = ops[key]
        lines.append(f"{label:<40} p50 {_fmt(st['p50'])} ms  p99 {_fmt(st['p99'])} ms  ({st['count']})")
    lines += _target_lines(result["targets"])
    return Outcome(data=result, lines=lines,
                   why=["gateway: a tool call on a kept MCP session over HTTPS with a bearer token, to a "
                        "real gateway process; in-process: the same call on AgentSession",
                        f"percentiles: {QUANTILE_METHOD}"])


# -- ifctl bench scale ------------------------------------------------------------------


@bench.command("scale")
@click.option("--backend", type=click.Choice(("nats", "etcd")), default=None,
              help="Bus [default: the scheme of --bus/IF_BUS_URL, else nats].")
@click.option("--n", type=click.IntRange(3, 10_000), default=50, show_default=True,
              help="next_task calls per board size (half one-shot, half long-lived).")
@click.option("--tasks", "sizes", type=click.IntRange(10, 1_000_000), multiple=True,
              help="Board sizes (repeatable) [default: 100, 1000, 10000; --quick: 100, 1000].")
@click.option("--agents", type=click.IntRange(1, 5000), multiple=True,
              help="Waiting agents for the wake-up runs (repeatable) [default: 10, 100, 1000; "
                   "--quick: 10, 50].")
@click.option("--rounds", type=click.IntRange(1, 1000), default=None,
              help="Tasks created per wake-up run [default: 20; --quick: 5].")
@click.option("--drain-agents", type=click.IntRange(0, 10_000), default=None,
              help="Simulated agents draining a board; 0 skips the drain [default: 1000; --quick: 40].")
@click.option("--drain-tasks", type=click.IntRange(1, 1_000_000), default=None,
              help="Tasks on the drained board [default: 20000; --quick: 400].")
@click.option("--processes", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Processes the drain's agents run in.")
@click.option("--quick", is_flag=True, help="Small boards, few agents and calls (for CI).")
@contract
def scale(backend: str | None, n: int, sizes: tuple[int, ...], agents: tuple[int, ...], rounds: int | None,
          drain_agents: int | None, drain_tasks: int | None, processes: int, quick: bool) -> Outcome:
    """Time the hand-out as the board and the fleet grow, through the
    governed, witnessed fleet agents use.

    \b
    - next_task at each board size, one-shot (a CLI process) and long-lived
      (an ifctl mcp server's coordinator), beside one compare-and-swap through
      the bus client and through the engine's own client, in the same run;
    - the import of each board (tasks/s), beside the engine's raw create rate;
    - create→first claim with N agents waiting, and agents woken per task;
    - N simulated agents in several processes draining a board: tasks/s and
      tasks completed twice.
    Targets (reported, never asserted): next_task p50 flat across sizes (≤
    1.5x), ≤ 4x the raw CAS, p99 ≤ 10 ms, one-shot and long-lived; import ≥
    2,000 tasks/s;
    create→first claim p99 with the most agents ≤ 2x with the fewest; 0
    duplicates.

    \b
    Examples:
      ifctl bench scale --json
      ifctl bench scale --quick
      ifctl bench scale --backend etcd --tasks 100 --tasks 100000 --drain-agents 0
    """
    s = settings()
    backend, url, url_error = _resolve(s, backend, default="nats")
    board = sizes or ((100, 1000) if quick else (100, 1000, 10000))
    calls = min(n, 20) if quick else n
    crowd = agents or ((10, 50) if quick else (10, 100, 1000))
    rounds = rounds or (5 if quick else 20)
    drain_agents = (40 if quick else 1000) if drain_agents is None else drain_agents
    drain_tasks = drain_tasks or (400 if quick else 20000)
    if s.falsify:
        detail = (f"{calls} calls at {', '.join(map(str, board))} tasks; wake-ups with "
                  f"{', '.join(map(str, crowd))} agents; drain {drain_agents} agents, {drain_tasks} tasks")
        return _falsify(backend, url, url_error, calls, detail, modules=("infrafabric.bench.scale",))
    from infrafabric.bench.scale import bench_scale

    with (_sigterm_as_interrupt(), _target(backend, url) as (target_url, server, _managed),
          _Progress(s, {}) as progress):
        result = run_async(bench_scale(target_url, sizes=board, n=calls, agents=crowd, rounds=rounds,
                                       drain_agents=drain_agents, drain_tasks=drain_tasks,
                                       processes=processes, progress=progress))
    result.update(backend=backend, server=server)
    lines = [f"bench scale on {backend}:// ({'temporary' if server.get('managed') else 'given'}), "
             f"{calls} next_task calls per size, {result['duration_s']} s"]
    for run in result["runs"]:
        nt, lived, cas = run["next_task"], run["next_task_long_lived"], run["bus_cas"]
        lines.append(f"{run['tasks']:>8,} tasks  import {run['import_per_s']:>7,.0f}/s  next_task p50 "
                     f"{_fmt(nt['p50'])} ms p99 {_fmt(nt['p99'])} ms (long-lived p50 {_fmt(lived['p50'])} ms "
                     f"p99 {_fmt(lived['p99'])} ms)  bus CAS p50 {_fmt(cas['p50'])} ms"
                     + (f", raw {_fmt(run['raw_cas']['p50'])} ms" if run.get("raw_cas") else ""))
        if lived.get("error"):
            lines.append(f"          long-lived failed: {escape(lived['error'])}")
    raw = result["raw"]
    if raw is not None:
        lines.append(f"raw engine: CAS p50 {_fmt(raw['cas']['p50'])} ms, "
                     f"creates {raw['creates_per_s']:,.0f}/s")
    for w in result["wakeups"]:
        c = w["create_to_claim"]
        lines.append(f"{w['agents']:>6,} agents waiting: create→first claim p50 {_fmt(c['p50'])} ms "
                     f"p99 {_fmt(c['p99'])} ms; pushes per task {w['pushes_per_task']['mean']:g} "
                     f"(max {w['pushes_per_task']['max']}), claim attempts per task "
                     f"{w['claim_attempts_per_task']['mean']:g}")
    d = result["drain"]
    if d is not None:
        lines.append(f"drain: {d['agents']:,} agents in {d['processes']} processes, {d['distinct']:,} of "
                     f"{d['tasks']:,} tasks in {d['duration_s']} s ({d['tasks_per_s']}/s); "
                     f"{d['duplicates']} done twice, {d['left_undone']} left, "
                     f"{d['agent_errors']} agent errors")
    lines += _target_lines(result["targets"])
    return Outcome(data=result, lines=lines,
                   why=["next_task: governed (the governor admits) and witnessed (an entry per claim); "
                        "one-shot: a fleet of its own per call, no watcher (ifctl task next); long-lived: "
                        "one fleet, its watcher running (ifctl mcp), what a call left to do after it "
                        "answered let finish before the next",
                        "import: one create_tasks call, every task witnessed and indexed",
                        "wake-ups: pushes of the created task (the creator's and the follow-ups), and "
                        "claim attempts on it (woken agents and ready-index reads)",
                        f"percentiles: {QUANTILE_METHOD}"])


# -- ifctl bench chassis --------------------------------------------------------------


def _chassis_table(result: dict[str, Any]) -> Table:
    """Workloads down, variants across: raw p50 in ms, then each variant's p50 / raw p50."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1),
                  collapse_padding=True)
    variants = [v for v in VARIANTS if v != "raw"]
    table.add_column("workload", justify="left")
    table.add_column("raw\np50 ms", justify="right")
    for variant in variants:
        table.add_column(variant.replace("_", "\n", 1), justify="right")
    for workload, ratios in result["overheads"].items():
        raw = result["operations"][f"{workload}.raw"]["ours"]["p50"]
        cells = []
        for variant in variants:
            value = ratios.get(variant)
            text = _fmt(value)
            over = value is not None and value > LIMIT_TARGET and variant in (*LIMITS, "process") \
                and not (variant == "process" and workload == "trivial")
            cells.append(f"[red]{text}[/red]" if over else text)
        table.add_row(workload, _fmt(raw), *cells)
    for name in ("compile", "cache_load"):
        op = result["operations"][name]
        table.add_row(name, _fmt((op["raw"] or {}).get("p50")), f"ours {_fmt(op['ours']['p50'])} ms",
                      *([""] * (len(variants) - 1)))
    return table


def _chassis_lines(result: dict[str, Any]) -> list[str]:
    """The absolute targets one by one, the per-limit ones as a count and the misses."""
    absolute = [t for t in result["targets"] if t["metric"] != "ratio"]
    limits = [t for t in result["targets"] if t["metric"] == "ratio" and t["value"] is not None]
    misses = [t for t in limits if not t["pass"]]
    lines = _target_lines(absolute)
    lines.append("target each limit, all together, and all kept from outside (process) "
                 f"<= {LIMIT_TARGET:g}x raw: "
                 f"{len(limits) - len(misses)} of {len(limits)} within"
                 + ("" if not misses else "; over: " + ", ".join(
                     f"{t['operation']} {_fmt(t['value'])}x" for t in misses)))
    return lines


def _chassis_why() -> list[str]:
    return ["raw = wasmtime.Engine() defaults, a store per run, the module pre-linked once, the same ABI "
            "calls; each limit = raw plus that one mechanism (memory: Store.set_limits; epoch: epoch "
            "interruption, a deadline and a 1 ms ticker; cpu_share: epoch plus the pacing callback every "
            "10 ms, never pausing; fuel: fuel metering); all = every mechanism at once",
            "sandbox = infrafabric.chassis.Sandbox with its default limits (memory cap, wall clock: no "
            "fuel, no pacing); sandbox_fuel = the same with max_fuel (the metered engine); process = "
            "ProcessSandbox, default limits: a warm worker process whose engine compiles no check, "
            "killed at the deadline and stopped (SIGSTOP) to keep the CPU share",
            "variants are sampled in turn, the order rotating each round; ratio = variant p50 / raw p50",
            "compile samples each compile a new module (a comment changes its digest), so no cache answers",
            f"percentiles: {QUANTILE_METHOD}"]


def _chassis_checks(*, python: bool, n: int) -> list[tuple[str, bool, str]]:
    """The preconditions of ``bench chassis``: (check, ok, detail)."""
    from infrafabric.chassis import runtimes

    try:
        importlib.import_module("wasmtime")
        engine: tuple[str, bool, str] = ("wasmtime imports", True, "ok")
    except ImportError as exc:
        engine = ("wasmtime imports", False, str(exc))
    problem = runtimes.problem(runtimes.PYTHON) if python else None
    # a missing runtime does not fail the run: Python start-up is then reported as not measured
    return [engine,
            ("python runtime", True,
             f"warning: {problem}: Python start-up would not be timed (ifctl chassis setup)" if problem
             else "installed" if python else "not timed (--no-python)"),
            ("temporary directory writable", os.access(tempfile.gettempdir(), os.W_OK),
             tempfile.gettempdir()),
            ("n sane", n >= 20, f"{n} trivial tasks")]


@bench.command("chassis")
@click.option("--n", type=click.IntRange(20, 1_000_000), default=200, show_default=True,
              help="Samples of the trivial task (other figures take a share of it).")
@click.option("--no-python", is_flag=True, help="Skip the sandboxed-Python workloads.")
@contract
def chassis_bench(n: int, no_python: bool) -> Outcome:
    """Measure what each sandbox limit costs, per workload, beside raw wasmtime.

    Workloads: a trivial task, a memory-bound hash loop, recursive calls, a
    tight arithmetic loop, and sandboxed CPython (print(1), and a 0.2 s
    loop; needs `ifctl chassis setup`). Each runs raw (a plain engine, no
    limit), with each limit alone (memory cap, wall clock, CPU share, fuel),
    with all of them, through the Sandbox as users call it (default limits,
    then with max_fuel), the variants sampled in turn, and through the
    ProcessSandbox (no check compiled into the guest; limits kept from
    outside its worker process) beside a raw run of its own. Also: compile
    and disk-cache load. Targets (reported, never asserted): each limit, all
    together, and the ProcessSandbox <= 5 % over raw; a trivial task <= 1 ms
    median; Python start-up <= 100 ms median.

    \b
    Examples:
      ifctl bench chassis --json
      ifctl bench chassis --n 2000 --why
      ifctl bench chassis --no-python
    """
    s = settings()
    why = _chassis_why()
    if s.falsify:
        return _checks_outcome(_chassis_checks(python=not no_python, n=n), why)
    with _sigterm_as_interrupt(), _Progress(s, CHASSIS_PHASES) as progress:
        result = bench_chassis(n=n, python=not no_python, progress=progress)
    if not s.json:
        s.console.print(f"bench chassis on wasmtime {result['engine']['version']}, n={n}, "
                        f"{result['machine']['cores']} cores, {result['duration_s']} s "
                        "(raw p50 in ms; each variant as its p50 / raw p50, red: over the 5 % target)")
        print_table(s.console, _chassis_table(result))
    lines = [f"[yellow]{note}[/yellow]" for note in result["notes"]] + _chassis_lines(result)
    return Outcome(data=result, lines=lines, why=why)



# -- ifctl bench all ------------------------------------------------------------------


_UNIT_FORMAT: dict[str, Callable[[float], str]] = {
    "ms": lambda v: f"{_fmt(v)} ms",
    "ops/s": lambda v: f"{v:,.0f}/s",
    "s": lambda v: f"{v:.2f} s",
    "x": lambda v: f"{v:.3f}x",
    "share of spend": lambda v: f"{v * 100:.1f} %",
}


def _with_unit(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    fmt = _UNIT_FORMAT.get(unit)
    return _fmt(value) if fmt is None else fmt(value)


def _verdict(row: Mapping[str, Any]) -> str:
    if row["pass"] is None:
        text = "n/a"
        return f"[dim]{text}[/dim]"
    text = "PASS" if row["pass"] else "MISS"
    if not row["applies"]:
        return f"[dim]({text})[/dim]"
    return f"[green]{text}[/green]" if row["pass"] else f"[red]{text}[/red]"


def _all_table(result: Mapping[str, Any]) -> tuple[Table, list[str]]:
    """The summary table (one row per target) and its numbered notes."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1),
                  collapse_padding=True)
    table.add_column("bench")
    table.add_column("target", overflow="fold", ratio=1)
    for title in ("value", "ours", "raw\n(same run)"):
        table.add_column(title, justify="right", no_wrap=True)
    table.add_column("", no_wrap=True)
    notes: list[str] = []
    previous = None
    for row in result["summary"]:
        mark = ""
        if row["note"]:
            if row["note"] not in notes:
                notes.append(row["note"])
            mark = f" [dim]\\[{notes.index(row['note']) + 1}][/dim]"
        ratio_row = row["metric"] == "ratio"
        figure_unit = "ms" if ratio_row else row["unit"]
        same = not ratio_row and row["ours"] == row["value"]
        table.add_row("" if row["benchmark"] == previous else row["benchmark"],
                      (row["target"] or "[red]did not run[/red]") + mark,
                      _with_unit(row["value"], row["unit"]),
                      "" if same else _with_unit(row["ours"], figure_unit),
                      _with_unit(row["raw"], figure_unit), _verdict(row))
        previous = row["benchmark"]
    return table, [f"[dim]\\[{i}] {escape(note)}[/dim]" for i, note in enumerate(notes, 1)]


def _all_why(backend: str, plan: Plan) -> list[str]:
    why = [
        "each benchmark runs as `ifctl bench NAME` would alone, one after the other, each on a "
        + ("fresh temporary durable server (removed afterwards)" if backend != "memory"
           else "fresh in-process memory:// store")
        + " or on the given --bus in a fresh namespace it cleans up; chassis needs no bus",
        "value = the figure a target is judged on; ours and raw = the same statistic for "
        "InfraFabric and for the engine's own client called directly in the same run (for a "
        "ratio target, each side's p50 in ms)",
        "PASS/MISS in brackets: the target is defined for another backend or server and is shown for "
        "comparison; n/a: not measured in this run (the note says why). Targets are reported, "
        "never asserted: a MISS does not change the exit code",
    ]
    if plan == QUICK:
        why.append("--quick: a CI-sized run that checks every figure is produced and sane; its figures "
                   "have too few samples to judge the targets")
    warm = default_warmup
    sections = {
        "bus": _why(backend, plan.bus_n, warm(plan.bus_n), plan.inflight, plan.pace_ms),
        "coordinator": _coordinator_why(backend, plan.coordinator_n, warm(plan.coordinator_n),
                                        plan.inflight, plan.pace_ms),
        "witness": _witness_why(backend, plan.witness_n, warm(plan.witness_n), plan.inflight,
                                plan.verify_entries),
        "chassis": _chassis_why(),
        "waste": _waste_why(plan.seed, plan.waste_tasks, plan.waste_swarms),
    }
    for name, lines in sections.items():
        why += [f"{name} ({plan.describe(name)}): {line}" for line in lines]
    return why


@bench.command("all")
@click.option("--backend", type=click.Choice(BACKENDS), default=None,
              help="Engine to benchmark [default: the scheme of --bus/IF_BUS_URL, else nats].")
@click.option("--quick", is_flag=True,
              help="A CI-sized run (small n for each): checks the figures are produced and sane, "
                   "in under a minute.")
@contract
def bench_all_command(backend: str | None, quick: bool) -> Outcome:
    """Run every benchmark (bus, coordinator, witness, chassis, waste) and
    show each figure beside its target and the raw engine's figure measured
    in the same run.

    Each benchmark runs as it would alone (`ifctl bench NAME` with its
    defaults, or small sizes with --quick), each on a fresh temporary durable
    server, or on --bus (IF_BUS_URL) in fresh namespaces it cleans up. --json
    gives one document: {"benchmark": "all", "results": {NAME: that
    benchmark's report}, "summary": [one row per target]}. Targets are
    reported, never asserted; a benchmark that cannot run is reported and the
    others still run (exit 1).

    \b
    Examples:
      ifctl bench all --backend nats --json > bench.json
      ifctl bench all --quick --backend memory
      ifctl bench all --backend etcd --why
      ifctl bench all --mode=falsify
    """
    s = settings()
    backend, url, url_error = _resolve(s, backend)
    plan = QUICK if quick else FULL
    if s.falsify:
        checks = _falsify_checks(
            backend, url, url_error, min(plan.bus_n, plan.coordinator_n, plan.witness_n),
            "; ".join(f"{name}: {plan.describe(name)}" for name in BENCHMARKS),
            modules=("infrafabric.coordinator", "infrafabric.witness", "infrafabric.bench._witness_worker",
                     "infrafabric.governor", "infrafabric.bench.waste", "infrafabric.bench.all"))
        checks += [c for c in _chassis_checks(python=plan.chassis_python, n=plan.chassis_n)
                   if c[0] not in {name for name, _, _ in checks}]
        return _checks_outcome(checks, _all_why(backend, plan), backend=backend, quick=quick)

    def progress(name: str) -> _Progress:
        step = BENCHMARKS.index(name) + 1
        return _Progress(s, {k: f"[{step}/{len(BENCHMARKS)}] {name}: {v}"
                             for k, v in ALL_PHASES[name].items()})

    def on_error(name: str, exc: Exception) -> None:
        if s.debug or (isinstance(exc, InfraFabricError) and exc.exit_code in (2, 3)):
            raise exc  # bad input or an unreachable bus: every benchmark would fail alike
        s.err.print(f"bench all: {name} did not run: {escape(str(exc))}")

    with _sigterm_as_interrupt():
        result = run_all(backend, lambda: _target(backend, url), plan=plan, progress=progress,
                         on_error=on_error)
    if not s.json:
        where = "given server " + str(url) if url else (
            "fresh in-process store each" if backend == "memory" else "a fresh temporary durable server each")
        s.console.print(f"bench all on {backend} ({where}){', quick' if quick else ''}: "
                        f"{result['machine']['cores']} cores, {result['duration_s']} s")
        for name, report in result["results"].items():
            took = f"{report['duration_s']} s" if "duration_s" in report else "[red]did not run[/red]"
            s.console.print(f"  {name}: {plan.describe(name)}; {took}")
        table, notes = _all_table(result)
        print_table(s.console, table)
        for note in notes:
            s.console.print(note)
    failed = result["failed"]
    lines = [f"[red]{name} did not run: {escape(result['results'][name]['error'])}[/red]" for name in failed]
    return Outcome(data=result, lines=lines, why=_all_why(backend, plan),
                   exit_code=EXIT_REFUSED if failed else 0)
