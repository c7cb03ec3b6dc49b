"""The API's shapes: Agent and Killswitch spec and status, and the event payload.

These pydantic models are the single source of truth: ``crd.py`` renders
``crds/*.yaml`` from them (defaults, bounds, enums and descriptions included)
and the operator parses what it reads from the API server with them. Field
names are camelCase on the wire (``taskId``), snake_case in Python.
"""

from __future__ import annotations

import datetime
import enum
from typing import Annotated, Any, Final, Literal

import pydantic
from pydantic.alias_generators import to_camel

from controller import lifecycle

GROUP: Final = "orchestrator.mosaicstack.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = "orchestrator.mosaicstack.dev/v1alpha1"  # GROUP/VERSION

# Held on every Agent until its ending and its agent.deleted are on record.
FINALIZER: Final = f"{GROUP}/finalizer"

# Who asked, stamped by the API server (deploy/base/audit.yaml, a MutatingAdmissionPolicy)
# from the request's authenticated user: whatever a client writes there is replaced.
KILLED_BY: Final = f"{GROUP}/killed-by"  # on an Agent: who set desiredPhase Killed
ENGAGED_BY: Final = f"{GROUP}/engaged-by"  # on a Killswitch: who last engaged it
DISENGAGED_BY: Final = f"{GROUP}/disengaged-by"  # on a Killswitch: who last disengaged it
AUDIT_ANNOTATIONS: Final = (KILLED_BY, ENGAGED_BY, DISENGAGED_BY)
WHO_MAX: Final = 1024  # the longest user name recorded (status fields are bounded by it)
KILL_MESSAGE_MAX: Final = 1024  # the longest kill message recorded (status.stopping.message)


def who(annotations: dict[str, str], key: str) -> str:
    """Who asked, from the audit annotation ``key`` ("" when unknown), cut to ``WHO_MAX``."""
    return str(annotations.get(key, ""))[:WHO_MAX]


