"""``nats://host:port[,host:port...]``: NATS JetStream.

The key-value store is one JetStream KV bucket (``?bucket=``, default
``infrafabric``; file storage, ``?history=`` revisions kept per key, default
64, ``?replicas=`` default 1). A key ``ns/a/b.c`` is stored under the KV key
``ns.a.b=2Ec`` (see :func:`~infrafabric.bus.keys.to_tokens`), so a prefix maps
onto a NATS subject filter. Revisions are the bucket stream's sequence
numbers: they grow with every write to the bucket, whatever its namespace.

Pub/sub uses core NATS subjects ``if.<tokens>``, which never collide with the
``$KV.`` subjects of the bucket.

The connection reconnects forever on its own. While it is down every call
fails at once with :class:`~infrafabric.errors.BusUnavailableError`. A call
waiting for its answer when the connection drops ends at once too: a write
with :class:`~infrafabric.errors.BusTimeoutError` (its outcome is unknown; a
write still buffered in the client is even sent after the reconnect), a read
with :class:`~infrafabric.errors.BusUnavailableError`. Watches are re-created after every reconnect from the
last revision they delivered, because the server forgets their (in-memory)
consumers when it restarts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import re
import uuid
from collections.abc import AsyncGenerator, Iterator, Sequence
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.js import JetStreamContext, api
from nats.js.api import StatusCode
from nats.js.kv import KV_DEL, KV_MARKER_REASON, KV_OP, KV_PURGE, KeyValue

from infrafabric.bus.base import Entry, EventBus, EventKind, Message, Subscription, Watch
from infrafabric.bus.keys import decode_segment, from_tokens, prefix_filter, to_tokens
from infrafabric.bus.security import Security, access_failure
from infrafabric.bus.url import BusURL
from infrafabric.errors import (
    BadKeyError,
    BusError,
    BusTimeoutError,
    BusUnavailableError,
    CompactedError,
    ConfigurationError,
    InfraFabricError,
)

__all__ = ["NatsBus"]

log = logging.getLogger(__name__)

#: prefix of the core NATS subjects used for pub/sub
SUBJECT_PREFIX = "if."
#: wait between reconnect attempts
RECONNECT_WAIT = 0.2
#: seconds between client PINGs; when MAX_OUTSTANDING_PINGS are unanswered the
#: next tick declares the connection dead and reconnects (to another node of a
#: cluster): ~15 s for a frozen (SIGSTOPped) server, whose TCP connections stay
#: open (nats-py's default of 120 s takes minutes; 20 s took 60 s)
PING_INTERVAL = 5
MAX_OUTSTANDING_PINGS = 2
#: connection attempts per server before the *initial* connect gives up
INITIAL_ATTEMPTS = 2
#: backoff bounds when re-creating a watch fails right after a reconnect
RESUME_BACKOFF = (0.05, 2.0)
#: an ephemeral consumer whose client vanished is removed after this long
CONSUMER_INACTIVE = 30.0
#: idle heartbeat of a watch's consumer: nats-py re-creates an ordered consumer
#: that missed two (its server died while this client stayed connected to
#: another node of a cluster); its default of 5 s took 10-20 s to notice
WATCH_HEARTBEAT = 1.0

#: the JetStream API prefix (the bus never sets a domain or another prefix)
JS_API = "$JS.API"
#: a replica not heard from for this long does not count towards the stream's
#: quorum in the health check (raft heartbeats every second; a lost peer's
#: ``current`` flag stays set, only its last-seen age grows)
REPLICA_STALE_S = 5.0
#: statuses that end a pull request without an error
PAGE_BYTES = 8 << 20
_PULL_DONE = frozenset({StatusCode.NO_MESSAGES.value, StatusCode.REQUEST_TIMEOUT.value})

#: NATS KV keeps at most this many revisions per key
MAX_HISTORY = 64
_BUCKET_RE = re.compile(r"[A-Za-z0-9_-]+")

#: operations whose outcome is unknown when their answer is lost
_WRITES = frozenset({"put", "create", "update", "delete", "publish"})

CONNECT_HINT = ("is the server running? A bus named by IF_BUS_URL or --bus is never replaced by the embedded "
                "one; without them, `ifctl coordinator start` starts the embedded local server")

_UNAVAILABLE = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.NoServersError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.NoRespondersError,
    nats.errors.AuthorizationError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    OSError,
)


async def await_stream(js: JetStreamContext, subject: str, within: float) -> None:
    """Wait (at most ``within`` seconds) until the stream holding ``subject``
    answers a write sent to this server. In a cluster, a server learns of the
    stream leader's interest in the stream's subjects through the routes, up to
    ~0.5 s after the stream was created: until then every write fails with
    "no response from stream". The probe is a write the stream refuses (it
    expects a subject sequence no key ever reaches), so it writes nothing.
    After that it returns quietly: the first real call reports the failure."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    headers = {api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value: str(2**63 - 1)}
    while True:
        try:
            await js.publish(subject, b"", headers=headers,
                             timeout=max(deadline - loop.time(), 0.01))
        except (nats.js.errors.NoStreamResponseError, nats.errors.NoRespondersError):
            if loop.time() >= deadline:
                return
            await asyncio.sleep(0.02)
            continue
        except (nats.js.errors.APIError, nats.errors.TimeoutError):
            pass  # refused (as it must be), or slow: the stream answers
        return


