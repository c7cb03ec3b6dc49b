"""``kubectl agents``: what an operator of an agent fleet reaches for, from the terminal.

Installed with the package as the executable ``kubectl-agents``, so kubectl
finds it as a plugin. It uses the kubeconfig, context and namespace flags as
kubectl does (``events`` shows one namespace, or all with ``-A``), reads the
environment through ``settings`` as the operator does, and ``VALKEY_URL`` (or
``--valkey-url``) for the event stream,
with the operator's TLS settings (``VALKEY_CA_FILE`` or ``--valkey-ca-file``,
``VALKEY_CERT_FILE``, ``VALKEY_KEY_FILE``), checked by the same rules.

Exit codes: 0 done; 1 the request failed (unknown agent, views disagree, wait
timed out); 2 a usage error (bad flag or selector); 3 the cluster cannot be
reached; 4 Valkey cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import pathlib
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final, cast

import redis.exceptions

from controller import killswitch, kube, lifecycle, mirror, models, settings

Entries = list[tuple[bytes, dict[bytes, bytes]]]

OK: Final = 0
FAILED: Final = 1
USAGE: Final = 2
NO_CLUSTER: Final = 3
NO_VALKEY: Final = 4

DEFAULT_SWITCH: Final = "all-stop"
TERMINAL: Final = {p.value for p in lifecycle.TERMINAL}
COMPARED: Final = ("phase", "seq", "reason", "error", "startedAt", "completedAt")


class Failed(Exception):
    """The request could not be done; ``code`` is the exit code."""

    def __init__(self, message: str, code: int = FAILED) -> None:
        super().__init__(message)
        self.code = code


# --- selectors: kubectl's label-selector syntax into a LabelSelector ---

_TERM = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9./_-]+)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<value>[A-Za-z0-9._-]*)"
    r"|\s+(?P<set>in|notin)\s*\((?P<values>[^)]*)\))?\s*$"
)


def parse_selector(text: str) -> dict[str, Any]:
    """``a=b,c!=d,e in (x,y),f notin (z),g,!h`` as a LabelSelector's JSON; ValueError if bad."""
    labels: dict[str, str] = {}
    expressions: list[dict[str, Any]] = []
    for term in re.split(r",(?![^()]*\))", text) if text.strip() else []:
        found = _TERM.match(term)
        if found is None or (found["neg"] and (found["op"] or found["set"])):
            raise ValueError(f"cannot parse the selector term {term.strip()!r}")
        key = found["key"]
        if found["op"] in ("=", "=="):
            labels[key] = found["value"]
        elif found["op"] == "!=":
            expressions.append({"key": key, "operator": "NotIn", "values": [found["value"]]})
        elif found["set"]:
            values = [v.strip() for v in found["values"].split(",") if v.strip()]
            operator = "In" if found["set"] == "in" else "NotIn"
            expressions.append({"key": key, "operator": operator, "values": values})
        else:
            operator = "DoesNotExist" if found["neg"] else "Exists"
            expressions.append({"key": key, "operator": operator})
    selector: dict[str, Any] = {}
    if labels:
        selector["matchLabels"] = labels
    if expressions:
        selector["matchExpressions"] = expressions
    return selector


# --- the commands ---


