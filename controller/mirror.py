"""The Valkey mirror of every agent's status, and the events of its life.

Kubernetes is the source of truth; Valkey mirrors it for consumers outside the
cluster. Each transition is applied by ONE server-side script that checks the
edge is legal and not already applied (by uid and seq), then writes the hash,
moves the phase index, PUBLISHes the CloudEvents JSON and XADDs the same bytes
to the stream. All checks come before the first write, and the script carries a
``#!lua`` shebang so that a server out of memory refuses it before it starts:
a transition is applied whole or not at all. Two writers racing cannot both
win, a retry never duplicates an event, and a new uid starts a new life.

Layout (DESIGN.md, prefix ``orchestrator:`` by default)::

    {prefix}agent:{namespace}/{name}   hash   the record
    {prefix}phase:{Phase}              set    namespace/name of live agents in that phase
    {prefix}events                     pub/sub one message per event
    {prefix}events:stream              stream the same events, MAXLEN ~ stream_maxlen

The machine is a DAG in which seq fixes the phase it follows (1: from nothing,
2: from Spawning, 3: from Running), so a seq at or below the record's tells
which phase it was without keeping history in the hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import enum
import urllib.parse
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final

import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.backoff
import redis.exceptions

from controller import lifecycle, models, settings

CONNECT_ATTEMPTS: Final = 5
DEFAULT_PREFIX: Final = "orchestrator:"
# The longest any one mirror operation may take (VALKEY_TIMEOUT_SECONDS): a hung server
# costs the caller this much, never more.
DEFAULT_TIMEOUT: Final = 5.0
PHASES: Final = tuple(lifecycle.Phase)


class MirrorError(RuntimeError):
    """A mirror operation did not happen; the message says why. The caller tries again."""


class ValkeyUnavailable(MirrorError):
    """Valkey could not be reached, or did not answer in time; the message says which."""


class ValkeyRefused(MirrorError):
    """Valkey answered with an error (a missing permission, out of memory, ...)."""


@dataclasses.dataclass(frozen=True)
class ServerInfo:
    address: str
    server: str
    version: str


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``, fit for logs and errors."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# A connection to Valkey in any of its topologies: one server (or Sentinel's current
# primary) or a Cluster.
Connection = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster


def _tls(url: str, ca_file: str = "", cert_file: str = "", key_file: str = "") -> dict[str, Any]:
    """redis-py's TLS arguments for ``url``: for ``rediss://`` the server's certificate and
    host name are always checked, against ``ca_file`` (a PEM bundle) or else the system's
    trust store; ``cert_file`` (with ``key_file``, or holding the key) is a client
    certificate for servers that ask for one. TLS files with any other URL are a
    ValueError: they would silently go unused."""
    if url.startswith("rediss://"):
        return {
            "ssl_cert_reqs": "required",
            "ssl_check_hostname": True,
            "ssl_ca_certs": ca_file or None,
            "ssl_certfile": cert_file or None,
            "ssl_keyfile": key_file or None,
        }
    if ca_file or cert_file or key_file:
        raise ValueError(f"TLS files are for rediss:// URLs, not {redact(url)}")
    return {}


def _retry(attempts: int) -> dict[str, Any]:
    return {
        "retry": redis.asyncio.retry.Retry(
            redis.backoff.ExponentialBackoff(cap=2.0, base=0.1), attempts
        ),
        "retry_on_error": [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
    }


def client(
    url: str,
    attempts: int = CONNECT_ATTEMPTS,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    ca_file: str = "",
    cert_file: str = "",
    key_file: str = "",
) -> redis.asyncio.Redis:
    """A client of one server that retries a failed command ``attempts`` times with
    exponential backoff (TLS as ``_tls`` says).

    Connecting and each reply wait at most ``timeout`` seconds; ``Mirror`` also bounds
    each whole operation, retries included, by it.
    """
    tls = _tls(url, ca_file, cert_file, key_file)
    return redis.asyncio.Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout, **_retry(attempts), **tls
    )


def connect(config: settings.Settings, attempts: int = CONNECT_ATTEMPTS) -> Connection:
    """A client for the settings' Valkey, in its topology: standalone (``VALKEY_URL``),
    Cluster (``VALKEY_CLUSTER``, ``VALKEY_URL`` a seed node; redis-py follows MOVED and ASK
    and re-reads the slot map), or Sentinel (``VALKEY_SENTINELS``: the sentinels name the
    primary of ``VALKEY_SENTINEL_MASTER``, and each new connection asks them again, so a
    failover is followed; ``VALKEY_URL`` gives the scheme, credentials and db)."""
    url, timeout = config.valkey_url, config.valkey_timeout_seconds
    tls = _tls(url, config.valkey_ca_file, config.valkey_cert_file, config.valkey_key_file)
    if config.valkey_cluster:
        return redis.asyncio.cluster.RedisCluster.from_url(
            url, socket_connect_timeout=timeout, socket_timeout=timeout, **tls
        )
    if config.valkey_sentinels:
        parts = urllib.parse.urlsplit(url)
        secure = {"ssl": True, **tls} if tls else {}
        own = next((s for s in config.valkey_sentinels if s.username or s.password), None)
        sentinels = redis.asyncio.sentinel.Sentinel(
            [(s.host, s.port) for s in config.valkey_sentinels],
            sentinel_kwargs={
                "username": own.username if own else None,
                "password": own.password if own else None,
                "socket_connect_timeout": timeout,
                "socket_timeout": timeout,
                **secure,
            },
        )
        primary: redis.asyncio.Redis = sentinels.master_for(
            config.valkey_sentinel_master,
            username=urllib.parse.unquote(parts.username) if parts.username else None,
            password=urllib.parse.unquote(parts.password) if parts.password else None,
            db=int(parts.path.strip("/") or 0),
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            **_retry(attempts),
            **secure,
        )
        return primary
    return client(
        url,
        attempts,
        timeout=timeout,
        ca_file=config.valkey_ca_file,
        cert_file=config.valkey_cert_file,
        key_file=config.valkey_key_file,
    )


def _sentinels(conn: Connection) -> Any:
    """Behind Sentinel, the sentinels (redis-py's manager); else None."""
    return getattr(getattr(conn, "connection_pool", None), "sentinel_manager", None)


async def _ask_sentinels(conn: Connection) -> None:
    """Behind Sentinel, ask the sentinels for the primary, once: a name they do not know, or
    sentinels that refuse connections, is its own error, not a command retried until its
    time runs out. (Start-up only: each readiness probe doing it would wait on a hung first
    sentinel every time, where redis-py's own discovery moves a sentinel that answers to the
    front.)"""
    if (manager := _sentinels(conn)) is not None:
        await manager.discover_master(conn.connection_pool.service_name)  # type: ignore[union-attr]


async def close(conn: Connection) -> None:
    """Close the connection, and with Sentinel the connections to the sentinels too."""
    await conn.aclose()
    for sentinel in getattr(_sentinels(conn), "sentinels", ()):
        await sentinel.aclose()


async def server_info(conn: Connection, url: str, timeout: float | None = None) -> ServerInfo:
    """HELLO the server: proves the address, TLS and credentials work; within ``timeout``
    seconds, retries included, when given (a hung server answers nothing, ever).

    HELLO rather than INFO: every user may run it, so the operator's ACL needs
    nothing from ``@dangerous`` (where INFO is).
    """
    try:
        async with asyncio.timeout(timeout):
            await _ask_sentinels(conn)
            hello = await conn.execute_command("HELLO")
    except TimeoutError:
        why = f"no answer within {timeout:g} s"
        raise ValkeyUnavailable(f"cannot reach Valkey at {redact(url)}: {why}") from None
    except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) as exc:
        raise ValkeyUnavailable(f"cannot reach Valkey at {redact(url)}: {_why(exc)}") from None
    # RESP3 answers a map; RESP2 a flat list of names and values.
    fields = hello if isinstance(hello, dict) else dict(zip(hello[::2], hello[1::2], strict=True))
    info = {_text(k): _text(v) for k, v in fields.items() if isinstance(v, bytes | str)}
    return ServerInfo(address=redact(url), server=info["server"], version=info["version"])