def _is_wrong_last(exc: BaseException) -> bool:
    """True if ``exc`` is JetStream's "wrong last sequence" (a lost CAS)."""
    if isinstance(exc, nats.js.errors.KeyWrongLastSequenceError):
        return True
    return isinstance(exc, nats.js.errors.APIError) and exc.err_code in (10071, 10164)


class TlsNotOffered(nats.errors.Error):
    """The server did not announce TLS, and this client asks for it."""


class _GuardedClient(Client):
    """nats-py's client, never sending its CONNECT (credentials, an NKEY's
    signature, a JWT) in clear text when TLS was asked for. nats-py follows
    the server's INFO on TLS, on the first connect and on every reconnect, so
    a server that does not announce it, or someone in between, would get
    them. The refusal is a nats-py error, so its reconnect loop goes on
    trying (other servers of the URL) instead of ending."""

    def __init__(self, tls_required: bool) -> None:
        super().__init__()
        self._if_tls_required = tls_required

    def _connect_command(self) -> bytes:
        if self._if_tls_required and not self._server_info.get("tls_required"):
            raise TlsNotOffered("the server does not offer TLS: this client's CONNECT was not sent")
        return super()._connect_command()


def _auth_options(security: Security) -> dict[str, Any]:
    """nats-py's ``connect`` arguments for ``security`` (checked now: an NKEY
    or ``.creds`` file needs the ``nkeys`` package)."""
    options: dict[str, Any] = {}
    context = security.ssl_context()
    if context is not None:
        options["tls"] = context
    if security.user and security.password:
        options.update(user=security.user, password=security.password)
    elif security.token:
        options["token"] = security.token
    elif security.nkey or security.creds:
        try:
            import nkeys  # noqa: F401 - nats-py imports it when it signs
        except ImportError as exc:
            raise ConfigurationError(
                f"{security.origin['nkey' if security.nkey else 'creds']}: NKEY and .creds "
                "authentication needs the nkeys package", hint="pip install 'infrafabric[nkeys]'") from exc
        if security.nkey:
            options["nkeys_seed"] = str(security.nkey)
        else:
            options["user_credentials"] = str(security.creds)
    return options


def _describe(exc: BaseException) -> str:
    """A one-line reason for ``exc`` (nats-py's own texts can be empty or noisy)."""
    if isinstance(exc, nats.js.errors.ServiceUnavailableError):
        return "JetStream is not available"
    if isinstance(exc, nats.js.errors.APIError):
        code = exc.err_code or exc.code
        text = exc.description or type(exc).__name__
        return f"JetStream error {code}: {text}" if code else text
    if isinstance(exc, TimeoutError) and not str(exc):
        return "no answer within connect_timeout"  # only the connect has a bare one
    return str(exc) or type(exc).__name__


def _scan_key(tokens: str) -> str:
    """:func:`~infrafabric.bus.keys.from_tokens`, skipping the decoding of
    tokens without an ``=`` escape (most of them): a scan decodes every key."""
    if "=" not in tokens:
        return tokens.replace(".", "/")
    return "/".join(t if "=" not in t else decode_segment(t) for t in tokens.split("."))


def _sequence_and_pending(msg: Msg) -> tuple[int, int]:
    """The stream sequence and the consumer's pending count of a JetStream
    message: ``msg.metadata`` without the datetime and dataclasses it builds
    (a scan reads every entry through this)."""
    tokens = (msg.reply or "").split(".")
    if tokens[:2] == ["$JS", "ACK"]:
        if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
            return int(tokens[5]), int(tokens[8])
        if len(tokens) >= 11:  # with <domain>.<account hash> after ACK
            return int(tokens[Msg.Ack.StreamSeq]), int(tokens[Msg.Ack.NumPending])
    meta = msg.metadata  # raises what nats-py raises for a malformed reply
    return meta.sequence.stream, meta.num_pending


def _operation(msg: Msg) -> EventKind:
    """PUT, or DELETE for a KV delete/purge marker (client- or server-placed)."""
    headers = msg.headers
    if headers:
        op = headers.get(KV_OP)
        if op in (KV_DEL, KV_PURGE):
            return EventKind.DELETE
        if op is None and headers.get(KV_MARKER_REASON) is not None:
            return EventKind.DELETE
    return EventKind.PUT


