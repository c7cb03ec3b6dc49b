"""The README's ACL users against a real Valkey: enough for the mirror, and nothing spare.

The two ``ACL SETUSER`` lines are read from README.md ("Valkey security") and
applied as written, so the documented lines are the tested ones. A whole life is
mirrored by ``agent-operator`` and read back by ``agent-reader``; ``ACL LOG``
(kept by the server for every refused command, key or channel, also inside
scripts) then proves that nothing either user sent was refused, and, with any
one permission taken away, that exactly that one was needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar, cast

import pytest
import redis
import redis.asyncio
import redis.exceptions

from controller import mirror, models, plugin
from controller.lifecycle import Phase
from localcluster import procs
from localcluster import valkey as localvalkey
from tests.helpers import valkey_refusal
from tests.valkey.test_mirror import AGENT, LIFE, at, status_of, stream_events

T = TypeVar("T")
REPO: Final = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD: Final = "admin-pass-4e1b"
PASSWORDS: Final = {"agent-operator": "operator-pass-9c2d", "agent-reader": "reader-pass-7a0f"}
REBORN: Final = dataclasses.replace(AGENT, uid="uid-2")
# A script of the user's own that deletes a key outside the prefix.
SCRIPT: Final = "return redis.call('DEL', KEYS[1] or 'other:agent')"
SCRIPT_SHA: Final = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()
SWITCH: Final = models.KillswitchSpec(engaged=True, reason="runaway spend")


def acl_line(user: str) -> list[str]:
    """The README's ``ACL SETUSER <user> ...`` line, as arguments, with the password filled in."""
    found = re.findall(rf"^ACL SETUSER {user} .*$", (REPO / "README.md").read_text(), re.M)
    assert len(found) == 1, f"README.md should show one ACL SETUSER line for {user}"
    return [f">{PASSWORDS[user]}" if arg == ">PASSWORD" else arg for arg in found[0].split()]


def permissions(user: str) -> list[str]:
    return [arg for arg in acl_line(user) if arg.startswith("+")]


@dataclass
class Secured:
    """A Valkey whose default user needs a password, with the README's users on it."""

    port: int
    admin: redis.Redis

    def url(self, user: str, password: str | None = None) -> str:
        return f"redis://{user}:{password or PASSWORDS[user]}@127.0.0.1:{self.port}/0"

    def set_users(self, user: str = "", without: str = "") -> None:
        """Both users as the README has them; ``user`` without the permission ``without``."""
        for name in PASSWORDS:
            line = acl_line(name)
            self.command(*(a for a in line if (name, a) != (user, without)))

    def command(self, *args: str) -> Any:
        """A command as the admin (the default user), as it would be typed."""
        return cast(Any, self.admin).execute_command(*args)

    def denials(self) -> list[tuple[str, str, str]]:
        """(user, reason, object) of every refusal the server logged since the last reset."""
        entries = cast(list[dict[bytes, Any]], self.command("ACL", "LOG"))
        return [
            (e[b"username"].decode(), e[b"reason"].decode(), e[b"object"].decode()) for e in entries
        ]


@pytest.fixture(scope="module")
def secured_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    proc, url = localvalkey.start(tmp_path_factory.mktemp("secured"), password=ADMIN_PASSWORD)
    try:
        with redis.Redis.from_url(url) as admin:
            yield Secured(int(url.rsplit(":", 1)[1].split("/")[0]), admin)
    finally:
        procs.stop(proc)


@pytest.fixture
def secured(secured_server: Secured) -> Secured:
    """The server emptied: no data, no scripts, no denials on record, the README's users set."""
    admin = secured_server.admin
    admin.flushall()
    admin.script_flush()
    secured_server.command("ACL", "LOG", "RESET")
    secured_server.set_users()
    return secured_server


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def operate(url: str, prefix: str = mirror.DEFAULT_PREFIX) -> list[mirror.Result]:
    """What the operator does: connect, record, resync, delete, recreate, a killswitch."""
    conn = mirror.client(url, attempts=1)
    try:
        await mirror.server_info(conn, url)
        m = mirror.Mirror(conn, prefix=prefix)
        results = [await m.record(AGENT, LIFE[0])]  # EVALSHA, NOSCRIPT, SCRIPT LOAD, EVALSHA
        results += await m.resync(AGENT, status_of(LIFE))  # HGETALL; SCRIPT EXISTS in a pipeline
        results.append(await m.record_deleted(AGENT, LIFE[-1], at(9)))  # a second script
        results.append(await m.record(REBORN, LIFE[0]))  # a new uid: the old record goes (DEL)
        await m.agents_in(Phase.SPAWNING)  # anti-entropy's sweep of the phase index
        engaged = models.KillswitchStatus(engaged_at=at(10), matched=1)
        for name in ("drill", "all-stop"):  # their script
            await m.record_killswitch(
                name, SWITCH, engaged, at(10), engaged_by="", disengaged_by=""
            )
        await m.forget_killswitch("drill", at(11))  # a deleted switch: HGETALL, its script
        return results
    finally:
        await conn.aclose()