def _why(exc: Exception) -> str:
    """What went wrong, in the settings' words where the client's would mislead."""
    why = str(exc)
    if "Cluster mode is not enabled" in why:
        return "VALKEY_CLUSTER=true, but this server is not in cluster mode"
    return why


# --- the scripts ---


def _lua_edges() -> str:
    rows = [f"[''] = {{{lifecycle.INITIAL} = true}}"]
    for phase, targets in lifecycle.EDGES.items():
        listed = ", ".join(f"{t} = true" for t in PHASES if t in targets)
        rows.append(f"{phase} = {{{listed}}}")
    return "{" + ", ".join(rows) + "}"


_PRELUDE: Final = f"""#!lua
-- KEYS: 1 the agent's hash, 2 the stream, 3.. the phase sets in this order:
local phases = {{{", ".join(f"'{p}'" for p in PHASES)}}}
local function phase_key(phase)
  for i, name in ipairs(phases) do
    if name == phase then return KEYS[2 + i] end
  end
end
local function announce(channel, maxlen, event)
  redis.call('PUBLISH', channel, event)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', 'event', event)
end
local current = redis.call('HMGET', KEYS[1], 'uid', 'seq', 'phase', 'deleted')
local cur_uid, cur_seq, cur_phase = current[1], tonumber(current[2]) or 0, current[3] or ''
local deleted = current[4] == '1'
"""