class _NatsWatch(Watch):
    """A watch fed by an ordered JetStream push consumer over the bucket's
    subjects under the prefix, re-created by the bus after every reconnect."""

    def __init__(self, bus: NatsBus, prefix: str, start_revision: int | None) -> None:
        super().__init__(bus, prefix, start_revision)
        self._nats = bus
        self._sub: JetStreamContext.PushSubscription | None = None
        self._lock = asyncio.Lock()
        #: bumped whenever the consumer is replaced; messages of older ones are dropped
        self._generation = 0
        #: highest revision put in the queue (some may not have been consumed yet)
        self._fed = 0
        #: set on reconnect: the consumer must be re-created
        self._stale = False

    async def _open_from(self, revision: int) -> None:
        bus = self._nats
        self._fed = revision - 1
        with bus._translate("watch", self.prefix):
            info = await bus._js.stream_info(bus._stream)
        if revision < info.state.first_seq:
            raise CompactedError(
                f"watch start revision {revision} is older than the oldest kept "
                f"({info.state.first_seq}) in bucket {bus._bucket!r}"
            )
        # registered first, so a reconnect during the subscribe re-creates it
        bus._watches.add(self)
        try:
            await self._subscribe()
        except BaseException:
            bus._watches.discard(self)
            raise

    async def _subscribe(self) -> None:
        """(Re)create the consumer from the revision after the last one fed."""
        bus = self._nats
        async with self._lock:
            if self._closed:
                return
            self._generation += 1
            generation = self._generation
            old, self._sub = self._sub, None
            if old is not None:
                await bus._unsubscribe(old)

            async def on_msg(msg: Msg) -> None:
                if generation != self._generation:
                    return
                revision = msg.metadata.sequence.stream
                if revision <= self._fed:
                    return
                self._fed = revision
                kind = _operation(msg)
                key = from_tokens(msg.subject[len(bus._kv_prefix) :])
                value = msg.data if kind is EventKind.PUT else None
                self._feed_physical(kind, key, value, revision)

            config = api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=self._fed + 1,
                inactive_threshold=CONSUMER_INACTIVE,
            )
            with bus._translate("watch", self.prefix):
                sub = await bus._js.subscribe(
                    bus._kv_prefix + prefix_filter(self._physical_prefix),
                    stream=bus._stream,
                    cb=on_msg,
                    ordered_consumer=True,
                    idle_heartbeat=WATCH_HEARTBEAT,
                    config=config,
                )
            if self._closed:
                await bus._unsubscribe(sub)
            else:
                self._sub = sub

    async def _resume(self) -> None:
        """Re-create the consumer after a reconnect; a transient failure leaves
        the watch stale (and raises) so the bus retries, any other ends it."""
        self._stale = False
        try:
            await self._subscribe()
        except (BusUnavailableError, BusTimeoutError):
            self._stale = True
            raise
        except InfraFabricError as exc:
            self._fail(exc)

    async def _close(self) -> None:
        # No lock: a _subscribe in progress sees _closed and drops its consumer.
        self._nats._watches.discard(self)
        self._generation += 1
        sub, self._sub = self._sub, None
        if sub is not None:
            await self._nats._unsubscribe(sub)


class _NatsSubscription(Subscription):
    """A core NATS subscription to one subject (nats-py re-subscribes it after
    a reconnect)."""

    def __init__(self, bus: NatsBus, subject: str) -> None:
        super().__init__(bus, subject)
        self._nats = bus
        self._physical = bus._core_subject(bus._ns(subject))
        self._sub: NatsSubscription | None = None

    async def _open(self) -> None:
        bus = self._nats
        subject = self.subject

        async def on_msg(msg: Msg) -> None:
            self._feed(Message(subject, msg.data))

        with bus._translate("subscribe", subject):
            self._sub = await bus._nc.subscribe(self._physical, cb=on_msg)
            # the server handles a connection's commands in order, so once it
            # answered a request sent after the SUB it has the subscription
            await bus._round_trip()

    async def _close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            await self._nats._unsubscribe(sub)