async def read(
    url: str, prefix: str = mirror.DEFAULT_PREFIX
) -> tuple[list[str], dict[str, str] | None, set[str]]:
    """What a consumer does: the stream (XRANGE, XREAD), a record and the phase index."""
    conn = mirror.client(url, attempts=1)
    try:
        m = mirror.Mirror(conn, prefix=prefix)
        streamed = await stream_events(m)
        assert await conn.xread({m.stream: "0-0"}, count=1)
        return streamed, await m.get("team-a", "fix-login-bug"), await m.agents_in(Phase.SPAWNING)
    finally:
        await conn.aclose()


async def life_heard_by_reader(secured: Secured) -> tuple[list[mirror.Result], list[str]]:
    """The operator's run while the reader listens on the channel; what the reader heard."""
    conn = mirror.client(secured.url("agent-reader"), attempts=1)
    pubsub = conn.pubsub()
    try:
        await pubsub.subscribe(f"{mirror.DEFAULT_PREFIX}events")
        await pubsub.get_message(timeout=1)
        results = await operate(secured.url("agent-operator"))
        heard: list[str] = []
        while message := await pubsub.get_message(ignore_subscribe_messages=True, timeout=1):
            heard.append(message["data"].decode())
        return results, heard
    finally:
        await pubsub.aclose()
        await conn.aclose()


def test_the_lines_with_a_hash_tagged_prefix_are_enough_for_it(secured: Secured) -> None:
    tagged = "{orchestrator}:"
    for name in PASSWORDS:  # the README's rule: the prefix in place of orchestrator:
        secured.command(*(a.replace("orchestrator:", tagged) for a in acl_line(name)))
    results = run(operate(secured.url("agent-operator"), tagged))
    streamed, record, spawning = run(read(secured.url("agent-reader"), tagged))
    assert [r.outcome for r in results] == ["applied"] * 5
    assert len(streamed) == 8
    assert record is not None
    assert spawning == {"team-a/fix-login-bug"}
    assert secured.denials() == []
    # ... and the untagged keys are out of reach now.
    with pytest.raises(mirror.ValkeyRefused, match=r"No permissions to access a key"):
        run(operate(secured.url("agent-operator")))


def test_the_operator_user_mirrors_a_whole_life_and_nothing_it_sends_is_refused(
    secured: Secured,
) -> None:
    results, heard = run(life_heard_by_reader(secured))
    streamed, record, spawning = run(read(secured.url("agent-reader")))

    assert [r.outcome for r in results] == ["applied"] * 5
    assert [json.loads(e)["id"] for e in heard] == [
        "uid-1-1",
        "uid-1-2",
        "uid-1-3",
        "uid-1-deleted",
        "uid-2-1",
        "killswitch-drill-engaged-1767261610123",
        "killswitch-all-stop-engaged-1767261610123",
        "killswitch-drill-disengaged-1767261611123",
    ]
    assert streamed == heard
    assert record is not None
    assert (record["uid"], record["phase"], record["deleted"]) == ("uid-2", "Spawning", "0")
    assert spawning == {"team-a/fix-login-bug"}
    assert secured.admin.hget(f"{mirror.DEFAULT_PREFIX}killswitch:all-stop", "engaged") == b"1"
    assert secured.denials() == []


def test_the_reader_user_follows_events_through_kubectl_agents(
    secured: Secured,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_valkey_environment: pytest.MonkeyPatch,
) -> None:
    run(operate(secured.url("agent-operator")))
    code = plugin.main(
        [
            "events",
            "--all-namespaces",
            "--kubeconfig",
            str(unreachable_kubeconfig(tmp_path)),
            "--valkey-url",
            secured.url("agent-reader"),
        ]
    )
    assert code == plugin.OK
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[2:5] for line in lines[:3]] == [
        ["-", "→", "Spawning"],
        ["Spawning", "→", "Running"],
        ["Running", "→", "Completed"],
    ]
    assert "killswitch/all-stop  engaged" in lines[-2]
    assert secured.denials() == []


