"""The one module that talks to the Kubernetes API directly.

Credentials are resolved by ``controller.credentials`` (the kubeconfig named
by ``KUBECONFIG`` or ``~/.kube/config``, else the in-cluster service account,
reading tokens again as they change); requests go through aiohttp (which kopf
already uses), asynchronously, as plain dictionaries. Errors come back as ``ApiError``
with the API server's own sentence, and as ``NotFound`` / ``Conflict`` /
``Invalid`` for the cases the reconciler treats specially.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from controller import credentials, models

log = logging.getLogger(__name__)

MERGE_PATCH: Final = "application/merge-patch+json"
COMPONENT: Final = "agent-lifecycle-operator"
AGENTS: Final = f"/apis/{models.API_VERSION}"
# The longest Event message posted (longer ones are cut).
EVENT_MESSAGE_MAX: Final = 1024
# Agents per page when listing only their names (the relist that finds ones gone unseen).
LIST_PAGE: Final = 500
# The phrase of the API server's Pod Security admission when it refuses an object.
POD_SECURITY: Final = "violates PodSecurity"


class KubernetesUnavailable(RuntimeError):
    """No credentials, or the API server does not answer; the message says which."""


class ApiError(RuntimeError):
    """The API server answered with an error; ``str()`` is its sentence."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    """A write lost a race (resourceVersion changed) or the object already exists."""


class Invalid(ApiError):
    """The API server refused the object as invalid (HTTP 400/422), or as violating the
    namespace's Pod Security level (HTTP 403, ``POD_SECURITY`` in its message)."""


@dataclass(frozen=True)
class ServerInfo:
    host: str
    version: str


def load_config(kubeconfig: str | None, context: str | None = None) -> credentials.Credentials:
    """The kubeconfig's credentials (``KUBECONFIG``, else ``~/.kube/config``), else
    the in-cluster ServiceAccount's."""
    try:
        return credentials.load(kubeconfig, context)
    except credentials.CredentialsError as exc:
        raise KubernetesUnavailable(str(exc)) from None


def _error(status: int, text: str) -> ApiError:
    try:
        message = str(json.loads(text).get("message") or text)
    except (ValueError, AttributeError):
        message = text
    kind = {404: NotFound, 409: Conflict, 400: Invalid, 422: Invalid}.get(status, ApiError)
    if status == 403 and POD_SECURITY in message:
        # The namespace's Pod Security level refuses the object as written: no retry makes
        # it pass (unlike a 403 of RBAC or of an exhausted quota, which may pass later).
        kind = Invalid
    return kind(status, message)