class NatsBus(EventBus):
    """:class:`~infrafabric.bus.EventBus` on a NATS JetStream KV bucket plus
    core NATS subjects."""

    scheme = "nats"
    _nc: Client
    _js: JetStreamContext
    _kv: KeyValue

    def __init__(self, url: BusURL) -> None:
        super().__init__(url)
        # options are checked here, before any I/O
        self._bucket = url.options.get("bucket", "infrafabric")
        if not _BUCKET_RE.fullmatch(self._bucket):
            raise ConfigurationError(
                f"bad bucket name {self._bucket!r} in bus URL {url.raw!r}",
                hint="a bucket name is letters, digits, '_' and '-'",
            )
        self._history = url.int_option("history", 64)
        if self._history > MAX_HISTORY:
            raise ConfigurationError(
                f"option history={self._history} in bus URL {url.raw!r} is above "
                f"the NATS KV limit of {MAX_HISTORY}"
            )
        self._replicas = url.int_option("replicas", 1)
        self._connect_timeout = url.float_option("connect_timeout", 2.0)
        self.security = Security.from_options("nats", url.options)
        self._auth = _auth_options(self.security)  # an NKEY without the nkeys package fails now
        self._stream = f"KV_{self._bucket}"
        self._kv_prefix = f"$KV.{self._bucket}."
        self._watches: set[_NatsWatch] = set()
        self._resume_task: asyncio.Task[None] | None = None
        self._online = asyncio.Event()
        self._closing = False
        self._last_error: BaseException | None = None
        #: tasks inside a call, and those of them cancelled because the connection dropped
        self._inflight: set[asyncio.Task[object]] = set()
        self._severed: set[asyncio.Task[object]] = set()
        #: whether the bucket's stream takes atomic batches (nats-server 2.12+, turned on at open)
        self._atomic = False

    # -- connection ------------------------------------------------------

    async def _connect(self) -> None:
        servers = [
            f"nats://[{h}]:{p}" if ":" in h else f"nats://{h}:{p}" for h, p in self.url.hosts
        ]
        self._nc = _GuardedClient(self.security.tls)
        self._closing = False
        self._last_error = None
        # nats-py never gives up on a failed TLS handshake: closing the broken stream waits
        # forever (asyncio's wait_closed). So the whole connect is bounded here.
        bound = (self._connect_timeout + RECONNECT_WAIT) * INITIAL_ATTEMPTS * len(servers) + 1.0
        try:
            with self._translate("connect", check=False):
                try:
                    async with asyncio.timeout(bound):
                        # A bounded number of attempts, so a missing server fails fast
                        # instead of being retried forever (nats-py's default).
                        await self._nc.connect(
                            servers=servers,
                            name="infrafabric",
                            allow_reconnect=True,
                            max_reconnect_attempts=INITIAL_ATTEMPTS - 1,
                            reconnect_time_wait=RECONNECT_WAIT,  # type: ignore[arg-type]
                            ping_interval=PING_INTERVAL,
                            max_outstanding_pings=MAX_OUTSTANDING_PINGS,
                            connect_timeout=self._connect_timeout,  # type: ignore[arg-type]
                            error_cb=self._on_error,
                            disconnected_cb=self._on_disconnected,
                            reconnected_cb=self._on_reconnected,
                            closed_cb=self._on_closed,
                            **self._auth,
                        )
                except Exception as exc:
                    cause = self._last_error or exc
                    refused = access_failure(str(self.url), self.security, cause, self._nc._server_info)
                    if refused is not None:
                        raise refused from exc
                    if isinstance(exc, TimeoutError) and self._last_error is not None:
                        raise BusUnavailableError(
                            f"cannot connect to the bus at {self.url}: {_describe(self._last_error)}",
                            hint=CONNECT_HINT) from exc
                    raise
            # Once connected, never give up reconnecting (-1 means forever; nats-py
            # reads this option on every reconnect attempt).
            self._nc.options["max_reconnect_attempts"] = -1
            self._online.set()
            self._js = self._nc.jetstream(timeout=self.timeout)
            with self._translate("bucket"):
                self._kv = await self._bucket_kv()
        except BaseException:
            self._closing = True
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self._nc.close()
            raise

    async def _bucket_kv(self) -> KeyValue:
        kv = await self._open_bucket()
        if self._replicas > 1:
            await self._await_stream()
        return kv

    async def _await_stream(self) -> None:
        await await_stream(self._js, f"{self._kv_prefix}_if.probe", self.timeout)

    async def _open_bucket(self) -> KeyValue:
        # Direct get answers a read without the JetStream API round of JSON and
        # base64 (a claim's read costs ~40 % less). With one replica it reads
        # the only copy; with more, a follower may answer stale, so it is off.
        direct = self._replicas == 1
        try:
            kv = await self._js.key_value(self._bucket)
        except nats.js.errors.BucketNotFoundError:
            kv = None
        if kv is not None:
            await self._allow_atomic()
            if direct and not kv._direct:
                # the stream's own replica count decides, never this client's option: turning
                # direct get on for a replicated bucket would let followers answer stale reads
                info = await self._js.stream_info(self._stream)
                if (info.config.num_replicas or 1) == 1:
                    info.config.allow_direct = True
                    await self._js.update_stream(info.config)
                    kv = await self._js.key_value(self._bucket)
            return kv
        config = api.KeyValueConfig(
            bucket=self._bucket,
            history=self._history,
            storage=api.StorageType.FILE,
            replicas=self._replicas,
            direct=direct,
        )
        try:
            made = await self._js.create_key_value(config)
            await self._allow_atomic()
            return made
        except nats.js.errors.BadRequestError as exc:
            # a concurrent client may have created it first, with another
            # config (the server accepts an identical one as a no-op)
            try:
                return await self._js.key_value(self._bucket)
            except nats.js.errors.BucketNotFoundError:
                raise exc from None

    async def _allow_atomic(self) -> None:
        """Let the bucket's stream take atomic batches (what :meth:`_create_many`
        writes with); a server too old to know them leaves them off, and
        creates go one by one."""
        info = await self._js.stream_info(self._stream)
        if info.config.allow_atomic:
            self._atomic = True
            return
        info.config.allow_atomic = True
        try:
            await self._js.update_stream(info.config)
        except nats.js.errors.APIError as exc:
            log.info("nats: the bucket's stream takes no atomic batches (%s): creates go one by one",
                     _describe(exc))
            return
        self._atomic = (await self._js.stream_info(self._stream)).config.allow_atomic is True

    async def _close(self) -> None:
        self._closing = True
        self._online.clear()
        task, self._resume_task = self._resume_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for watch in list(self._watches):
            await watch.close()
        with contextlib.suppress(Exception):
            await self._nc.close()

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc
        log.debug("nats %s: %s", self.url, exc)

    async def _on_disconnected(self) -> None:
        self._online.clear()
        if not self._closing:
            log.info("nats %s: disconnected, reconnecting", self.url)
        # A request in flight can never be answered now (replies are not
        # replayed after a reconnect): end it at once instead of at its deadline.
        for task in self._inflight - self._severed:
            self._severed.add(task)
            task.cancel()

    async def _on_reconnected(self) -> None:
        log.info("nats %s: reconnected", self.url)
        self._online.set()
        for watch in self._watches:
            watch._stale = True
        # Runs apart from nats-py's reconnect task, which awaits this callback.
        if self._watches and (self._resume_task is None or self._resume_task.done()):
            self._resume_task = asyncio.create_task(self._resume_watches())

    async def _on_closed(self) -> None:
        if self._closing:
            return
        error = BusUnavailableError(f"the connection to {self.url} was closed: {self._last_error}")
        for stream in list(self._streams):
            stream._fail(error)

    async def _resume_watches(self) -> None:
        """Re-create the consumer of every stale watch. JetStream may not be
        ready yet when the connection is back, so a transient failure is
        retried with backoff, and waits for the next reconnect while down."""
        delay = RESUME_BACKOFF[0]
        while stale := [w for w in self._watches if w._stale]:
            await self._online.wait()
            try:
                for watch in stale:
                    await watch._resume()
            except (BusUnavailableError, BusTimeoutError) as exc:
                log.debug("nats %s: watches not resumed yet: %s", self.url, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESUME_BACKOFF[1])

    async def _round_trip(self) -> None:
        """One round trip to the server, safe to cancel. (``nc.flush()`` is not:
        the PONG answering a cancelled or timed-out flush hits a cancelled
        future and silently kills nats-py's read loop, so the connection never
        delivers anything again.)"""
        with contextlib.suppress(nats.errors.NoRespondersError):
            await self._nc.request(self._nc.new_inbox(), b"", timeout=self.timeout)

    async def _unsubscribe(self, sub: NatsSubscription) -> None:
        with contextlib.suppress(InfraFabricError, nats.errors.Error, OSError), \
                self._translate("unsubscribe", check=False):
            await sub.unsubscribe()

    # -- error translation (the only place nats errors become ours) ----------

    @contextlib.contextmanager
    def _translate(self, op: str, key: str = "", *, check: bool = True) -> Iterator[None]:
        """Run a nats-py call, translating its exceptions into the InfraFabric
        tree. With ``check``, fail at once while the connection is down rather
        than letting the request wait out its deadline."""
        def words() -> tuple[str, str, str | None]:
            # Built only when something failed: this runs around every call.
            name = self._strip_ns(key) if key.startswith(self.namespace + "/") else key
            what = f"{op} {name!r}" if name else op
            if op == "connect":
                return what, f"cannot connect to the bus at {self.url}", CONNECT_HINT
            if op == "bucket":
                return (f"opening KV bucket {self._bucket!r}",
                        f"cannot open KV bucket {self._bucket!r} at {self.url}",
                        "JetStream must be enabled on the server (nats-server --jetstream)")
            return (what, f"{what}: the bus at {self.url} is unreachable",
                    "the client reconnects by itself; retry later")

        if check and not self._nc.is_connected:
            _, unavailable, hint = words()
            raise BusUnavailableError(f"{unavailable} (reconnecting)", hint=hint)
        task = asyncio.current_task()
        cancels = task.cancelling() if task is not None else 0
        if task is not None:
            self._inflight.add(task)
        try:
            yield
            if task is not None and task.cancelling() > cancels:
                # nats-py swallowed a cancellation of this task (its flush of pending writes, under
                # publish and unsubscribe, ends in `except CancelledError: pass`): raise it again,
                # or a cancelled caller would go on as if nothing had happened
                raise asyncio.CancelledError
        except asyncio.CancelledError:
            if task is None or task not in self._severed:
                raise
            self._severed.discard(task)
            if task.uncancel() > 0:  # someone else cancelled it too
                raise
            what, unavailable, hint = words()
            if op in _WRITES:
                raise BusTimeoutError(
                    f"{what}: the connection to {self.url} was lost before the answer; "
                    "the outcome is unknown",
                    hint="read the state back before retrying a write",
                ) from None
            raise BusUnavailableError(
                f"{unavailable}: the connection was lost", hint=hint
            ) from None
        except InfraFabricError:
            raise
        except nats.errors.TimeoutError as exc:
            what, unavailable, hint = words()
            raise BusTimeoutError(
                f"{what} on {self.url}: no answer within the deadline; the outcome is unknown",
                hint="read the state back before retrying a write",
            ) from exc
        except nats.errors.NoServersError as exc:
            what, unavailable, hint = words()
            cause = _describe(self._last_error or exc)
            raise BusUnavailableError(f"{unavailable}: {cause}", hint=hint) from exc
        except _UNAVAILABLE as exc:
            what, unavailable, hint = words()
            raise BusUnavailableError(f"{unavailable}: {_describe(exc)}", hint=hint) from exc
        except (nats.errors.BadSubjectError, nats.js.errors.InvalidKeyError) as exc:
            what, unavailable, hint = words()
            raise BadKeyError(f"{what}: rejected by NATS: {exc}") from exc
        except (nats.js.errors.InvalidBucketNameError, nats.js.errors.BadBucketError) as exc:
            raise ConfigurationError(
                f"stream {self._stream!r} at {self.url} is not a usable KV bucket"
            ) from exc
        except nats.errors.MaxPayloadError as exc:
            what, unavailable, hint = words()
            raise BusError(
                f"{what}: the value exceeds the server's limit of {self._nc.max_payload} bytes"
            ) from exc
        except nats.js.errors.APIError as exc:
            what, unavailable, hint = words()
            raise BusError(f"{what} on {self.url}: {_describe(exc)}") from exc
        except nats.errors.Error as exc:
            what, unavailable, hint = words()
            raise BusError(f"{what} on {self.url}: {exc}") from exc
        finally:
            if task is not None:
                self._inflight.discard(task)
                self._severed.discard(task)

    # -- key/value -------------------------------------------------------

    async def _get(self, key: str) -> Entry | None:
        with self._translate("get", key):
            try:
                entry = await self._kv.get(to_tokens(key))
            except nats.js.errors.KeyNotFoundError:  # absent or deleted
                return None
        return Entry(key, entry.value or b"", self._revision(entry))

    @staticmethod
    def _revision(entry: KeyValue.Entry) -> int:
        assert entry.revision is not None
        return entry.revision

    async def _put(self, key: str, value: bytes) -> int:
        with self._translate("put", key):
            return await self._kv.put(to_tokens(key), value)

    async def _create(self, key: str, value: bytes) -> int | None:
        with self._translate("create", key):
            try:
                return await self._kv.create(to_tokens(key), value)
            except nats.js.errors.KeyWrongLastSequenceError:
                return None
            except nats.js.errors.KeyNotFoundError:
                # kv.create looked for a delete marker after losing, and the key
                # was purged meanwhile: still a lost race
                return None

    async def _create_many(self, items: Sequence[tuple[str, bytes]]) -> list[int | None]:
        """One JetStream atomic batch: each message expects its subject empty
        (what ``kv.create`` sends), the last commits, and the stream stores
        all of them, at consecutive sequences, or none. A refusal (a key that
        exists, or a delete marker ``kv.create`` would write over) falls back
        to one create each, which says which keys existed."""
        if not self._atomic or len(items) < 2:
            return list(await asyncio.gather(*(self._create(k, v) for k, v in items)))
        batch = uuid.uuid4().hex
        with self._translate("create", f"{len(items)} keys"):
            for n, (key, value) in enumerate(items, 1):
                headers = {"Nats-Batch-Id": batch, "Nats-Batch-Sequence": str(n),
                           "Nats-Expected-Last-Subject-Sequence": "0"}
                subject = self._kv_prefix + to_tokens(key)
                if n < len(items):
                    await self._nc.publish(subject, value, headers=headers)
                else:
                    reply = await self._nc.request(subject, value, timeout=self.timeout,
                                                   headers={**headers, "Nats-Batch-Commit": "1"})
        answer = json.loads(reply.data or b"{}")
        if "error" not in answer and answer.get("count") == len(items):
            last = int(answer["seq"])
            return list(range(last - len(items) + 1, last + 1))
        error = answer.get("error") or {}
        if error.get("err_code") not in (10071, 10164):  # not "wrong last sequence": say why once
            log.warning("nats: an atomic batch was refused (%s): creating one by one",
                        error.get("description") or answer)
        return list(await asyncio.gather(*(self._create(k, v) for k, v in items)))

    async def _which_exist(self, keys: Sequence[str]) -> set[str]:
        """One batch direct get of the last message on each key's subject
        (nats-server 2.11+, a bucket with direct get): a key whose last
        message is a delete marker does not exist."""
        if not self._kv._direct or len(keys) < 2:
            return await super()._which_exist(keys)
        by_subject = {self._kv_prefix + to_tokens(k): k for k in keys}
        found: set[str] = set()
        with self._translate("get", f"{len(keys)} keys"):
            inbox = self._nc.new_inbox()
            sub = await self._nc.subscribe(inbox)
            try:
                request = {"multi_last": list(by_subject), "batch": len(by_subject)}
                await self._nc.publish(f"$JS.API.DIRECT.GET.{self._stream}", json.dumps(request).encode(),
                                       reply=inbox)
                while True:
                    msg = await sub.next_msg(timeout=self.timeout)
                    headers = msg.headers or {}
                    subject = headers.get("Nats-Subject")
                    if subject is None:  # the end of the batch (204), or nothing found (404)
                        status = headers.get("Status")
                        if status not in ("204", "404"):
                            raise BusError(f"a batch get on {self.url} was refused: status {status} "
                                           f"{headers.get('Description', '')}".rstrip())
                        break
                    if headers.get(KV_OP) not in (KV_DEL, KV_PURGE) and subject in by_subject:
                        found.add(by_subject[subject])
            finally:
                with contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()
        return found

    async def _update(self, key: str, value: bytes, revision: int) -> int | None:
        with self._translate("update", key):
            try:
                return await self._kv.update(to_tokens(key), value, last=revision)
            except nats.js.errors.APIError as exc:
                if _is_wrong_last(exc):
                    return None
                raise

    async def _delete(self, key: str, revision: int | None) -> bool:
        tokens = to_tokens(key)
        with self._translate("delete", key):
            # NATS writes a delete marker even for an absent key, and a guard
            # equal to the revision of a marker passes. So read first: an absent
            # (or already deleted) key is not deleted again, and the delete is
            # guarded by the revision read, re-read if a write got in between.
            while True:
                try:
                    current = self._revision(await self._kv.get(tokens))
                except nats.js.errors.KeyNotFoundError:
                    return False
                if revision is not None and current != revision:
                    return False
                try:
                    await self._kv.delete(tokens, last=current)
                    return True
                except nats.js.errors.APIError as exc:
                    if not _is_wrong_last(exc):
                        raise
                    if revision is not None:
                        return False

    async def _list(self, prefix: str) -> list[Entry]:
        # Built on _scan, whose consumer is deleted when it ends: an ordered
        # push consumer per list() outlived it on the server, and a burst of
        # lists (one per create_task) hit the stream's consumer limit.
        found: dict[str, Entry] = {}
        async for entry in self._scan(prefix, 1000):
            found[entry.key] = entry  # a key rewritten mid-scan: the later one wins
        return list(found.values())

    async def _scan(self, prefix: str, batch: int) -> AsyncGenerator[Entry, None]:
        """Stream the last message of every subject under the prefix, in
        stream order, through an ephemeral pull consumer asked for ``batch``
        messages at a time: at most one page is ever buffered, and the next
        is requested only once this one has been handed out.

        The scan ends when the consumer has nothing pending, or at the first
        message written after the scan started (so a busy prefix cannot keep
        it going forever): a key written meanwhile comes with the value it had
        when the scan started, or not at all if it is new. (One written in the
        instant between the consumer's creation and the read of the stream's
        last sequence that follows can come twice, old value first.)"""
        loop = asyncio.get_running_loop()
        # Page n asks for replies on inbox.n: a status message is addressed to
        # the request it ends, so one left over from an earlier page is ignored.
        inbox = self._nc.new_inbox()
        buffer: collections.deque[Msg] = collections.deque()
        arrived = asyncio.Event()

        async def on_msg(msg: Msg) -> None:
            buffer.append(msg)
            arrived.set()

        consumer = f"scan_{uuid.uuid4().hex}"
        config = api.ConsumerConfig(
            name=consumer,
            deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            ack_policy=api.AckPolicy.NONE,
            filter_subject=self._kv_prefix + prefix_filter(prefix),
            inactive_threshold=CONSUMER_INACTIVE,
            mem_storage=True,
            num_replicas=1,
        )
        next_subject = f"{JS_API}.CONSUMER.MSG.NEXT.{self._stream}.{consumer}"
        # Pages are also bounded in bytes: 1,000 witness blocks of ~95 KB would
        # overrun the server's 64 MiB per-client buffer and get the connection
        # dropped as a slow consumer. A pull's own max_bytes is no help: with
        # no acks the message that does not fit is lost. So the page size is
        # set from the largest message seen so far, starting small.
        largest = 0
        page_size = min(batch, 16)
        prefix_len = len(self._kv_prefix)
        sub: NatsSubscription | None = None
        created = False
        try:
            async with asyncio.timeout(self.timeout):
                with self._translate("scan", prefix):
                    sub = await self._nc.subscribe(inbox + ".*", cb=on_msg)
                    created = True  # before: the server may create it and the reply time out
                    info = await self._js.add_consumer(self._stream, config)
                    # Every message of the consumer's starting set is at or
                    # below the stream's last sequence read after its creation.
                    last = (await self._js.stream_info(self._stream)).state.last_seq
            pending = info.num_pending or 0
            page = 0
            received = False
            reachable_by = loop.time() + self.timeout
            while pending:
                # One page: ask for `batch`; the wait for each message counts
                # against the page's deadline, the caller's work does not.
                page += 1
                reply = f"{inbox}.{page}"
                budget = self.timeout
                request = json.dumps({"batch": page_size, "no_wait": True}).encode()
                with self._translate("scan", prefix):
                    await self._nc.publish(next_subject, request, reply=reply)
                got = 0
                while got < page_size and pending:
                    if not buffer:
                        arrived.clear()
                        started = loop.time()
                        async with asyncio.timeout(max(budget, 0.0)):
                            with self._translate("scan", prefix):
                                await arrived.wait()
                        budget -= loop.time() - started
                        continue
                    msg = buffer.popleft()
                    if msg.headers and (status := msg.headers.get(api.Header.STATUS)):
                        if msg.subject != reply:
                            continue  # the end of an earlier page
                        if status in _PULL_DONE:
                            # fewer messages than pending said (purged meanwhile)
                            pending = 0 if not got else pending
                            break
                        if (
                            status == StatusCode.SERVICE_UNAVAILABLE
                            and not received
                            and loop.time() < reachable_by
                        ):
                            # No responder yet: in a cluster the consumer may live on
                            # another server, whose interest in its pull subject
                            # reaches this one through the routes a moment after
                            # the consumer was created. Ask again (a new page).
                            await asyncio.sleep(0.02)
                            break
                        with self._translate("scan", prefix):
                            if status == StatusCode.SERVICE_UNAVAILABLE:
                                # nobody serves the pull requests of this consumer
                                raise nats.js.errors.APIError(
                                    code=503,
                                    description=(
                                        "the scan's consumer is gone (no page was asked for "
                                        f"within {CONSUMER_INACTIVE:g} s, or the server "
                                        "restarted); scan again"
                                    ),
                                )
                            nats.js.errors.APIError.from_msg(msg)
                    got += 1
                    received = True
                    largest = max(largest, len(msg.data) + len(msg.subject) + 256)
                    revision, pending = _sequence_and_pending(msg)
                    if revision > last:
                        pending = 0
                        break
                    if _operation(msg) is EventKind.PUT:
                        key = _scan_key(msg.subject[prefix_len:])
                        yield Entry(key, msg.data, revision)
                page_size = max(1, min(batch, PAGE_BYTES // max(largest, 1)))
        finally:
            if sub is not None:
                await self._unsubscribe(sub)
            if created and self._nc.is_connected:  # else it expires by itself
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self.timeout):
                        await self._js.delete_consumer(self._stream, consumer)

    async def _current_revision(self) -> int:
        with self._translate("revision"):
            info = await self._js.stream_info(self._stream)
        return int(info.state.last_seq)

    def _watch(self, prefix: str, start_revision: int | None) -> Watch:
        return _NatsWatch(self, prefix, start_revision)

    # -- pub/sub ---------------------------------------------------------

    def _core_subject(self, subject: str) -> str:
        return SUBJECT_PREFIX + to_tokens(subject)

    async def _publish(self, subject: str, data: bytes) -> None:
        with self._translate("publish", subject):
            await self._nc.publish(self._core_subject(subject), data)

    def _subscribe(self, subject: str) -> Subscription:
        return _NatsSubscription(self, subject)

    # -- health ----------------------------------------------------------

    async def _health(self) -> str:
        with self._translate("health"):
            info = await self._js.stream_info(self._stream)
        v = self._nc.connected_server_version
        detail = (f"nats-server {v.major}.{v.minor}.{v.patch}, bucket {self._bucket!r} "
                  f"at revision {info.state.last_seq}")
        cluster = info.cluster
        if cluster is None or not cluster.replicas:
            return detail
        # a leader that lost its peers still answers reads; only a quorum can take writes
        live = 1 + sum(1 for r in cluster.replicas if r.current and not r.offline
                       and (r.active is None or r.active < REPLICA_STALE_S * 1e9))
        size = len(cluster.replicas) + 1
        if not cluster.leader or live < size // 2 + 1:
            raise BusUnavailableError(
                f"the bus {self.url} has lost its quorum: the stream of bucket {self._bucket!r} has "
                f"{'no leader' if not cluster.leader else f'{live} of {size} replicas in contact'}; "
                "writes will time out", hint="restart the failed nodes (their data is on disk)")
        return f"{detail}, {live} of {size} replicas in contact"