class Context:
    """What every command needs: the cluster, the namespace, and Valkey when asked."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        # The environment through settings, as the operator reads it: one set of rules.
        kubeconfig = args.kubeconfig or settings.given("KUBECONFIG") or None
        if args.kubeconfig and not pathlib.Path(args.kubeconfig).is_file():
            # Named on the command line: one file, which must be there (as kubectl has it).
            raise Failed(f"--kubeconfig {args.kubeconfig}: no such file", NO_CLUSTER)
        try:
            self.kube = kube.Kube(kube.load_config(kubeconfig, args.context))
        except kube.KubernetesUnavailable as exc:
            raise Failed(str(exc), NO_CLUSTER) from None
        self.namespace = args.namespace or self.kube.config.namespace
        self.valkey_url = args.valkey_url or settings.given("VALKEY_URL")

    def mirror(self) -> mirror.Mirror:
        if not self.valkey_url:
            raise Failed("no Valkey to read: set VALKEY_URL or pass --valkey-url", USAGE)
        try:
            flags = {"VALKEY_URL": self.valkey_url, "VALKEY_CA_FILE": self.args.valkey_ca_file}
            config = settings.load(overrides=flags)
        except settings.SettingsError as exc:
            raise Failed(str(exc), USAGE) from None
        conn = mirror.connect(config, attempts=2)
        return mirror.Mirror(conn, prefix=config.valkey_key_prefix)

    async def close(self) -> None:
        await self.kube.close()


def _say(line: str = "") -> None:
    print(line, flush=True)


async def cmd_kill(ctx: Context) -> int:
    args = ctx.args
    if args.names and (args.all or args.selector):
        raise Failed("name agents, or use --all or -l, not both", USAGE)
    if not args.names and not (args.all or args.selector):
        raise Failed("name the agents to kill, or use --all or -l SELECTOR", USAGE)
    if args.names:
        targets = [(ctx.namespace, name) for name in args.names]
    else:
        query = ""
        if args.selector:
            try:
                query = killswitch.query(
                    models.LabelSelector.model_validate(parse_selector(args.selector))
                )
            except ValueError as exc:
                raise Failed(f"bad selector: {exc}", USAGE) from None
        namespace = None if args.all_namespaces else ctx.namespace
        listed = await ctx.kube.list_agents(namespace, label_selector=query)
        targets = [
            (a["metadata"]["namespace"], a["metadata"]["name"])
            for a in listed
            if a.get("status", {}).get("phase") not in TERMINAL
        ]
    spec = {"desiredPhase": "Killed", "killReason": args.reason}
    missing = []
    for namespace, name in targets:
        try:
            await ctx.kube.patch_agent_spec(namespace, name, spec)
        except kube.NotFound:
            missing.append(f"{namespace}/{name}")
            _say(f"agent {name} not found in namespace {namespace}")
            continue
        _say(
            f"agent/{name} kill requested"
            + (f" (namespace {namespace})" if args.all_namespaces else "")
        )
    asked = len(targets) - len(missing)
    if args.wait and asked:
        await _wait_terminal(
            ctx, [t for t in targets if f"{t[0]}/{t[1]}" not in missing], args.timeout
        )
    _say(f"{asked} agent(s) {'killed' if args.wait else 'asked to stop'}")
    return FAILED if missing else OK


async def _wait_terminal(ctx: Context, targets: list[tuple[str, str]], timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    pending = set(targets)
    while pending:
        for namespace, name in sorted(pending):
            body = await ctx.kube.get_agent(namespace, name)
            phase = (body or {}).get("status", {}).get("phase")
            if body is None or phase in TERMINAL:
                pending.discard((namespace, name))
                _say(f"agent/{name} {phase or 'gone'}")
        if pending and asyncio.get_running_loop().time() > deadline:
            names = ", ".join(n for _, n in sorted(pending))
            raise Failed(f"timed out after {timeout:g} s waiting for: {names}")
        if pending:
            await asyncio.sleep(0.2)


async def cmd_killswitch(ctx: Context) -> int:
    args = ctx.args
    if args.action == "status":
        return await _switch_status(ctx, args.name)
    name = args.name or DEFAULT_SWITCH
    if args.action == "disengage":
        try:
            await ctx.kube.patch_killswitch_spec(name, {"engaged": False})
        except kube.NotFound:
            raise Failed(f"killswitch {name} not found") from None
        _say(f"killswitch/{name} disengaged (killed agents stay killed)")
        return OK
    spec: dict[str, Any] = {"engaged": True, "reason": args.reason}
    try:
        spec["agentSelector"] = parse_selector(args.selector or "")
        spec["namespaceSelector"] = parse_selector(args.namespace_selector or "")
    except ValueError as exc:
        raise Failed(f"bad selector: {exc}", USAGE) from None
    try:
        await ctx.kube.create_killswitch(name, spec)
    except kube.Conflict:
        await ctx.kube.patch_killswitch_spec(name, spec)
    _say(f"killswitch/{name} engaged: {args.reason or 'no reason given'}")
    return OK


async def _switch_status(ctx: Context, name: str | None) -> int:
    listed = await ctx.kube.list_killswitches()
    if name:
        listed = [s for s in listed if s["metadata"]["name"] == name]
        if not listed:
            raise Failed(f"killswitch {name} not found")
    rows = [("NAME", "ENGAGED", "BY", "MATCHED", "KILLED", "ENGAGED-AT", "COMPLETED-AT", "REASON")]
    for switch in listed:
        spec, status = switch.get("spec", {}), switch.get("status", {})
        # Who engaged it, while engaged; who disengaged it, once disengaged.
        by = status.get("engagedBy") if spec.get("engaged") else status.get("disengagedBy")
        rows.append(
            (
                switch["metadata"]["name"],
                str(bool(spec.get("engaged"))).lower(),
                by or "-",
                str(status.get("matched", 0)),
                str(status.get("killed", 0)),
                status.get("engagedAt") or "-",
                status.get("completedAt") or "-",
                spec.get("reason") or "-",
            )
        )
    _table(rows)
    return OK


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        _say("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _since(text: str | None) -> str:
    """A stream id from ``--since``: an id as it is, a time (RFC 3339) as its milliseconds."""
    if not text:
        return "-"
    if re.fullmatch(r"\d+(-\d+)?", text):
        return text
    try:
        moment = models.parse_time(text)
    except ValueError:
        raise Failed(
            f"--since takes a stream id or a time like 2026-01-01T10:00:00Z, not {text!r}", USAGE
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return str(int(moment.timestamp() * 1000))


def render(event: dict[str, Any], output: str) -> str:
    """One event for the terminal: readable, wide, or its JSON as stored."""
    if output == "json":
        return json.dumps(event, separators=(",", ":"))
    data = event.get("data", {})
    kind = str(event.get("type", ""))
    if kind.startswith("killswitch."):
        state = kind.split(".")[1]
        by = data.get("engagedBy") if state == "engaged" else data.get("disengagedBy")
        parts = [event["time"], f"killswitch/{data.get('name')}", state]
        parts += [f"by {by}" if by else "", str(data.get("reason") or "")]
        return "  ".join(p for p in parts if p).rstrip()
    arrow = f"{data.get('from') or '-'} → {data.get('to')}"
    parts = [
        event["time"],
        f"{data.get('namespace')}/{data.get('name')}",
        arrow,
        data.get("reason", ""),
    ]
    if output == "wide":
        parts += [f"seq={data.get('seq')}", f"task={data.get('taskId')}", data.get("message", "")]
    if data.get("killedBy") and data.get("to") == lifecycle.Phase.KILLED:
        parts.append(f"by {data['killedBy']}")
    if data.get("error"):
        parts.append(f"error: {data['error']}")
    return "  ".join(str(p) for p in parts if p != "").rstrip()


def _events_filter(ctx: Context) -> Callable[[dict[str, Any]], bool]:
    """Which events to show, as kubectl shows objects: the namespace's (of ``-n`` or the
    context), or every namespace's with ``-A``; one agent's with ``--for``. A killswitch's
    own events concern every namespace, so they show unless ``--for`` names an agent."""
    args = ctx.args
    namespace = None if args.all_namespaces else ctx.namespace
    name = None
    if args.for_:
        kind, _, name = args.for_.rpartition("/")
        if kind.lower() not in ("", "agent", "agents", "ag") or not name:
            raise Failed(f"--for takes agent/NAME, not {args.for_!r}", USAGE)

    def shown(event: dict[str, Any]) -> bool:
        data = event.get("data") or {}
        if str(event.get("type", "")).startswith("killswitch."):
            return name is None
        return (namespace is None or data.get("namespace") == namespace) and (
            name is None or data.get("name") == name
        )

    return shown


async def cmd_events(ctx: Context) -> int:
    args = ctx.args
    shown = _events_filter(ctx)
    mirror_ = ctx.mirror()
    start = _since(args.since)
    try:
        entries = cast(Entries, await mirror_.conn.xrange(mirror_.stream, min=start, max="+"))
        # Follow on from the last event shown (or from --since): never from "$", which would
        # drop whatever arrives between two reads.
        last = "0-0" if start == "-" else (start if "-" in start else f"{start}-0")
        for entry_id, fields in entries:
            event = json.loads(fields[b"event"])
            if shown(event):
                _say(render(event, args.output))
            last = entry_id.decode()
        while args.follow:
            found = cast(
                list[tuple[bytes, Entries]],
                await mirror_.conn.xread({mirror_.stream: last}, block=5000),
            )
            for _, stream_entries in found or []:
                for entry_id, fields in stream_entries:
                    event = json.loads(fields[b"event"])
                    if shown(event):
                        _say(render(event, args.output))
                    last = entry_id.decode()
    finally:
        await mirror.close(mirror_.conn)
    return OK


def who_asked(status: dict[str, Any]) -> str:
    """Who killed the agent, or asked for the kill under way ("" when nobody is known)."""
    if status.get("killedBy"):
        return f"killed by {status['killedBy']}"
    asked = (status.get("stopping") or {}).get("by")
    return f"being killed, asked by {asked}" if asked else ""


async def cmd_status(ctx: Context) -> int:
    name = ctx.args.name
    body = await ctx.kube.get_agent(ctx.namespace, name)
    if body is None:
        raise Failed(f"agent {name} not found in namespace {ctx.namespace}")
    status = body.get("status", {})
    mirror_ = ctx.mirror()
    try:
        record = await mirror_.get(ctx.namespace, name) or {}
    finally:
        await mirror.close(mirror_.conn)
    rows = [("FIELD", "KUBERNETES", "VALKEY", "")]
    disagree = []
    if record.get("uid") and record.get("uid") != body["metadata"]["uid"]:
        disagree.append("uid")
    for field in COMPARED:
        mine = "" if status.get(field) is None else str(status.get(field))
        theirs = record.get(field, "")
        same = mine == theirs
        rows.append((field, mine or "-", theirs or "-", "" if same else "differs"))
        if not same:
            disagree.append(field)
    _table(rows)
    if status.get("reason") == lifecycle.Reason.QUEUED:
        # Which limit holds it: the operator's, or its namespace's annotation.
        _say(f"agent/{name}: queued, {status.get('message', '')}")
    if who := who_asked(status):
        _say(f"agent/{name}: {who}")
    if not record:
        _say(f"agent/{name}: Valkey has no record of it")
        return FAILED
    if disagree:
        _say(f"agent/{name}: Kubernetes and Valkey disagree on {', '.join(disagree)}")
        return FAILED
    _say(f"agent/{name}: Kubernetes and Valkey agree")
    return OK


# --- the command line ---


def _common(default: Any) -> argparse.ArgumentParser:
    """kubectl's connection flags, accepted before and after the command."""
    common = argparse.ArgumentParser(add_help=False, argument_default=default)
    common.add_argument("--kubeconfig", help="path to the kubeconfig file (default: $KUBECONFIG)")
    common.add_argument("--context", help="the kubeconfig context to use")
    common.add_argument("-n", "--namespace", help="the namespace (default: the context's)")
    common.add_argument("--valkey-url", help="Valkey to read events from (default: $VALKEY_URL)")
    common.add_argument(
        "--valkey-ca-file",
        help="PEM CA bundle that signed a rediss:// Valkey's certificate "
        "(default: $VALKEY_CA_FILE, else the system's trust store)",
    )
    return common


