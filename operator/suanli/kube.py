"""The operator's own calls to the hub's API: custom objects and Events, on the event loop.

Kopf drives watches and admission; for the writes that need precise control (status updates
with a resourceVersion precondition, Events with our reasons) the operator sends its own
requests. They go out through an aiohttp session on the operator's event loop, with the
credentials of the kubeconfig (or service account) the official client loaded: its CA, client
certificate and bearer token (refreshed through the client's hook, as for in-cluster tokens).

Why not the official client: it blocks, so each call had to run in a worker thread, and the
loop's default executor has only a handful of them (``min(32, CPUs + 4)``). Under a burst every
status write, voucher commit and Event queued behind the others there, and admission, whose
answer waits for the voucher's commit, waited with them: seconds per request at a few dozen
jobs per second. Requests on the loop are limited only by the connection pool.

Events are written in the background (as client-go's event recorder does): the caller does
not wait for them, and when too many are pending new ones are dropped and counted
(``suanli_events_dropped_total``), so a slow API server never holds up the work the Event
reports, nor fills memory.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import logging
import ssl
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final
from urllib.parse import quote

import aiohttp
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from suanli import metrics
from suanli.api.kinds import VOUCHERQUOTAS
from suanli.api.meta import GROUP, VERSION

logger = logging.getLogger(__name__)

COMPONENT: Final = "suanli-operator"
CONNECTIONS: Final = 32
"""Concurrent connections to the hub's API server for status writes, reads and Events."""
LEDGER_CONNECTIONS: Final = 32
"""Connections of their own for VoucherQuota requests (see Hub). Each voucher has at most one
commit in flight (the next waits for its resourceVersion), so this is how many vouchers can
commit at once; with 8, twenty busy vouchers queued for connections and admission slowed."""
TIMEOUT: Final = aiohttp.ClientTimeout(total=60, sock_connect=5)
EVENTS_PENDING_MAX: Final = 1000
"""Events waiting to be written beyond which new ones are dropped."""
EVENTS_CONCURRENT: Final = 8
"""Events written at once, so they never crowd out status writes."""
MERGE_PATCH: Final = "application/merge-patch+json"
JSON_PATCH: Final = "application/json-patch+json"


class ConflictError(Exception):
    """The object changed since it was read (HTTP 409 on a resourceVersion precondition)."""


class NotFoundError(Exception):
    """The object does not exist (HTTP 404)."""


def load_api_client(kubeconfig: str | None) -> client.ApiClient:
    """A client from a kubeconfig file, or from the pod's service account when None."""
    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)
    configuration = client.Configuration()
    config.load_incluster_config(client_configuration=configuration)
    return client.ApiClient(configuration)


def _translate(error: ApiException) -> Exception:
    if error.status == 409:
        return ConflictError(str(error.reason))
    if error.status == 404:
        return NotFoundError(str(error.reason))
    translated: Exception = error
    return translated


def _failure(status: int, reason: str | None, payload: bytes) -> Exception:
    """The exception for an answer outside 2xx: ours for 409 and 404, else ApiException."""
    text = payload.decode("utf-8", "replace")
    message = reason or ""
    try:
        document = json.loads(payload)
    except ValueError:
        pass
    else:
        if isinstance(document, dict):
            message = str(document.get("reason") or message)
            detail = document.get("message")
            if detail:
                message = f"{message}: {detail}" if message else str(detail)
    return _translate(ApiException(status=status, reason=message, body=text))


def _custom_path(plural: str, namespace: str | None, name: str | None = None) -> str:
    path = f"/apis/{GROUP}/{VERSION}"
    if namespace is not None:
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{plural}"
    if name is not None:
        path += f"/{quote(name, safe='')}"
    return path


def _lease_path(namespace: str, name: str | None = None) -> str:
    path = f"/apis/coordination.k8s.io/v1/namespaces/{quote(namespace, safe='')}/leases"
    return path if name is None else f"{path}/{quote(name, safe='')}"


def _ssl_context(configuration: client.Configuration) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file or None)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif configuration.assert_hostname is False:
        context.check_hostname = False
    return context