# ARGV: uid, seq, from ('' for none), to, channel, maxlen, event, ref, then field/value pairs.
TRANSITION_LUA: Final = (
    _PRELUDE
    + f"""
local edges = {_lua_edges()}
local uid, seq, from, to = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
if cur_uid and cur_uid ~= uid then
  if seq ~= 1 then
    return {{'refused', cur_phase, cur_seq, 'the record belongs to another life of this agent'}}
  end
  -- A recreated agent (new uid) starts a new life: the old record goes.
  if cur_phase ~= '' then redis.call('SREM', phase_key(cur_phase), ARGV[8]) end
  redis.call('DEL', KEYS[1])
  cur_seq, cur_phase, deleted = 0, '', false
end
if deleted then
  return {{'refused', cur_phase, cur_seq, 'the agent is deleted'}}
end
if seq <= cur_seq then
  local was = cur_phase
  if seq < cur_seq then
    was = (seq == 1) and '{lifecycle.INITIAL}' or '{lifecycle.Phase.RUNNING}'
  end
  if was == to then return {{'duplicate', cur_phase, cur_seq, ''}} end
  local why = 'transition ' .. seq .. ' was already recorded as ' .. was
  return {{'refused', cur_phase, cur_seq, why}}
end
if seq ~= cur_seq + 1 then
  local why = 'transition ' .. seq .. ' arrived before ' .. (cur_seq + 1)
  return {{'refused', cur_phase, cur_seq, why}}
end
if from ~= cur_phase or not edges[cur_phase][to] then
  local shown = (cur_phase == '') and 'nothing' or cur_phase
  return {{'refused', cur_phase, cur_seq, 'illegal transition from ' .. shown .. ' to ' .. to}}
end
redis.call('HSET', KEYS[1], 'uid', uid, 'seq', seq, 'phase', to, 'deleted', '0', unpack(ARGV, 9))
if cur_phase ~= '' then redis.call('SREM', phase_key(cur_phase), ARGV[8]) end
redis.call('SADD', phase_key(to), ARGV[8])
announce(ARGV[5], ARGV[6], ARGV[7])
return {{'applied', to, seq, ''}}
"""
)

# ARGV: uid, channel, maxlen, event, ref, ttl seconds, updatedAt.
DELETE_LUA: Final = (
    _PRELUDE
    + """
local uid = ARGV[1]
if not cur_uid then return {'refused', '', 0, 'there is no record of this agent'} end
if cur_uid ~= uid then
  return {'refused', cur_phase, cur_seq, 'the record belongs to another life of this agent'}
end
if deleted then return {'duplicate', cur_phase, cur_seq, ''} end
redis.call('HSET', KEYS[1], 'deleted', '1', 'updatedAt', ARGV[7])
if cur_phase ~= '' then redis.call('SREM', phase_key(cur_phase), ARGV[5]) end
announce(ARGV[2], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[6])
return {'applied', cur_phase, cur_seq, ''}
"""
)


