"""Local clusters (three nodes by default) of ``nats-server`` (JetStream) and etcd on loopback.

For ``ifctl bench coordinator --topology cluster|both``, for the failover tests,
and for trying a clustered bus on one machine. Each node
is a :class:`~infrafabric.bus.servers.NatsServer` or
:class:`~infrafabric.bus.servers.EtcdServer` with its own client port, peer
(route) port and data directory under the cluster's directory::

    with NatsCluster() as cluster:              # or EtcdCluster()
        bus = await connect(cluster.url)        # every node in the URL
        cluster.kill(await cluster.leader())    # SIGKILL the leader
        cluster.restart(i)                      # same ports and data directory

``start()`` launches every node first and only then waits: a member alone
cannot become ready before a quorum of its peers is up. It returns once every
node answers its health probe (NATS: ``/healthz``, which needs contact with an
elected JetStream meta leader and every JetStream asset on the node current;
plus every node naming the same meta leader in ``/jsz``; etcd: ``/health`` on
every member, which needs an elected raft leader) and raises
:class:`~infrafabric.errors.ServerError` with the log tail of every node when
that does not happen within the timeout.

Lifecycle calls are synchronous (they wait for processes); :meth:`leader`
asks the cluster over its client API and is a coroutine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from infrafabric.bus.servers import START_TIMEOUT, EtcdServer, LocalServer, NatsServer, free_port
from infrafabric.errors import ServerError

__all__ = ["EtcdCluster", "LocalCluster", "NatsCluster"]

N = TypeVar("N", bound=LocalServer)

#: NATS JetStream keeps at most this many replicas of a stream
NATS_MAX_REPLICAS = 5
#: wait between two probes of a leader that is being elected
_POLL = 0.05


class _NatsNode(NatsServer):
    """A ``nats-server`` with a ``cluster`` block routing to its peers."""

    def __init__(self, cluster: NatsCluster, index: int, data_dir: Path) -> None:
        super().__init__(data_dir, sync_always=True)
        self.cluster = cluster
        self.index = index
        self.cluster_port = free_port()

    @property
    def server_name(self) -> str:
        return f"if-nats-{self.index}-{self.port}"

    def _config(self) -> str:
        routes = ", ".join(
            json.dumps(f"nats-route://{n.host}:{n.cluster_port}")
            for n in self.cluster.nodes
            if n is not self
        )
        return super()._config() + (
            "cluster {\n"
            f"    name: {self.cluster.name}\n"
            f"    listen: {self.host}:{self.cluster_port}\n"
            f"    routes: [{routes}]\n"
            "}\n"
        )

    def monitor(self, path: str) -> tuple[int, Any]:
        """GET a monitoring endpoint: (HTTP status, decoded JSON or None)."""
        url = f"http://{self.host}:{self.monitor_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=0.5) as resp:
                return int(resp.status), json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            with contextlib.suppress(ValueError, OSError):
                return int(exc.code), json.loads(exc.read())
            return int(exc.code), None
        except (OSError, ValueError):
            return 0, None

    def health(self) -> str:
        """``ok``, or why ``/healthz`` says this node is not ready."""
        status, body = self.monitor("/healthz")
        if status == 200:
            return "ok"
        if isinstance(body, dict) and body.get("error"):
            return str(body["error"])
        return f"no answer from {self.host}:{self.monitor_port}" if not status else f"HTTP {status}"

    def meta_leader(self) -> str | None:
        """The server name of the JetStream meta leader this node knows of."""
        _, body = self.monitor("/jsz")
        meta = body.get("meta_cluster") if isinstance(body, dict) else None
        leader = meta.get("leader") if isinstance(meta, dict) else None
        return str(leader) if leader else None

    def stream_state(self, stream: str) -> dict[str, Any] | None:
        """This node's own copy of ``stream`` (``messages``, ``first_seq``,
        ``last_seq``...) from ``/jsz``, or None if it holds none."""
        _, body = self.monitor("/jsz?streams=true")
        accounts = body.get("account_details") if isinstance(body, dict) else None
        for account in accounts or ():
            for detail in account.get("stream_detail") or ():
                if detail.get("name") == stream and isinstance(detail.get("state"), dict):
                    return dict(detail["state"])
        return None

    def _ready(self) -> bool:
        # Stricter than a single server's probe: JetStream must be in contact
        # with an elected meta leader and every stream on this node current.
        return self.health() == "ok"


class _EtcdMember(EtcdServer):
    """An etcd member whose ``--initial-cluster`` names all its peers."""

    def __init__(self, cluster: EtcdCluster, index: int, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.cluster = cluster
        self.index = index

    @property
    def member_name(self) -> str:
        return f"if-etcd-{self.index}-{self.port}"

    def _initial_cluster(self) -> str:
        return ",".join(f"{m.member_name}={m.peer_url}" for m in self.cluster.nodes)

    def _command(self) -> list[str]:
        # Ignored by etcd once the data directory exists (a restart rejoins).
        return [*super()._command(), "--initial-cluster-token", self.cluster.name]


class LocalCluster(ABC, Generic[N]):
    """``size`` server processes on 127.0.0.1 forming one cluster.

    Nodes are numbered ``0 .. size-1``; ``nodes[i]`` is the server object
    (its ``url``, ``pid``, ``log_path``, ``data_dir``). Signals go only to
    the processes this object started.
    """

    kind: str = "cluster"

    def __init__(self, size: int = 3, data_dir: str | Path | None = None) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self.size = size
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix=f"if-{self.kind}-"))
        self.name = f"if-{self.kind}-{uuid.uuid4().hex[:8]}"
        self.host = "127.0.0.1"
        self.nodes: list[N] = []
        for index in range(size):
            self.nodes.append(self._node(index, self.data_dir / f"node{index}"))
        self._paused: set[int] = set()

    @abstractmethod
    def _node(self, index: int, data_dir: Path) -> N: ...

    @property
    @abstractmethod
    def url(self) -> str:
        """The bus URL naming every node."""

    def _hosts(self) -> str:
        return ",".join(f"{n.host}:{n.port}" for n in self.nodes)

    def __len__(self) -> int:
        return self.size

    # -- lifecycle -------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> Self:
        """Start every node that is not running (and resume any paused one),
        then wait (at most ``timeout`` seconds) until the cluster is ready. On
        failure every node is killed and :class:`ServerError` carries the log
        tail of each."""
        deadline = time.monotonic() + timeout
        for index in list(self._paused):
            self.resume(index)
        try:
            for node in self.nodes:
                node.launch()
            for node in self.nodes:
                node.wait_ready(max(deadline - time.monotonic(), 0.1))
            self._wait_agreed(deadline)
        except ServerError as exc:
            tails = self.log_tails()
            for node in self.nodes:
                node.kill()
            raise ServerError(
                f"{self.kind} of {self.size} did not become ready within {timeout:g} s: {exc.message}",
                hint=tails,
            ) from exc
        self._paused.clear()
        return self

    def _wait_agreed(self, deadline: float) -> None:
        """Hook: wait until the ready nodes agree on the cluster's state."""

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every node (SIGTERM, then SIGKILL after ``timeout``)."""
        for node in self.nodes:
            node.stop(timeout)
        self._paused.clear()

    def kill(self, index: int) -> None:
        """SIGKILL node ``index`` (a crash) and reap it."""
        self.nodes[index].kill()
        self._paused.discard(index)

    def pause(self, index: int) -> None:
        """SIGSTOP node ``index``: it holds its sockets but answers nothing."""
        self.nodes[index].pause()
        self._paused.add(index)

    def resume(self, index: int) -> None:
        """SIGCONT node ``index``."""
        self.nodes[index].resume()
        self._paused.discard(index)

    def restart(self, index: int, timeout: float = START_TIMEOUT) -> None:
        """Start node ``index`` again (stopping it first if it runs) on the same
        ports and data directory, and wait until it has rejoined: its health
        probe needs it current with the cluster's leader."""
        node = self.nodes[index]
        node.stop()
        self._paused.discard(index)
        node.launch()
        try:
            node.wait_ready(timeout)
        except ServerError as exc:
            raise ServerError(
                f"node {index} of the {self.kind} did not rejoin within {timeout:g} s",
                hint=f"see {node.log_path}:\n" + node.log_tail(),
            ) from exc

    def running(self, index: int) -> bool:
        return self.nodes[index].running

    def live(self) -> list[int]:
        """The nodes that run and are not paused."""
        return [i for i, n in enumerate(self.nodes) if n.running and i not in self._paused]

    def log_tails(self, lines: int = 15) -> str:
        return "\n".join(
            f"--- node {i} ({n.log_path}):\n{n.log_tail(lines)}" for i, n in enumerate(self.nodes)
        )

    def cleanup(self) -> None:
        """Stop every node and remove the cluster's directory if it made it."""
        for index in list(self._paused):
            self.resume(index)
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    # -- leadership ------------------------------------------------------

    async def leader(self, wait: float = 10.0) -> int:
        """The index of the node that leads now (waiting, at most ``wait``
        seconds, while an election is under way); :class:`ServerError` if
        none is found in time."""
        deadline = time.monotonic() + wait
        last = "no node is running"
        while True:
            for index in self.live():
                try:
                    async with asyncio.timeout(max(min(1.0, deadline - time.monotonic()), 0.05)):
                        found = await self._ask_leader(index)
                except ServerError:
                    raise
                except Exception as exc:  # a node that cannot answer: ask the next
                    last = f"node {index}: {exc!r}"
                    continue
                if found is not None and found in self.live():
                    return found
                # A member may still name a leader that was just killed or
                # paused: that is an election under way, not an answer.
                last = f"node {index} knows no live leader (it names {found})"
            if time.monotonic() >= deadline:
                raise ServerError(f"no leader in the {self.kind} within {wait:g} s ({last})")
            await asyncio.sleep(_POLL)

    @abstractmethod
    async def _ask_leader(self, index: int) -> int | None:
        """Ask node ``index`` which node leads (None: no leader right now)."""

    def _index_by_name(self, name: str | None, names: list[str]) -> int | None:
        if name is None:
            return None
        try:
            return names.index(name)
        except ValueError:
            return None