class Hub:
    """Typed, awaitable access to suanli's objects and Events on the hub.

    ``api`` supplies the connection settings and credentials (and stays available to Kopf's
    login); the requests themselves go through aiohttp sessions made on first use, on the
    running event loop. VoucherQuota requests have a session of their own: a ledger commit
    holds up every admission request waiting on it, so it must never queue for a connection
    behind a burst of job status writes.
    """

    def __init__(self, api: client.ApiClient, *, connections: int = CONNECTIONS) -> None:
        self.api = api
        self._configuration: client.Configuration = api.configuration
        self._host = str(self._configuration.host).rstrip("/")
        self._connections = connections
        self._sessions: dict[bool, aiohttp.ClientSession] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: set[asyncio.Task[None]] = set()
        self._event_slots: asyncio.Semaphore | None = None

    # --- transport ----------------------------------------------------------------------------

    def _session_here(self, ledger: bool = False) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(ledger)
        if session is None or session.closed or self._loop is not loop:
            if self._loop is not loop:
                self._sessions.clear()  # those belong to a loop that is gone
                self._event_slots = asyncio.Semaphore(EVENTS_CONCURRENT)
                self._loop = loop
            connector = aiohttp.TCPConnector(
                limit=LEDGER_CONNECTIONS if ledger else self._connections,
                ssl=_ssl_context(self._configuration),
            )
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=TIMEOUT,
                headers={"User-Agent": COMPONENT, "Accept": "application/json"},
            )
            self._sessions[ledger] = session
        return session

    def _auth_headers(self) -> dict[str, str]:
        # Calls the client's refresh hook (in-cluster tokens are rotated on disk).
        token = self._configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
        return {"Authorization": token} if token else {}

    async def _request(
        self,
        method: str,
        path: str,
        resource: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """One request; the JSON object answered, or ConflictError, NotFoundError, ApiException
        (other statuses), aiohttp.ClientError or TimeoutError (no answer)."""
        session = self._session_here(ledger=resource.startswith(VOUCHERQUOTAS))
        headers = self._auth_headers()
        data: bytes | None = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        metrics.HUB_REQUESTS.labels(method, resource).inc()
        server_name = self._configuration.tls_server_name or None
        async with session.request(
            method,
            self._host + path,
            data=data,
            headers=headers,
            proxy=self._configuration.proxy or None,
            server_hostname=server_name,
        ) as response:
            payload = await response.read()
            if not 200 <= response.status < 300:
                raise _failure(response.status, response.reason, payload)
        document = json.loads(payload) if payload else {}
        if not isinstance(document, dict):
            raise ValueError(f"{method} {path}: the answer is not a JSON object")
        return document

    async def close(self) -> None:
        """Let pending Events finish (briefly), then close the session."""
        if self._events:
            await asyncio.wait(list(self._events), timeout=2)
        for task in list(self._events):
            task.cancel()
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            if not session.closed:
                await session.close()

    # --- objects ------------------------------------------------------------------------------

    async def get(self, plural: str, namespace: str | None, name: str) -> dict[str, Any]:
        return await self._request("GET", _custom_path(plural, namespace, name), plural)

    async def list_pages(
        self, plural: str, namespace: str | None = None, *, limit: int
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every object, ``limit`` at a time (the API server's chunked list), so that a kind
        with very many objects is never held in memory, nor sent, all at once."""
        token = ""
        while True:
            path = f"{_custom_path(plural, namespace)}?limit={limit}"
            if token:
                path += f"&continue={quote(token, safe='')}"
            result = await self._request("GET", path, plural)
            yield result.get("items") or []
            token = str((result.get("metadata") or {}).get("continue") or "")
            if not token:
                return

    async def list(
        self, plural: str, namespace: str | None = None, *, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        path = _custom_path(plural, namespace)
        if label_selector:
            path += f"?labelSelector={quote(label_selector, safe='')}"
        result = await self._request("GET", path, plural)
        items: list[dict[str, Any]] = result.get("items") or []
        return items

    async def delete(
        self, plural: str, namespace: str | None, name: str, *, uid: str | None = None
    ) -> None:
        """Delete the object; with ``uid``, only if it is still the one with that uid (not one
        made again under its name since it was read).

        Raises:
            NotFoundError: it is gone already.
            ConflictError: the object of that name is another one (the uid differs).
        """
        path = _custom_path(plural, namespace, name)
        if uid is None:
            await self._request("DELETE", path, plural)
            return
        options = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
        await self._request("DELETE", path, plural, body=options)

    async def create(self, plural: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create the object, or return the one of that name that exists (AlreadyExists).

        For objects whose name is derived from what they record, so that creating one again
        after a crash or a lost answer finds the first instead of failing or duplicating it.
        """
        metadata = body["metadata"]
        namespace = metadata.get("namespace")
        try:
            return await self._request("POST", _custom_path(plural, namespace), plural, body=body)
        except ConflictError:
            return await self.get(plural, namespace, metadata["name"])

    async def merge_patch(
        self, plural: str, namespace: str | None, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A JSON merge patch of the object (its spec or metadata)."""
        path = _custom_path(plural, namespace, name)
        return await self._request("PATCH", path, plural, body=patch, content_type=MERGE_PATCH)

    async def replace_status(self, plural: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Write the status subresource; ``body.metadata.resourceVersion`` is a precondition.

        Raises:
            ConflictError: someone else wrote the object since ``body`` was read.
        """
        metadata = body["metadata"]
        path = _custom_path(plural, metadata["namespace"], metadata["name"]) + "/status"
        return await self._request("PUT", path, f"{plural}/status", body=body)

    async def patch_status(
        self, plural: str, namespace: str | None, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A JSON merge patch of the status (no precondition: for fields we alone write)."""
        path = _custom_path(plural, namespace, name) + "/status"
        return await self._request(
            "PATCH", path, f"{plural}/status", body=patch, content_type=MERGE_PATCH
        )

    async def json_patch(
        self, plural: str, namespace: str | None, name: str, operations: Any
    ) -> dict[str, Any]:
        """A JSON patch (RFC 6902) of the object; its "test" operations make it conditional."""
        path = _custom_path(plural, namespace, name)
        return await self._request("PATCH", path, plural, body=operations, content_type=JSON_PATCH)

    async def core_get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        """A core/v1 object as stored (a tenant's Secret or ConfigMap, to copy it)."""
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/{plural}/{quote(name, safe='')}"
        return await self._request("GET", path, plural)

    async def secret(self, namespace: str, name: str) -> dict[str, str]:
        """A Secret's data, decoded to text."""
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/secrets/{quote(name, safe='')}"
        secret = await self._request("GET", path, "secrets")
        data: dict[str, str] = secret.get("data") or {}
        return {key: base64.b64decode(value).decode() for key, value in data.items()}

    # --- leadership ---------------------------------------------------------------------------

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any]:
        """A coordination.k8s.io Lease."""
        return await self._request("GET", _lease_path(namespace, name), "leases")

    async def create_lease(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a Lease; ConflictError when one of that name exists."""
        namespace = body["metadata"]["namespace"]
        return await self._request("POST", _lease_path(namespace), "leases", body=body)

    async def replace_lease(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Replace a Lease; ``body.metadata.resourceVersion`` is a precondition (ConflictError)."""
        metadata = body["metadata"]
        path = _lease_path(metadata["namespace"], metadata["name"])
        return await self._request("PUT", path, "leases", body=body)

    async def mark_pod(
        self,
        namespace: str,
        name: str,
        labels: Mapping[str, str | None],
        annotations: Mapping[str, str | None],
    ) -> None:
        """Set (or, with None, remove) labels and annotations of a pod: a JSON merge patch."""
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(name, safe='')}"
        patch = {"metadata": {"labels": dict(labels), "annotations": dict(annotations)}}
        await self._request("PATCH", path, "pods", body=patch, content_type=MERGE_PATCH)

    # --- events -------------------------------------------------------------------------------

    async def event(
        self,
        regarding: Mapping[str, Any],
        *,
        reason: str,
        message: str,
        warning: bool = False,
    ) -> None:
        """Record an Event on ``regarding`` for ``kubectl describe``, in the background.

        Returns at once. An Event is a courtesy to the reader: losing one must never fail, nor
        delay, the operation that caused it; failures are logged, and when
        ``EVENTS_PENDING_MAX`` are still waiting the new one is dropped.
        """
        self._session_here()  # the semaphore belongs to the running loop
        if len(self._events) >= EVENTS_PENDING_MAX:
            metrics.EVENTS_DROPPED.inc()
            logger.debug("dropped event %s: %d pending", reason, len(self._events))
            return
        body = _event_body(regarding, reason=reason, message=message, warning=warning)
        task = asyncio.get_running_loop().create_task(self._post_event(body))
        self._events.add(task)
        task.add_done_callback(self._events.discard)

    async def _post_event(self, body: dict[str, Any]) -> None:
        namespace = body["metadata"]["namespace"]
        slots = self._event_slots
        assert slots is not None
        try:
            async with slots:
                path = f"/api/v1/namespaces/{quote(namespace, safe='')}/events"
                await self._request("POST", path, "events", body=body)
        except Exception as error:
            logger.warning(
                "could not record event %s on %s: %s",
                body["reason"],
                body["involvedObject"]["name"],
                error,
            )


def _event_body(
    regarding: Mapping[str, Any], *, reason: str, message: str, warning: bool
) -> dict[str, Any]:
    metadata = regarding["metadata"]
    namespace = metadata.get("namespace") or "default"
    now = datetime.datetime.now(datetime.UTC).isoformat()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{metadata['name']}.{uuid.uuid4().hex[:12]}",
            "namespace": namespace,
        },
        "involvedObject": {
            "apiVersion": regarding.get("apiVersion"),
            "kind": regarding.get("kind"),
            "name": metadata["name"],
            "namespace": metadata.get("namespace"),
            "uid": metadata.get("uid"),
        },
        "reason": reason,
        "message": message[:1024],
        "type": "Warning" if warning else "Normal",
        "source": {"component": COMPONENT},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "reportingComponent": COMPONENT,
    }