# KEYS: 1 the switch's hash, 2 the stream. ARGV: engaged ('1'/'0'), channel, maxlen, event,
# the switch's uid, its engagedAt, then field/value pairs. Announced when the engaged state
# changed (first sight: if engaged), and when it is engaged anew: another switch of the same
# name (another uid), or another engagement (another engagedAt: the disengagement between
# them was never mirrored).
KILLSWITCH_LUA: Final = """#!lua
local held = redis.call('HMGET', KEYS[1], 'engaged', 'uid', 'engagedAt')
local before, owner, since = held[1], held[2], held[3]
local engaged = ARGV[1]
local reborn = owner and owner ~= '' and ARGV[5] ~= '' and owner ~= ARGV[5]
local again = before == '1' and since and since ~= '' and since ~= ARGV[6]
local announce = (engaged == '1' and (reborn or again))
  or (before and before ~= engaged) or ((not before) and engaged == '1')
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
if announce then
  redis.call('PUBLISH', ARGV[2], ARGV[4])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'event', ARGV[4])
  return 1
end
return 0
"""

FORGET_SWITCH_LUA: Final = """#!lua
local before = redis.call('HGET', KEYS[1], 'engaged')
if not before then
  return 0
end
redis.call('DEL', KEYS[1])
if before == '1' then
  redis.call('PUBLISH', ARGV[1], ARGV[3])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'event', ARGV[3])
  return 1
end
return 0
"""


# --- values ---


@dataclasses.dataclass(frozen=True)
class AgentRef:
    """Who the agent is: what every record and event carries."""

    namespace: str
    name: str
    uid: str
    task_id: str
    agent_type: str

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def of(cls, agent: models.Agent) -> AgentRef:
        meta = agent.metadata
        return cls(meta.namespace, meta.name, meta.uid, agent.spec.task_id, agent.spec.agent_type)


@dataclasses.dataclass(frozen=True)
class Step:
    """One transition as the mirror records it: the phase machine's, plus the status around it."""

    seq: int
    from_: lifecycle.Phase | None
    to: lifecycle.Phase
    at: datetime.datetime
    reason: str
    message: str = ""
    error: str = ""
    started_at: datetime.datetime | None = None
    completed_at: datetime.datetime | None = None
    pod_name: str | None = None
    killed_by: str = ""