def parser() -> argparse.ArgumentParser:
    # On the commands the flags default to "not given", so they never undo the same flag
    # given before the command (`kubectl agents -n team-a kill x`).
    common = _common(argparse.SUPPRESS)

    root = argparse.ArgumentParser(
        prog="kubectl agents",
        description="Stop, watch and check AI agents run by the agent lifecycle operator.",
        epilog="A client certificate for Valkey comes from $VALKEY_CERT_FILE (and "
        "$VALKEY_KEY_FILE). Exit codes: 0 done, 1 failed, 2 usage, 3 no cluster, 4 no Valkey.",
        parents=[_common(None)],
    )
    sub = root.add_subparsers(dest="command", required=True)

    kill = sub.add_parser("kill", parents=[common], help="kill agents (sets desiredPhase: Killed)")
    kill.add_argument("names", nargs="*", metavar="NAME", help="agents to kill")
    kill.add_argument("--all", action="store_true", help="every live agent in the namespace")
    kill.add_argument("-l", "--selector", help="agents with these labels (kubectl syntax)")
    kill.add_argument(
        "-A", "--all-namespaces", action="store_true", help="with --all or -l: in every namespace"
    )
    kill.add_argument("--reason", default="", help="why, kept on record as the kill reason")
    kill.add_argument("--wait", action="store_true", help="wait until every one is finished")
    kill.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default 60)")
    kill.set_defaults(run=cmd_kill)

    switch = sub.add_parser(
        "killswitch", parents=[common], help="engage, disengage or show killswitches"
    )
    actions = switch.add_subparsers(dest="action", required=True)
    engage = actions.add_parser(
        "engage", parents=[common], help="kill every matching agent, now and while engaged"
    )
    engage.add_argument("name", nargs="?", help=f"the switch (default {DEFAULT_SWITCH})")
    engage.add_argument("--reason", default="", help="why, recorded on every kill")
    engage.add_argument("-l", "--selector", help="agents with these labels (default: all)")
    engage.add_argument("--namespace-selector", help="namespaces with these labels (default: all)")
    disengage = actions.add_parser(
        "disengage", parents=[common], help="stop new kills; revives nothing"
    )
    disengage.add_argument("name", nargs="?", help=f"the switch (default {DEFAULT_SWITCH})")
    status = actions.add_parser(
        "status", parents=[common], help="show the switches and their counts"
    )
    status.add_argument("name", nargs="?", help="one switch (default: all)")
    switch.set_defaults(run=cmd_killswitch)

    events = sub.add_parser(
        "events", parents=[common], help="the agents' events, from the Valkey stream"
    )
    events.add_argument(
        "-f", "-w", "--follow", "--watch", action="store_true", help="keep printing new events"
    )
    events.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        help="agents of every namespace (default: the namespace of -n or the context)",
    )
    events.add_argument("--for", dest="for_", metavar="agent/NAME", help="one agent's events")
    events.add_argument("--since", help="from this stream id or time (RFC 3339)")
    events.add_argument("-o", "--output", choices=("text", "wide", "json"), default="text")
    events.set_defaults(run=cmd_events)

    check = sub.add_parser(
        "status", parents=[common], help="compare an agent's status with its Valkey record"
    )
    check.add_argument("name", help="the agent")
    check.set_defaults(run=cmd_status)
    return root


async def _run(args: argparse.Namespace) -> int:
    ctx = Context(args)
    try:
        code: int = await args.run(ctx)
        return code
    finally:
        await ctx.close()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except Failed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except kube.KubernetesUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return NO_CLUSTER
    except kube.ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE if isinstance(exc, kube.Invalid) else FAILED
    except (redis.exceptions.RedisError, mirror.MirrorError) as exc:
        where = mirror.redact(args.valkey_url or settings.given("VALKEY_URL"))
        print(f"error: cannot reach Valkey at {where}: {exc}", file=sys.stderr)
        return NO_VALKEY
    except KeyboardInterrupt:
        return OK


if __name__ == "__main__":  # pragma: no cover - installed as the kubectl-agents executable
    sys.exit(main())