class NatsCluster(LocalCluster[_NatsNode]):
    """``size`` clustered ``nats-server`` nodes with JetStream
    (``sync_interval: always``) and routes between every pair.

    :meth:`leader` is the leader of the KV bucket's stream (the RAFT group
    that orders its writes), asked through the JetStream API
    (``$JS.API.STREAM.INFO.KV_<bucket>``); :meth:`meta_leader` is the
    JetStream meta leader, read from a node's ``/jsz`` monitoring endpoint.
    """

    kind = "nats-cluster"

    def __init__(
        self, size: int = 3, data_dir: str | Path | None = None, *, bucket: str = "infrafabric"
    ) -> None:
        super().__init__(size, data_dir)
        self.bucket = bucket

    def _node(self, index: int, data_dir: Path) -> _NatsNode:
        return _NatsNode(self, index, data_dir)

    @property
    def replicas(self) -> int:
        return min(self.size, NATS_MAX_REPLICAS)

    @property
    def url(self) -> str:
        return f"nats://{self._hosts()}?replicas={self.replicas}"

    def _wait_agreed(self, deadline: float) -> None:
        names = {n.server_name for n in self.nodes}
        seen: set[str | None] = set()
        while time.monotonic() < deadline:
            seen = {self.nodes[i].meta_leader() for i in self.live()}
            if len(seen) == 1 and seen <= names:
                return
            time.sleep(0.02)
        raise ServerError(f"the nodes do not agree on a JetStream meta leader (they name {seen})")

    def meta_leader(self) -> int | None:
        """The index of the JetStream meta leader, as the first live node that
        knows one says (None during an election)."""
        names = [n.server_name for n in self.nodes]
        for index in self.live():
            found = self._index_by_name(self.nodes[index].meta_leader(), names)
            if found is not None:
                return found
        return None

    async def _ask_leader(self, index: int) -> int | None:
        import nats
        import nats.errors
        import nats.js.errors

        node = self.nodes[index]
        nc = await nats.connect(
            servers=[f"nats://{node.host}:{node.port}"],
            allow_reconnect=False,
            connect_timeout=1,
            max_reconnect_attempts=0,
        )
        try:
            info = await nc.jetstream(timeout=1.0).stream_info(f"KV_{self.bucket}")
        except (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError):
            return None  # the stream has no leader right now
        except nats.js.errors.NotFoundError as exc:
            raise ServerError(
                f"the {self.kind} holds no stream KV_{self.bucket}",
                hint="the bucket is created by the first bus that connects (with ?replicas=)",
            ) from exc
        finally:
            await nc.close()
        leader = info.cluster.leader if info.cluster is not None else None
        return self._index_by_name(leader, [n.server_name for n in self.nodes])


class EtcdCluster(LocalCluster[_EtcdMember]):
    """``size`` etcd members (Debian's 3.4 ``/usr/bin/etcd`` preferred, see
    :func:`~infrafabric.bus.servers.find_etcd`) bootstrapped with
    ``--initial-cluster``. :meth:`leader` is the raft leader, from the
    maintenance Status API of a live member."""

    kind = "etcd-cluster"

    def _node(self, index: int, data_dir: Path) -> _EtcdMember:
        return _EtcdMember(self, index, data_dir)

    @property
    def url(self) -> str:
        return f"etcd://{self._hosts()}"

    async def _ask_leader(self, index: int) -> int | None:
        import aetcd

        member = self.nodes[index]
        client = aetcd.Client(member.host, member.port, timeout=1.0)
        try:
            await client.connect()
            response = await client.maintenancestub.Status(aetcd.rpc.StatusRequest(), timeout=1.0)
            leader_id = int(response.leader)
            if not leader_id:
                return None
            names = {int(m.id): str(m.name) async for m in client.members()}
        finally:
            with contextlib.suppress(Exception):
                await client.close()
        return self._index_by_name(names.get(leader_id), [m.member_name for m in self.nodes])