class Outcome(enum.StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    REFUSED = "refused"


@dataclasses.dataclass(frozen=True)
class Result:
    outcome: Outcome
    phase: lifecycle.Phase | None  # the record's phase after the attempt
    seq: int
    why: str = ""


def _time(moment: datetime.datetime | None) -> str:
    return models.format_time(moment) if moment is not None else ""


def _parsed(text: str) -> datetime.datetime | None:
    return models.parse_time(text) if text else None


def event(agent: AgentRef, step: Step) -> models.CloudEvent:
    """The CloudEvent of one transition."""
    return models.CloudEvent(
        id=f"{agent.uid}-{step.seq}",
        source=models.agent_source(agent.namespace, agent.name),
        type=models.event_type(step.to),
        time=step.at,
        data=_data(agent, step.from_, step.to, step),
    )


def deletion_event(agent: AgentRef, last: Step, at: datetime.datetime) -> models.CloudEvent:
    """The final event of an agent's life: its record is marked deleted."""
    return models.CloudEvent(
        id=f"{agent.uid}-deleted",
        source=models.agent_source(agent.namespace, agent.name),
        type=models.EventType.DELETED,
        time=at,
        data=_data(agent, last.to, "Deleted", last),
    )


def from_record(record: Mapping[str, str], at: datetime.datetime) -> tuple[AgentRef, Step]:
    """Who the agent was and its last transition, read from its record alone: what closing a
    record takes when the agent's last status is not known."""
    ref = AgentRef(
        record["namespace"],
        record["name"],
        record["uid"],
        record.get("taskId", ""),
        record.get("agentType", ""),
    )
    last = Step(
        seq=int(record["seq"]),
        from_=None,
        to=lifecycle.Phase(record["phase"]),
        at=at,
        reason=record.get("reason", ""),
        message=record.get("message", ""),
        error=record.get("error", ""),
        started_at=_parsed(record.get("startedAt", "")),
        completed_at=_parsed(record.get("completedAt", "")),
    )
    return ref, last


def _data(
    agent: AgentRef, from_: lifecycle.Phase | None, to: lifecycle.Phase | str, step: Step
) -> models.EventData:
    return models.EventData.model_validate(
        {
            "namespace": agent.namespace,
            "name": agent.name,
            "uid": agent.uid,
            "taskId": agent.task_id,
            "agentType": agent.agent_type,
            "from": from_,
            "to": to,
            "seq": step.seq,
            "reason": step.reason,
            "message": step.message,
            "error": step.error,
            "startedAt": step.started_at,
            "completedAt": step.completed_at,
            "killedBy": step.killed_by,
        }
    )


def steps(status: models.AgentStatus) -> list[Step]:
    """Every transition in ``status.history`` as a Step, oldest first.

    The history keeps phase, time and reason; the latest step also gets the
    status's message and error, and each step the start and completion times
    that were true at that point of the life.
    """
    out: list[Step] = []
    previous: lifecycle.Phase | None = None
    last = len(status.history)
    for seq, entry in enumerate(status.history, start=1):
        reached_running = entry.phase is not lifecycle.Phase.SPAWNING
        out.append(
            Step(
                seq=seq,
                from_=previous,
                to=entry.phase,
                at=entry.at,
                reason=entry.reason,
                message=status.message if seq == last else "",
                error=status.error if seq == last else "",
                started_at=status.started_at if reached_running else None,
                completed_at=entry.at if entry.phase in lifecycle.TERMINAL else None,
                pod_name=status.pod_name,
                killed_by=(status.killed_by or "") if entry.phase is lifecycle.Phase.KILLED else "",
            )
        )
        previous = entry.phase
    return out


def killswitch_event(
    name: str,
    spec: models.KillswitchSpec,
    status: models.KillswitchStatus,
    at: datetime.datetime,
    *,
    engaged_by: str,
    disengaged_by: str,
) -> models.CloudEvent:
    """``killswitch.engaged`` or ``killswitch.disengaged``; ``engaged_by`` and
    ``disengaged_by`` are who last did each, from the switch's audit annotations (they
    arrive with the change itself, before the switch's status is written).

    An engagement is timed, and its id made, by the ``engagedAt`` its status recorded, so
    announcing it again (a wiped Valkey, replayed) repeats the same id for consumers to
    drop; ``at`` (now) otherwise: a disengagement's status keeps no time."""
    state = "engaged" if spec.engaged else "disengaged"
    when = status.engaged_at if spec.engaged and status.engaged_at is not None else at
    return models.CloudEvent(
        id=f"killswitch-{name}-{state}-{int(when.timestamp() * 1000)}",
        source=f"/apis/{models.API_VERSION}/killswitches/{name}",
        type=models.EventType(f"killswitch.{state}"),
        time=when,
        data={
            "name": name,
            "engaged": spec.engaged,
            "reason": spec.reason,
            "engagedAt": _time(status.engaged_at) or None,
            "matched": status.matched,
            "killed": status.killed,
            "completedAt": _time(status.completed_at) or None,
            "engagedBy": engaged_by,
            "disengagedBy": disengaged_by,
        },
    )


def _result(raw: Sequence[bytes | int]) -> Result:
    outcome, phase, seq, why = raw
    phase_text = phase.decode() if isinstance(phase, bytes) else str(phase)
    return Result(
        Outcome(outcome.decode() if isinstance(outcome, bytes) else str(outcome)),
        lifecycle.Phase(phase_text) if phase_text else None,
        int(seq),
        why.decode() if isinstance(why, bytes) else str(why),
    )


class Mirror:
    """The mirror's operations over one Valkey connection.

    Every public operation is bounded by ``timeout`` seconds as a whole (retries
    included) and raises only ``MirrorError``: a refused, slow or hung Valkey costs
    its caller that much at most, and no ``redis`` exception leaves this module.
    """

    def __init__(
        self,
        conn: Connection,
        prefix: str = DEFAULT_PREFIX,
        stream_maxlen: int = 100_000,
        deleted_ttl_seconds: int = 86_400,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.conn = conn
        self.prefix = prefix
        self.channel = f"{prefix}events"
        self.stream = f"{prefix}events:stream"
        self.stream_maxlen = stream_maxlen
        self.deleted_ttl_seconds = deleted_ttl_seconds
        self.timeout = timeout
        # redis-py sends EVALSHA and, on NOSCRIPT (a restarted or flushed server), loads again.
        self._transition = conn.register_script(TRANSITION_LUA)
        self._delete = conn.register_script(DELETE_LUA)
        self._killswitch = conn.register_script(KILLSWITCH_LUA)
        self._forget_switch = conn.register_script(FORGET_SWITCH_LUA)
        # On a Cluster, one operation at a time: every key of the prefix lives on one node
        # anyway, and redis-py's async cluster client breaks connections it is still
        # opening when many commands start on it at once.
        self._turn = (
            contextlib.nullcontext() if isinstance(conn, redis.asyncio.Redis) else asyncio.Lock()
        )

    @contextlib.asynccontextmanager
    async def _bounded(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self.timeout), self._turn:
                yield
        except TimeoutError:
            raise ValkeyUnavailable(
                f"Valkey is unreachable: no answer within {self.timeout:g} s"
            ) from None
        except redis.exceptions.ResponseError as exc:
            raise ValkeyRefused(f"Valkey refused: {exc}") from None
        except (
            redis.exceptions.RedisError,
            redis.exceptions.RedisClusterException,
            OSError,
        ) as exc:
            raise ValkeyUnavailable(f"Valkey is unreachable: {_why(exc)}") from None

    def agent_key(self, namespace: str, name: str) -> str:
        return f"{self.prefix}agent:{namespace}/{name}"

    def phase_key(self, phase: lifecycle.Phase) -> str:
        return f"{self.prefix}phase:{phase}"

    def _keys(self, agent: AgentRef) -> list[str]:
        return [
            self.agent_key(agent.namespace, agent.name),
            self.stream,
            *(self.phase_key(p) for p in PHASES),
        ]

    def _transition_args(self, agent: AgentRef, step: Step) -> list[str | int]:
        fields = {
            "namespace": agent.namespace,
            "name": agent.name,
            "taskId": agent.task_id,
            "agentType": agent.agent_type,
            "reason": step.reason,
            "message": step.message,
            "error": step.error,
            "startedAt": _time(step.started_at),
            "completedAt": _time(step.completed_at),
            "podName": step.pod_name or "",
            "updatedAt": _time(step.at),
        }
        return [
            agent.uid,
            step.seq,
            step.from_ or "",
            step.to,
            self.channel,
            self.stream_maxlen,
            event(agent, step).to_json(),
            agent.ref,
            *(item for pair in fields.items() for item in pair),
        ]

    async def ping(self) -> None:
        async with self._bounded():
            await self.conn.ping()

    async def record(self, agent: AgentRef, step: Step) -> Result:
        """Apply one transition: applied, duplicate (already there) or refused (and why)."""
        async with self._bounded():
            raw = await self._transition(
                keys=self._keys(agent), args=self._transition_args(agent, step)
            )
        return _result(raw)

    async def record_many(self, items: Sequence[tuple[AgentRef, Step]]) -> list[Result]:
        """Apply many transitions in one round trip; each is still its own atomic script."""
        async with self._bounded():
            return await self._record_many(items)

    async def _record_many(self, items: Sequence[tuple[AgentRef, Step]]) -> list[Result]:
        if not isinstance(self.conn, redis.asyncio.Redis):
            # A Cluster pipeline cannot carry scripts (nor reload them on NOSCRIPT): there,
            # one script after another; the prefix's hash tag keeps them on one node anyway.
            return [
                _result(
                    await self._transition(keys=self._keys(a), args=self._transition_args(a, s))
                )
                for a, s in items
            ]
        async with self.conn.pipeline(transaction=False) as pipe:
            for agent, step in items:
                await self._transition(
                    keys=self._keys(agent), args=self._transition_args(agent, step), client=pipe
                )
            raws = await pipe.execute()
        return [_result(raw) for raw in raws]

    async def record_deleted(self, agent: AgentRef, last: Step, at: datetime.datetime) -> Result:
        """Mark the record deleted, send ``agent.deleted``, leave the index, expire at the TTL."""
        args: list[str | int] = [
            agent.uid,
            self.channel,
            self.stream_maxlen,
            deletion_event(agent, last, at).to_json(),
            agent.ref,
            self.deleted_ttl_seconds,
            _time(at),
        ]
        async with self._bounded():
            return _result(await self._delete(keys=self._keys(agent), args=args))

    def killswitch_key(self, name: str) -> str:
        return f"{self.prefix}killswitch:{name}"

    async def record_killswitch(
        self,
        name: str,
        spec: models.KillswitchSpec,
        status: models.KillswitchStatus,
        at: datetime.datetime,
        *,
        engaged_by: str,
        disengaged_by: str,
        uid: str = "",
    ) -> bool:
        """Write the killswitch's hash, and announce it when its engaged state changed
        since the record (first sight: only an engaged one), or when it is engaged and the
        record was another switch's of the same name (``uid``). True when announced.

        One script: the hash and the event land together or not at all, in every topology.
        """
        engaged = "1" if spec.engaged else "0"
        fields: dict[str, str | int] = {
            "engaged": engaged,
            "reason": spec.reason,
            "engagedAt": _time(status.engaged_at),
            "matched": status.matched,
            "killed": status.killed,
            "completedAt": _time(status.completed_at),
            "engagedBy": engaged_by,
            "disengagedBy": disengaged_by,
            **({"uid": uid} if uid else {}),
        }
        args: list[str | int] = [
            engaged,
            self.channel,
            self.stream_maxlen,
            killswitch_event(
                name, spec, status, at, engaged_by=engaged_by, disengaged_by=disengaged_by
            ).to_json(),
            uid,
            fields["engagedAt"],
            *(item for pair in fields.items() for item in pair),
        ]
        async with self._bounded():
            raw = await self._killswitch(keys=[self.killswitch_key(name), self.stream], args=args)
        return bool(int(raw))

    async def forget_killswitch(self, name: str, at: datetime.datetime) -> bool:
        """The switch is deleted: its hash goes, and an engaged one is announced
        ``killswitch.disengaged`` (it kills no more). True when announced; once gone, a
        second call finds nothing to do."""
        key = self.killswitch_key(name)
        async with self._bounded():
            raw = await self.conn.hgetall(key)
            if not raw:
                return False
            record = {_text(k): _text(v) for k, v in raw.items()}
            event = killswitch_event(
                name,
                models.KillswitchSpec(engaged=False, reason=record.get("reason", "")),
                models.KillswitchStatus(
                    matched=int(record.get("matched") or 0), killed=int(record.get("killed") or 0)
                ),
                at,
                engaged_by=record.get("engagedBy", ""),
                disengaged_by="",
            )
            args: list[str | int] = [self.channel, self.stream_maxlen, event.to_json()]
            announced = await self._forget_switch(keys=[key, self.stream], args=args)
        return bool(int(announced))

    async def get_killswitch(self, name: str) -> dict[str, str] | None:
        async with self._bounded():
            raw = await self.conn.hgetall(self.killswitch_key(name))
        return {_text(k): _text(v) for k, v in raw.items()} if raw else None

    async def get(self, namespace: str, name: str) -> dict[str, str] | None:
        """The agent's record, or None when there is none."""
        async with self._bounded():
            return await self._get(namespace, name)

    async def _get(self, namespace: str, name: str) -> dict[str, str] | None:
        raw = await self.conn.hgetall(self.agent_key(namespace, name))
        if not raw:
            return None
        return {_text(k): _text(v) for k, v in raw.items()}

    async def unindex(self, ref: str) -> None:
        """Take ``namespace/name`` out of every phase set (an entry whose record is gone)."""
        async with self._bounded():
            for phase in PHASES:
                await self.conn.srem(self.phase_key(phase), ref)

    async def agents_in(self, phase: lifecycle.Phase) -> set[str]:
        """``namespace/name`` of every live agent in ``phase``."""
        async with self._bounded():
            return {_text(m) for m in await self.conn.smembers(self.phase_key(phase))}

    async def resync(
        self, agent: AgentRef, status: models.AgentStatus, have: int | None = None
    ) -> list[Result]:
        """Bring the record up to ``status``: replay, in order and with their original
        times, the transitions of ``status.history`` that the record lacks.

        ``have``: the seq the caller knows the record holds (it skips the read); when
        that proves wrong the script refuses, and the caller resyncs without it.
        Nothing is lost when Valkey was down or wiped; transitions the record
        already has are not sent again.
        """
        async with self._bounded():
            if have is None:
                record = await self._get(agent.namespace, agent.name)
                have = int(record["seq"]) if record and record.get("uid") == agent.uid else 0
            missing = [step for step in steps(status) if step.seq > have]
            return await self._record_many([(agent, s) for s in missing]) if missing else []


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