class Kube:
    """An async client of the API server for what the operator reads and writes."""

    def __init__(self, config: credentials.Credentials, connections: int = 64) -> None:
        """``connections``: the most requests in flight at once; more wait for a connection,
        and the wait counts against their timeout."""
        self.config = config
        self.host = config.server
        self.connections = connections
        try:
            self._ssl = config.ssl_context()
        except credentials.CredentialsError as exc:
            raise KubernetesUnavailable(str(exc)) from None
        self._session: aiohttp.ClientSession | None = None
        self._refreshing = asyncio.Lock()

    async def _headers(self, content_type: str) -> dict[str, str]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        token = self.config.token
        if token.stale():  # read again first, off the loop: an exec plugin may take seconds
            async with self._refreshing:
                if token.stale():  # unless a request that held the lock before read it
                    # It never fails once loaded: a failed read keeps the token read last.
                    await asyncio.to_thread(token.refresh)
        value = token.current()
        if value:
            headers["Authorization"] = f"Bearer {value}"
        return headers

    async def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=self.connections),
                timeout=aiohttp.ClientTimeout(total=30),
            )
        try:
            async with self._session.request(
                method,
                self.host + path,
                data=json.dumps(body) if body is not None else None,
                headers=await self._headers(content_type),
                params=params,
            ) as response:
                text = await response.text()
                if response.status == 401:
                    self.config.token.refused()  # read again before the next request
                if response.status >= 400:
                    raise _error(response.status, text)
                result: dict[str, Any] = json.loads(text) if text else {}
                return result
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise KubernetesUnavailable(
                f"cannot reach the Kubernetes API at {self.host}: {exc}"
            ) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def server_info(self) -> ServerInfo:
        """Ask the API server for its version: proves the address and credentials work."""
        version = await self.request("GET", "/version")
        return ServerInfo(host=self.host, version=str(version.get("gitVersion", "?")))

    async def served_resources(self, api_version: str = models.API_VERSION) -> set[str]:
        """The resources the API server serves in ``api_version`` (none: not installed)."""
        try:
            served = await self.request("GET", f"/apis/{api_version}")
        except NotFound:
            return set()
        return {str(r.get("name")) for r in served.get("resources", [])}

    # --- leases (leader election) ---

    @staticmethod
    def lease_path(namespace: str, name: str = "") -> str:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        return f"{path}/{name}" if name else path

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", self.lease_path(namespace, name))
        except NotFound:
            return None

    async def create_lease(self, lease: dict[str, Any]) -> dict[str, Any]:
        """Create the Lease (``Conflict`` when another candidate made it first)."""
        return await self.request("POST", self.lease_path(lease["metadata"]["namespace"]), lease)

    async def replace_lease(self, lease: dict[str, Any]) -> dict[str, Any]:
        """Replace the Lease at its resourceVersion (``Conflict`` when it changed since)."""
        meta = lease["metadata"]
        return await self.request("PUT", self.lease_path(meta["namespace"], meta["name"]), lease)

    # --- agents ---

    @staticmethod
    def agent_path(namespace: str, name: str) -> str:
        return f"{AGENTS}/namespaces/{namespace}/agents/{name}"

    async def get_agent(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", self.agent_path(namespace, name))
        except NotFound:
            return None

    async def write_status(
        self, namespace: str, name: str, resource_version: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Write the status if the Agent is still at ``resource_version`` (else ``Conflict``)."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        path = self.agent_path(namespace, name) + "/status"
        return await self.request("PATCH", path, body, MERGE_PATCH)

    async def write_finalizers(
        self, namespace: str, name: str, resource_version: str, finalizers: list[str]
    ) -> dict[str, Any]:
        body = {"metadata": {"resourceVersion": resource_version, "finalizers": finalizers}}
        return await self.request("PATCH", self.agent_path(namespace, name), body, MERGE_PATCH)

    async def delete_agent(self, namespace: str, name: str, uid: str) -> None:
        """Delete the Agent with that uid (its TTL after finishing ran out); an Agent made
        again under the same name meanwhile is left alone. Our finalizer then runs."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
        # NotFound: gone already; Conflict: another Agent of that name by now.
        with contextlib.suppress(NotFound, Conflict):
            await self.request("DELETE", self.agent_path(namespace, name), body)

    async def list_agents(
        self, namespace: str | None = None, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        where = f"/namespaces/{namespace}" if namespace else ""
        params = {"labelSelector": label_selector} if label_selector else None
        listed = await self.request("GET", f"{AGENTS}{where}/agents", params=params)
        items: list[dict[str, Any]] = listed.get("items", [])
        return items

    async def agent_keys(self, namespace: str | None = None) -> tuple[set[str], str]:
        """``namespace/name`` of every Agent, and the resourceVersion of that snapshot: read
        a page of LIST_PAGE at a time, keeping only the names, so that it costs little memory
        however many agents there are."""
        where = f"/namespaces/{namespace}" if namespace else ""
        keys: set[str] = set()
        params = {"limit": str(LIST_PAGE)}
        as_of = ""
        while True:
            page = await self.request("GET", f"{AGENTS}{where}/agents", params=params)
            meta = page.get("metadata", {})
            as_of = as_of or str(meta.get("resourceVersion", ""))  # the first page's: all's
            keys.update(
                f"{i['metadata'].get('namespace', '')}/{i['metadata']['name']}"
                for i in page.get("items", [])
            )
            if not meta.get("continue"):
                return keys, as_of
            params = {"limit": str(LIST_PAGE), "continue": str(meta["continue"])}

    async def patch_agent_spec(
        self, namespace: str, name: str, spec: dict[str, Any]
    ) -> dict[str, Any]:
        """A user's change of an Agent's spec (the plugin's `kill`); never the operator's."""
        path = self.agent_path(namespace, name)
        return await self.request("PATCH", path, {"spec": spec}, MERGE_PATCH)

    # --- killswitches ---

    async def create_killswitch(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": models.API_VERSION,
            "kind": "Killswitch",
            "metadata": {"name": name},
            "spec": spec,
        }
        return await self.request("POST", f"{AGENTS}/killswitches", body)

    async def patch_killswitch_spec(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        path = f"{AGENTS}/killswitches/{name}"
        return await self.request("PATCH", path, {"spec": spec}, MERGE_PATCH)

    async def get_killswitch(self, name: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", f"{AGENTS}/killswitches/{name}")
        except NotFound:
            return None

    async def list_killswitches(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await self.request("GET", f"{AGENTS}/killswitches"))["items"]
        return items

    async def write_killswitch_status(
        self, name: str, resource_version: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        return await self.request(
            "PATCH", f"{AGENTS}/killswitches/{name}/status", body, MERGE_PATCH
        )

    # --- namespaces ---

    async def namespace_labels(self, name: str) -> dict[str, str]:
        found = await self.request("GET", f"/api/v1/namespaces/{name}")
        labels: dict[str, str] = found["metadata"].get("labels") or {}
        return labels

    async def list_namespaces(self) -> list[dict[str, Any]]:
        """Every Namespace, each with its apiVersion and kind (a list's items lack them)."""
        listed = await self.request("GET", "/api/v1/namespaces")
        return [{"apiVersion": "v1", "kind": "Namespace", **item} for item in listed["items"]]

    async def namespaces(self, label_selector: str) -> set[str]:
        params = {"labelSelector": label_selector} if label_selector else None
        listed = await self.request("GET", "/api/v1/namespaces", params=params)
        return {item["metadata"]["name"] for item in listed["items"]}

    # --- pods ---

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")
        except NotFound:
            return None

    async def create_pod(self, pod: dict[str, Any]) -> dict[str, Any]:
        namespace = pod["metadata"]["namespace"]
        return await self.request("POST", f"/api/v1/namespaces/{namespace}/pods", pod)

    async def delete_pod(self, namespace: str, name: str, grace_seconds: int, uid: str) -> None:
        """Delete the Pod with that uid (a newer Pod of the same name is left alone)."""
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": grace_seconds,
            "preconditions": {"uid": uid},
        }
        # NotFound: gone already; Conflict: another Pod of that name by now.
        with contextlib.suppress(NotFound, Conflict):
            await self.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", body)

    # --- events ---

    async def post_event(self, obj: dict[str, Any], kind: str, reason: str, message: str) -> None:
        """A Kubernetes Event on the object (an Agent unless its body says otherwise), for
        `kubectl describe`. A cluster-scoped object's Events live in ``default``, as
        client-go's recorder puts them."""
        meta = obj["metadata"]
        where = meta.get("namespace") or ""
        now = models.format_time(datetime.datetime.now(datetime.UTC))
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{uuid.uuid4().hex[:16]}",
                "namespace": where or "default",
            },
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", models.API_VERSION),
                "kind": obj.get("kind", "Agent"),
                "name": meta["name"],
                "namespace": where,
                "uid": meta["uid"],
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "type": kind,
            "reason": reason,
            "message": message[:EVENT_MESSAGE_MAX],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self.request("POST", f"/api/v1/namespaces/{where or 'default'}/events", event)


class Recorder:
    """Warning Events on Agents (and Namespaces), each sentence posted once per object while
    the process runs
    (client-go's EventRecorder, with its dedupe kept simple)."""

    def __init__(self, api: Kube) -> None:
        self.api = api
        self._said: dict[str, set[str]] = {}

    async def post(self, body: dict[str, Any], reason: str, message: str) -> None:
        meta = body["metadata"]
        key = f"{meta.get('namespace', '')}/{meta['name']}"
        said = self._said.setdefault(key, set())
        if message in said:
            return
        said.add(message)
        log.warning("%s: %s: %s", key, reason, message)
        await self.api.post_event(body, "Warning", reason, message)

    def forget(self, key: str) -> None:
        self._said.pop(key, None)