def test_the_operator_rules_work_from_an_acl_file_with_a_hashed_password(tmp_path: Path) -> None:
    """The README's advice for an ``aclfile``: ``user NAME`` and the rules, the password hashed."""
    password = PASSWORDS["agent-operator"]
    rules = [
        f"#{hashlib.sha256(password.encode()).hexdigest()}" if arg == f">{password}" else arg
        for arg in acl_line("agent-operator")[3:]
    ]
    users = tmp_path / "users.acl"
    users.write_text(f"user agent-operator {' '.join(rules)}\n")
    assert password not in users.read_text()
    proc, admin_url = localvalkey.start(tmp_path, password=ADMIN_PASSWORD, acl_file=users)
    try:
        port = int(admin_url.rsplit(":", 1)[1].split("/")[0])
        results = run(operate(f"redis://agent-operator:{password}@127.0.0.1:{port}/0"))
        with redis.Redis.from_url(admin_url) as admin:
            denials = cast(Any, admin).execute_command("ACL", "LOG")
    finally:
        procs.stop(proc)
    assert [r.outcome for r in results] == ["applied"] * 5
    assert denials == []


def unreachable_kubeconfig(tmp_path: Path) -> Path:
    """A kubeconfig for commands that never talk to the cluster (``events`` reads only Valkey)."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "x",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    return path


@pytest.mark.parametrize("permission", permissions("agent-operator"))
def test_every_permission_of_the_operator_is_needed(secured: Secured, permission: str) -> None:
    secured.set_users("agent-operator", without=permission)
    with contextlib.suppress(redis.exceptions.RedisError, mirror.MirrorError):
        run(operate(secured.url("agent-operator")))
    assert ("agent-operator", "command", permission[1:]) in secured.denials()


@pytest.mark.parametrize("permission", permissions("agent-reader"))
def test_every_permission_of_the_reader_is_needed(secured: Secured, permission: str) -> None:
    secured.set_users("agent-reader", without=permission)

    async def scenario() -> None:
        conn = mirror.client(secured.url("agent-reader"), attempts=1)
        pubsub = conn.pubsub()
        try:
            await pubsub.subscribe(f"{mirror.DEFAULT_PREFIX}events")
            await pubsub.get_message(timeout=1)
        finally:
            await pubsub.aclose()
            await conn.aclose()
        await read(secured.url("agent-reader"))

    run(operate(secured.url("agent-operator")))
    with contextlib.suppress(redis.exceptions.RedisError, mirror.MirrorError):
        run(scenario())
    assert ("agent-reader", "command", permission[1:]) in secured.denials()


Attempt = Callable[[redis.asyncio.Redis], Awaitable[object]]
NOPERM: Final = redis.exceptions.NoPermissionError
OUTSIDE: Final[dict[str, tuple[Attempt, type[redis.exceptions.ResponseError], str]]] = {
    "a key outside the prefix": (
        lambda c: c.hset("other:agent", "phase", "Running"),
        NOPERM,
        "No permissions to access a key",
    ),
    "a read outside the prefix": (
        lambda c: c.hgetall("other:agent"),
        NOPERM,
        "No permissions to access a key",
    ),
    "a channel outside the prefix": (
        lambda c: c.publish("other:events", "x"),
        NOPERM,
        "No permissions to access a channel",
    ),
    "a key outside the prefix declared to a script": (
        lambda c: c.evalsha(SCRIPT_SHA, 1, "other:agent"),
        NOPERM,
        "No permissions to access a key",
    ),
    "a key outside the prefix that a script did not declare": (
        lambda c: c.evalsha(SCRIPT_SHA, 0),
        # The script is refused at its DEL, and says so in its own words.
        redis.exceptions.ResponseError,
        "ACL failure in script: No permissions to access a key",
    ),
    "INFO": (lambda c: c.info(), NOPERM, "'info' command"),
    "KEYS": (lambda c: c.keys("*"), NOPERM, "'keys' command"),
    "CONFIG GET": (lambda c: c.config_get("requirepass"), NOPERM, "'config|get' command"),
    "FLUSHALL": (lambda c: c.flushall(), NOPERM, "'flushall' command"),
    "SCRIPT FLUSH": (lambda c: c.script_flush(), NOPERM, "'script|flush' command"),
    "EVAL of any script": (lambda c: c.eval("return 1", 0), NOPERM, "'eval' command"),
    "ACL LIST": (lambda c: c.acl_list(), NOPERM, "'acl|list' command"),
    "SET": (lambda c: c.set(f"{mirror.DEFAULT_PREFIX}x", "1"), NOPERM, "'set' command"),
    "SUBSCRIBE": (
        lambda c: c.execute_command("SUBSCRIBE", f"{mirror.DEFAULT_PREFIX}events"),
        NOPERM,
        "'subscribe' command",
    ),
}


@pytest.mark.parametrize(("attempt", "error", "refusal"), OUTSIDE.values(), ids=OUTSIDE.keys())
def test_the_operator_user_is_refused_outside_its_prefix_and_dangerous_commands(
    secured: Secured,
    attempt: Attempt,
    error: type[redis.exceptions.ResponseError],
    refusal: str,
) -> None:
    async def scenario() -> None:
        conn = mirror.client(secured.url("agent-operator"), attempts=1)
        try:
            # The user may load a script of its own, but what the script touches is checked.
            assert await conn.script_load(SCRIPT) == SCRIPT_SHA
            await attempt(conn)
        finally:
            await conn.aclose()

    secured.admin.hset("other:agent", "phase", "Spawning")
    with pytest.raises(error, match=re.escape(refusal)):
        run(scenario())
    assert secured.admin.hget("other:agent", "phase") == b"Spawning"


READER_WRITES: Final[dict[str, Attempt]] = {
    "HSET of a record": lambda c: c.hset(f"{mirror.DEFAULT_PREFIX}agent:team-a/x", "phase", "x"),
    "XADD to the stream": lambda c: c.xadd(f"{mirror.DEFAULT_PREFIX}events:stream", {"e": "x"}),
    "PUBLISH an event": lambda c: c.publish(f"{mirror.DEFAULT_PREFIX}events", "x"),
    "EVALSHA of the transition script": lambda c: c.evalsha("0" * 40, 0),
    "DEL of a record": lambda c: c.delete(f"{mirror.DEFAULT_PREFIX}agent:team-a/x"),
}


@pytest.mark.parametrize("attempt", READER_WRITES.values(), ids=READER_WRITES.keys())
def test_the_reader_user_is_refused_every_write(secured: Secured, attempt: Attempt) -> None:
    async def scenario() -> None:
        conn = mirror.client(secured.url("agent-reader"), attempts=1)
        try:
            await attempt(conn)
        finally:
            await conn.aclose()

    with pytest.raises(redis.exceptions.NoPermissionError):
        run(scenario())
    assert secured.admin.dbsize() == 0


def test_a_wrong_password_is_a_clear_error_that_does_not_show_it(secured: Secured) -> None:
    url = secured.url("agent-operator", password="not-the-pass-31f7")
    message = valkey_refusal(url)
    assert message.startswith(
        f"cannot reach Valkey at redis://agent-operator:***@127.0.0.1:{secured.port}/0: "
    )
    assert "invalid username-password pair" in message
    assert "not-the-pass-31f7" not in message


@pytest.mark.parametrize("protocol", [2, 3], ids=["RESP2", "RESP3"])
def test_hello_names_the_server_in_either_protocol(secured: Secured, protocol: int) -> None:
    url = secured.url("agent-operator")

    async def probe() -> mirror.ServerInfo:
        conn = redis.asyncio.Redis.from_url(url, protocol=protocol)
        try:
            return await mirror.server_info(conn, url)
        finally:
            await conn.aclose()

    found = run(probe())
    assert (found.server, found.address) == ("valkey", mirror.redact(url))
    assert found.version.split(".")[0].isdigit()


TLS_FILES: Final[list[dict[str, Any]]] = [
    {"ca_file": "/etc/ssl/certs/ca-certificates.crt"},
    {"cert_file": "client.pem"},
    {"key_file": "client.key"},
]


@pytest.mark.parametrize("files", TLS_FILES, ids=["a CA file", "a certificate", "a key"])
def test_a_tls_file_with_a_plain_url_is_refused_rather_than_ignored(files: dict[str, Any]) -> None:
    with pytest.raises(
        ValueError, match=r"^TLS files are for rediss:// URLs, not redis://u:\*\*\*@"
    ):
        mirror.client("redis://u:secret@127.0.0.1:6379/0", **files)