DNS_LABEL: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def format_time(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC with milliseconds and a ``Z``: ``2026-01-01T10:00:01.123Z``."""
    utc = moment.astimezone(datetime.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="forbid",
        use_enum_values=False,
    )


Timestamp = Annotated[
    datetime.datetime,
    pydantic.PlainSerializer(format_time, return_type=str),
    pydantic.WithJsonSchema({"type": "string", "format": "date-time"}),
]


# --- Agent ---


class DesiredPhase(enum.StrEnum):
    RUNNING = "Running"
    KILLED = "Killed"


_PRESERVE: Final[pydantic.config.JsonDict] = {"x-kubernetes-preserve-unknown-fields": True}


class TemplateMetadata(_Model):
    """Labels and annotations for the Pod (the ``sim.*`` annotations go here)."""

    model_config = pydantic.ConfigDict(extra="allow", json_schema_extra=_PRESERVE)

    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class Container(_Model):
    """A container of the Pod; fields beyond name and image are checked by the API server."""

    model_config = pydantic.ConfigDict(extra="allow", json_schema_extra=_PRESERVE)

    name: Annotated[str, pydantic.Field(max_length=63, pattern=DNS_LABEL)]
    image: Annotated[str, pydantic.Field(min_length=1, max_length=4096)]


class PodSpec(_Model):
    model_config = pydantic.ConfigDict(extra="allow", json_schema_extra=_PRESERVE)

    containers: Annotated[list[Container], pydantic.Field(min_length=1, max_length=64)]


class PodTemplate(_Model):
    """A Pod template, as in a Job: the API server validates it in full when the Pod is made."""

    metadata: TemplateMetadata = TemplateMetadata()
    spec: PodSpec


class AgentSpec(_Model):
    task_id: Annotated[
        str,
        pydantic.Field(
            min_length=1,
            max_length=253,
            description="The task this agent works on. Required; it cannot change.",
        ),
    ]
    agent_type: Annotated[
        str,
        pydantic.Field(
            max_length=63,
            pattern=DNS_LABEL,
            description="worker, reviewer, tester, or any DNS label.",
        ),
    ] = "worker"
    desired_phase: Annotated[
        DesiredPhase,
        pydantic.Field(
            description="Running (default) or Killed. Once Killed it never goes back.",
        ),
    ] = DesiredPhase.RUNNING
    kill_reason: Annotated[
        str, pydantic.Field(max_length=1024, description="Why the agent was killed (audit).")
    ] = ""
    kill_grace_period_seconds: Annotated[
        int,
        pydantic.Field(
            ge=0,
            le=3600,
            description="On kill: SIGTERM, then forced removal after this many seconds.",
        ),
    ] = 10
    spawn_timeout_seconds: Annotated[
        int,
        pydantic.Field(
            ge=1, le=86400, description="Spawning longer than this fails with SpawnTimeout."
        ),
    ] = 300
    active_deadline_seconds: Annotated[
        int | None,
        pydantic.Field(
            ge=1,
            le=31_536_000,
            description="Running longer than this fails with DeadlineExceeded; none if unset.",
        ),
    ] = None
    ttl_seconds_after_finished: Annotated[
        int | None,
        pydantic.Field(
            ge=0,
            le=31_536_000,
            description=(
                "Delete the Agent this many seconds after it finished (0: at once); if unset,"
                " the operator's AGENT_TTL_SECONDS_AFTER_FINISHED applies (0 there: keep)."
            ),
        ),
    ] = None
    template: Annotated[
        PodTemplate, pydantic.Field(description="The Pod template of the agent's workload.")
    ]


class HistoryEntry(_Model):
    phase: lifecycle.Phase
    at: Timestamp
    reason: Annotated[str, pydantic.Field(max_length=128)]


class Condition(_Model):
    """A standard Kubernetes condition, as kstatus, Argo CD and Flux read them."""

    type: Annotated[str, pydantic.Field(max_length=316)]
    status: Literal["True", "False", "Unknown"]
    reason: Annotated[str, pydantic.Field(max_length=1024)] = ""
    message: Annotated[str, pydantic.Field(max_length=32768)] = ""
    last_transition_time: Timestamp | None = None
    observed_generation: int | None = None


class Stopping(_Model):
    """A kill under way: the operator has begun to stop the workload, for this reason."""

    reason: Annotated[str, pydantic.Field(max_length=128)]
    message: Annotated[str, pydantic.Field(max_length=KILL_MESSAGE_MAX)] = ""
    by: Annotated[str | None, pydantic.Field(max_length=WHO_MAX)] = None  # who asked, if known


class AgentStatus(_Model):
    phase: lifecycle.Phase | None = None
    reason: str = ""
    message: str = ""
    error: str = ""
    started_at: Timestamp | None = None
    completed_at: Timestamp | None = None
    pod_name: str | None = None
    stopping: Stopping | None = None
    # Who asked for the kill, as the API server knew them (the spec's kill: the user who
    # set desiredPhase Killed; a killswitch's: who engaged it); set with phase Killed.
    killed_by: Annotated[str | None, pydantic.Field(max_length=WHO_MAX)] = None
    observed_generation: int | None = None
    seq: Annotated[int, pydantic.Field(ge=0)] = 0
    history: Annotated[list[HistoryEntry], pydantic.Field(max_length=16)] = []
    conditions: list[Condition] = []

    def life(self) -> lifecycle.Life:
        """The recorded life, as the phase machine sees it."""
        spawning = next((h.at for h in self.history if h.phase is lifecycle.Phase.SPAWNING), None)
        return lifecycle.Life(
            phase=self.phase,
            seq=self.seq,
            started_at=self.started_at,
            completed_at=self.completed_at,
            spawning_since=spawning,
            stopping=(
                lifecycle.Kill(self.stopping.reason, self.stopping.message, self.stopping.by or "")
                if self.stopping is not None
                else None
            ),
            reason=self.reason,
            message=self.message,
            error=self.error,
        )


class ObjectMeta(pydantic.BaseModel):
    """The parts of metadata the operator reads; the rest is kept as it came."""

    model_config = pydantic.ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    name: str
    namespace: str = ""
    uid: str = ""
    generation: int = 0
    resource_version: str = pydantic.Field("", alias="resourceVersion")
    creation_timestamp: datetime.datetime | None = pydantic.Field(None, alias="creationTimestamp")
    deletion_timestamp: datetime.datetime | None = pydantic.Field(None, alias="deletionTimestamp")
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class Agent(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, populate_by_name=True)

    api_version: Literal["orchestrator.mosaicstack.dev/v1alpha1"] = pydantic.Field(
        API_VERSION, alias="apiVersion"
    )
    kind: Literal["Agent"] = "Agent"
    metadata: ObjectMeta
    spec: AgentSpec
    status: AgentStatus = AgentStatus()

    @property
    def ref(self) -> str:
        """``namespace/name``: how the mirror and the events name an agent."""
        return f"{self.metadata.namespace}/{self.metadata.name}"


# --- Killswitch ---


class SelectorRequirement(_Model):
    key: Annotated[str, pydantic.Field(min_length=1, max_length=316)]
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = []


class LabelSelector(_Model):
    """A standard label selector; empty matches everything."""

    match_labels: dict[str, str] = {}
    match_expressions: list[SelectorRequirement] = []


class KillswitchSpec(_Model):
    engaged: Annotated[
        bool, pydantic.Field(description="While true, every matching live agent is killed.")
    ] = False
    reason: Annotated[
        str, pydantic.Field(max_length=1024, description="Why; recorded on every kill.")
    ] = ""
    namespace_selector: Annotated[
        LabelSelector, pydantic.Field(description="Namespaces it applies to; empty: all.")
    ] = LabelSelector()
    agent_selector: Annotated[
        LabelSelector, pydantic.Field(description="Agents it applies to; empty: all.")
    ] = LabelSelector()


class KillswitchStatus(_Model):
    engaged_at: Timestamp | None = None
    matched: Annotated[int, pydantic.Field(ge=0)] = 0
    killed: Annotated[int, pydantic.Field(ge=0)] = 0
    completed_at: Timestamp | None = None
    # Who last engaged or changed it while engaged, and who last disengaged it, as the API
    # server knew them (deploy/base/audit.yaml).
    engaged_by: Annotated[str | None, pydantic.Field(max_length=WHO_MAX)] = None
    disengaged_by: Annotated[str | None, pydantic.Field(max_length=WHO_MAX)] = None


# --- Events (CloudEvents 1.0, structured mode) ---


class EventType(enum.StrEnum):
    SPAWNING = "agent.spawning"
    RUNNING = "agent.running"
    COMPLETED = "agent.completed"
    FAILED = "agent.failed"
    KILLED = "agent.killed"
    DELETED = "agent.deleted"
    KILLSWITCH_ENGAGED = "killswitch.engaged"
    KILLSWITCH_DISENGAGED = "killswitch.disengaged"


def event_type(phase: lifecycle.Phase) -> EventType:
    return EventType(f"agent.{phase.value.lower()}")


class EventData(pydantic.BaseModel):
    """The ``data`` of an agent event; field order is the wire order."""

    model_config = pydantic.ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    namespace: str
    name: str
    uid: str
    task_id: str = pydantic.Field(alias="taskId")
    agent_type: str = pydantic.Field(alias="agentType")
    from_: lifecycle.Phase | None = pydantic.Field(alias="from")
    to: lifecycle.Phase | Literal["Deleted"]
    seq: int
    reason: str
    message: str
    error: str
    started_at: Timestamp | None = pydantic.Field(alias="startedAt")
    completed_at: Timestamp | None = pydantic.Field(alias="completedAt")
    killed_by: str = pydantic.Field("", alias="killedBy")  # agent.killed: who asked


class CloudEvent(pydantic.BaseModel):
    """A CloudEvents 1.0 event in structured JSON mode."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str
    type: EventType
    time: Timestamp
    datacontenttype: Literal["application/json"] = "application/json"
    data: EventData | dict[str, Any]

    def to_json(self) -> str:
        """The event's bytes, the same on the pub/sub channel and in the stream."""
        return self.model_dump_json(by_alias=True)


def agent_source(namespace: str, name: str) -> str:
    return f"/apis/{API_VERSION}/namespaces/{namespace}/agents/{name}"
