"""The operator's connection to one member cluster: watches, a liveness probe, telemetry, and
the few remote operations dispatch needs.

What runs while a link is started
    - Three watcher threads (:class:`~suanli.members.watch.ResourceWatcher`): Nodes, Pods of
      all namespaces, and the batch Jobs suanli created (label
      ``app.kubernetes.io/managed-by=suanli``). Each lists, then watches from the list's
      resourceVersion; a watch the server ends is resumed, a 410 Gone relists, any failure
      relists after a bounded backoff. Every (re)list is reported whole (``on_*_synced``), so
      the consumer can replace what it knew; changes in between come one by one.
    - A probe task: ``GET /readyz`` every ``probe_interval`` seconds. A failed probe is
      confirmed by a second one about a second later before the member is declared
      unreachable, so one lost packet does not flap the condition. On that change the
      watches are cut (a frozen API server would otherwise hold them until their read
      timeout) and they relist with backoff; when the member answers again they are woken
      and relist at once.
    - A telemetry task, when exporter URLs are given: each one is read every
      ``telemetry_interval`` seconds with :class:`~suanli.telemetry.scrape.TelemetryEndpoint`
      and every new snapshot goes to ``on_telemetry`` as is: a
      :class:`~suanli.telemetry.parse.TelemetrySnapshot` is exactly what
      ``CapacityIndex.update_telemetry`` takes; it judges freshness from the snapshot's own
      timestamps. A failing endpoint sends nothing (its nodes' data ages out in the index);
      :attr:`MemberLink.telemetry_statuses` says why, for the TelemetryFresh condition.

Threads and the event loop
    Every callback of :class:`LinkEvents` runs on the event loop's thread (the watchers hand
    theirs over with ``call_soon_threadsafe``, in order), so they may touch the capacity index
    directly. None is called once :meth:`MemberLink.stop` has begun. A callback that raises is
    logged and does not disturb the link.

    Blocking requests (probes, remote operations) run on a small thread pool of the link's own,
    so a member that hangs ties up its own threads, not the loop's default executor that
    other members and kopf share.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import quote

import aiohttp
from kubernetes.client.exceptions import ApiException
from urllib3 import exceptions as urllib3_errors

from suanli import metrics
from suanli.members.kubeapi import (
    ApiError,
    KubeSource,
    describe_error,
    error_status,
    load_client,
    request,
    request_json,
)
from suanli.members.watch import ResourceGoneError, ResourceWatcher
from suanli.members.workload import MANAGED_BY, MANAGED_BY_LABEL, needs_relabel
from suanli.telemetry.parse import TelemetrySnapshot
from suanli.telemetry.scrape import EndpointStatus, TelemetryEndpoint

log = logging.getLogger(__name__)

T = TypeVar("T")
Obj = dict[str, Any]

MANAGED_JOBS_SELECTOR: Final = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
STOP_JOIN_SECONDS: Final = 2.0
"""How long stop() waits for the watcher threads (they are daemons either way)."""
PROBE_CONFIRM_SECONDS: Final = 1.0
PROBE_TIMEOUT_MAX: Final = 3.0
WORKERS: Final = 4
CREDENTIALS_REFUSED_STATUSES: Final = frozenset({401, 403})
"""Answers that mean the member refuses this kubeconfig's credentials (expired, revoked, or
short of a permission), not that it is down."""
NODES, PODS, JOBS = "nodes", "pods", "jobs"

_REQUEST_ERRORS: Final = (ApiError, ApiException, urllib3_errors.HTTPError, OSError, ValueError)


class MemberLinkError(Exception):
    """A remote operation failed. ``status`` is the HTTP status the member answered with, or
    None when no answer came (unreachable, timed out): then retrying later may help."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def unanswered(self) -> bool:
        return self.status is None


def _ignore(*_: object) -> None:
    return None


@dataclass(frozen=True)
class LinkEvents:
    """What a link reports; every callback runs on the event loop's thread."""

    on_nodes_synced: Callable[[str, list[Obj]], None] = _ignore
    """(cluster, every Node) after each (re)list."""
    on_node: Callable[[str, str, Obj], None] = _ignore
    """(cluster, ADDED/MODIFIED/DELETED, Node)."""
    on_pods_synced: Callable[[str, list[Obj]], None] = _ignore
    on_pod: Callable[[str, str, Obj], None] = _ignore
    on_jobs_synced: Callable[[str, list[Obj]], None] = _ignore
    """(cluster, every batch Job labelled managed-by suanli) after each (re)list."""
    on_job: Callable[[str, str, Obj], None] = _ignore
    on_reachability: Callable[[str, bool, str], None] = _ignore
    """(cluster, reachable, message): once after start, then on every change."""
    on_telemetry: Callable[[str, TelemetrySnapshot], None] = _ignore
    """(cluster, snapshot) for every new read of one of its exporters."""


def readiness_failure(body: str) -> str:
    """What a failing ``/readyz`` says is wrong: its ``[-]`` lines, else its first line."""
    failed = [line[3:].strip() for line in body.splitlines() if line.startswith("[-]")]
    if failed:
        return "; ".join(failed)
    lines = body.strip().splitlines()
    return lines[0][:200] if lines else "no reason given"


class MemberLink:
    """The connection to one member cluster (see the module notes).

    Args:
        name: The member's name (the MemberCluster's), passed to every callback.
        kubeconfig: The member's kubeconfig, as YAML text.
        events: Where changes go.
        telemetry_endpoints: URLs of the member's GPU exporters.
        telemetry_interval: Seconds between reads of each exporter.
        probe_interval: Seconds between liveness probes.
        loop: The event loop callbacks run on (default: the one running ``start``).
    """

    def __init__(
        self,
        name: str,
        kubeconfig: str,
        events: LinkEvents,
        *,
        telemetry_endpoints: Sequence[str] = (),
        telemetry_interval: float = 10.0,
        probe_interval: float = 5.0,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.name = name
        self._kubeconfig = kubeconfig
        self._events = events
        self._endpoints = [TelemetryEndpoint(url) for url in telemetry_endpoints]
        self._telemetry_interval = telemetry_interval
        self._probe_interval = probe_interval
        self._loop = loop
        self._api: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._watchers: dict[str, ResourceWatcher] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._started = False
        self._closed = False
        self._stop_task: asyncio.Task[None] | None = None
        self._reachable = False
        self._reported: bool | None = None
        self._message = "not probed yet"
        self._probe_refused: str | None = None
        self._sent: dict[str, TelemetrySnapshot] = {}
        # Namespaces known to exist on the member (written by worker threads: set ops are atomic).
        self._namespaces: dict[str, dict[str, str]] = {}
        """Namespaces this link made or checked, with the labels they were ensured to carry."""

    # --- state ----------------------------------------------------------------------------------

    @property
    def reachable(self) -> bool:
        """Whether the member's API server answered the last probe (confirmed)."""
        return self._reachable

    @property
    def reachability_message(self) -> str:
        return self._message

    @property
    def synced(self) -> bool:
        """Every watch has delivered a list and is running."""
        return bool(self._watchers) and all(w.synced for w in self._watchers.values())

    @property
    def watch_errors(self) -> dict[str, str | None]:
        """The last failure of each watch (nodes, pods, jobs), None once it recovered."""
        return {kind: watcher.last_error for kind, watcher in self._watchers.items()}

    @property
    def credentials_refused(self) -> str | None:
        """Why the member refuses this link's credentials (HTTP 401 or 403 to the probe or to
        a watch), or None while it accepts them. Refused credentials need the member's admin
        (a new token, a missing permission); an outage needs patience."""
        if self._probe_refused is not None:
            return f"probe GET /readyz: {self._probe_refused}"
        for watcher in self._watchers.values():
            if watcher.last_error_status in CREDENTIALS_REFUSED_STATUSES:
                return watcher.last_error
        return None

    @property
    def telemetry_statuses(self) -> list[EndpointStatus]:
        return [endpoint.status() for endpoint in self._endpoints]

    # --- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and start the watches, the probe and telemetry; returns without waiting
        for anything to sync.

        Raises:
            MemberLinkError: the kubeconfig cannot be used (nothing is left running).
        """
        if self._closed:
            raise MemberLinkError(f"{self.name}: the link was stopped; make a new one")
        if self._started:
            return
        loop = asyncio.get_running_loop()
        self._loop = self._loop or loop
        self._started = True
        self._executor = ThreadPoolExecutor(WORKERS, thread_name_prefix=f"suanli-{self.name}")
        try:
            self._api = await loop.run_in_executor(self._executor, load_client, self._kubeconfig)
        except ValueError as error:
            self._executor.shutdown(wait=False)
            self._closed = True
            raise MemberLinkError(f"{self.name}: {error}") from None
        if self._closed:  # stop() came while the client was being made
            self._api.close()
            return
        self._watchers = {
            NODES: self._watcher(
                KubeSource(self._api, kind="Node", api_version="v1", path="/api/v1/nodes"),
                self._events.on_nodes_synced,
                self._events.on_node,
            ),
            PODS: self._watcher(
                KubeSource(self._api, kind="Pod", api_version="v1", path="/api/v1/pods"),
                self._events.on_pods_synced,
                self._events.on_pod,
            ),
            JOBS: self._watcher(
                KubeSource(
                    self._api,
                    kind="Job",
                    api_version="batch/v1",
                    path="/apis/batch/v1/jobs",
                    label_selector=MANAGED_JOBS_SELECTOR,
                ),
                self._events.on_jobs_synced,
                self._events.on_job,
            ),
        }
        for watcher in self._watchers.values():
            watcher.start()
        self._tasks.append(loop.create_task(self._probe_loop(), name=f"{self.name}-probe"))
        if self._endpoints:
            self._session = aiohttp.ClientSession()
            self._tasks.append(
                loop.create_task(self._telemetry_loop(), name=f"{self.name}-telemetry")
            )

    async def stop(self) -> None:
        """Stop everything; returns within about two seconds. Safe to call again."""
        if self._stop_task is None:
            self._stop_task = asyncio.ensure_future(self._shutdown())
        await asyncio.shield(self._stop_task)

    async def _shutdown(self) -> None:
        self._closed = True
        for watcher in self._watchers.values():
            watcher.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_JOIN_SECONDS
        while any(w.alive for w in self._watchers.values()) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        stuck = [kind for kind, w in self._watchers.items() if w.alive]
        if stuck:
            log.warning("%s: watch threads %s did not end in time (daemons)", self.name, stuck)
        if self._executor is not None:
            # Requests in flight end by their own timeouts; nothing waits for them.
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._api is not None:
            self._api.close()

    def _watcher(
        self,
        source: KubeSource,
        synced: Callable[[str, list[Obj]], None],
        event: Callable[[str, str, Obj], None],
    ) -> ResourceWatcher:
        return ResourceWatcher(
            source,
            on_synced=lambda items: self._post(synced, self.name, items),
            on_event=lambda kind, obj: self._post(event, self.name, kind, obj),
            describe=describe_error,
            status_of=error_status,
            name=f"suanli-{self.name}-{source.kind.lower()}s",
        )

    # --- callbacks ------------------------------------------------------------------------------

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        """From a watcher thread: run ``callback`` on the loop, after what was posted before."""
        loop = self._loop
        if loop is None or self._closed:
            return
        try:
            loop.call_soon_threadsafe(self._deliver, callback, args)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return

    def _deliver(self, callback: Callable[..., None], args: tuple[Any, ...]) -> None:
        if self._closed:
            return
        try:
            callback(*args)
        except Exception:
            log.exception("%s: a link callback failed", self.name)

    # --- reachability ---------------------------------------------------------------------------

    async def _probe_loop(self) -> None:
        while True:
            ok, message = await self._probe()
            if not ok and self._reachable:
                await asyncio.sleep(min(PROBE_CONFIRM_SECONDS, self._probe_interval))
                ok, message = await self._probe()
            self._set_reachable(ok, message)
            await asyncio.sleep(self._probe_interval)

    async def _probe(self) -> tuple[bool, str]:
        timeout = max(0.5, min(self._probe_interval, PROBE_TIMEOUT_MAX))
        refused: str | None = None
        try:
            await self._run_blocking(self._readyz, timeout)
        except ApiError as error:
            if error.status in CREDENTIALS_REFUSED_STATUSES:
                refused = str(error)
            if error.status == 500:
                result = (False, f"API server not ready: {readiness_failure(error.message)}")
            else:
                result = (False, f"probe GET /readyz: {error}")
        except _REQUEST_ERRORS as error:
            result = (False, describe_error(error))
        else:
            result = (True, "API server ready")
        self._probe_refused = refused
        return result

    def _readyz(self, timeout: float) -> None:
        try:
            response = request(
                self._api, "GET", "/readyz", timeout=(timeout, timeout), accept="text/plain, */*"
            )
        except ApiError as error:
            if error.status not in (403, 404):
                raise
            # Health endpoints hidden from this credential (hardened RBAC): the server
            # answers, so its version endpoint decides.
            response = request(self._api, "GET", "/version", timeout=(timeout, timeout))
        try:
            response.read()  # to the end, so the connection can be reused
        finally:
            response.release_conn()

    def _set_reachable(self, ok: bool, message: str) -> None:
        was = self._reachable
        self._reachable, self._message = ok, message
        if self._reported is not None and ok == was:
            return
        if self._reported is not None:
            log.info("%s: %s (%s)", self.name, "reachable" if ok else "unreachable", message)
        self._reported = ok
        for watcher in self._watchers.values():
            if ok:
                watcher.wake()
            elif was:
                watcher.interrupt()
        self._deliver(self._events.on_reachability, (self.name, ok, message))

    # --- telemetry ------------------------------------------------------------------------------

    async def _telemetry_loop(self) -> None:
        session = self._session
        assert session is not None
        while True:
            try:
                statuses = await asyncio.gather(*(e.refresh(session) for e in self._endpoints))
            except Exception:
                log.exception("%s: reading telemetry failed", self.name)
                statuses = []
            for status in statuses:
                if status.age_seconds is not None:
                    metrics.MEMBER_TELEMETRY_AGE.labels(self.name, status.url).set(
                        status.age_seconds
                    )
                snapshot = status.snapshot
                if not status.answering or snapshot is None:
                    continue
                if self._sent.get(status.url) is snapshot:
                    continue
                self._sent[status.url] = snapshot
                self._deliver(self._events.on_telemetry, (self.name, snapshot))
            await asyncio.sleep(self._telemetry_interval)

    # --- remote operations ----------------------------------------------------------------------

    async def _run_blocking(self, function: Callable[..., T], *args: Any) -> T:
        if self._api is None or self._executor is None or self._closed:
            state = "stopped" if self._closed else "not started"
            raise MemberLinkError(f"{self.name}: the link is {state}")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(function, *args))

    async def _remote(self, what: str, function: Callable[..., T], *args: Any) -> T:
        try:
            return await self._run_blocking(function, *args)
        except _REQUEST_ERRORS as error:
            raise MemberLinkError(
                f"{self.name}: {what}: {describe_error(error)}", error_status(error)
            ) from error

    async def ensure_namespace(self, body: Obj) -> None:
        """Create the Namespace ``body``, or bring an existing one up to ``body``'s labels.

        Every job of a tenant goes to the same namespace, so one this link has made (or checked)
        is remembered and not asked for again while the wanted labels stay the same; if it is
        deleted behind our back, the next Job create fails with NotFound, which forgets it (see
        _create_job). An existing namespace must enforce at least the Pod Security level that
        ``body`` asks for: one that enforces less is relabelled, and if that is not allowed the
        job is not created there.
        """
        name = _metadata(body, namespaced=False)[1]
        labels: dict[str, str] = dict(body["metadata"].get("labels") or {})
        if self._namespaces.get(name) == labels:
            return
        await self._remote(f"ensure Namespace {name}", self._ensure_namespace, name, body)
        self._namespaces[name] = labels

    def _ensure_namespace(self, name: str, body: Obj) -> None:
        try:
            request_json(self._api, "POST", "/api/v1/namespaces", body=body)
            return
        except ApiError as error:
            if error.status not in (403, 409):
                raise
            refused = error
        # It exists, or this credential may not create namespaces, which is fine where the
        # member's admin made this one beforehand (authorization is checked before existence).
        path = f"/api/v1/namespaces/{quote(name, safe='')}"
        try:
            existing = request_json(self._api, "GET", path)
        except ApiError:
            raise refused from None
        wanted: dict[str, str] = body["metadata"].get("labels") or {}
        have: dict[str, str] = (existing.get("metadata") or {}).get("labels") or {}
        if not needs_relabel(have, wanted):
            return
        # A merge patch of the labels alone: the rest of the namespace is the admin's.
        request_json(
            self._api,
            "PATCH",
            path,
            body={"metadata": {"labels": wanted}},
            content_type="application/merge-patch+json",
        )

    async def create_job(self, body: Obj) -> Obj:
        """Create the batch/v1 Job ``body``; if one of its name exists, return that one."""
        namespace, name = _metadata(body, namespaced=True)
        return await self._remote(
            f"create Job {namespace}/{name}", self._create_job, namespace, name, body
        )

    def _create_job(self, namespace: str, name: str, body: Obj) -> Obj:
        path = f"/apis/batch/v1/namespaces/{quote(namespace, safe='')}/jobs"
        for _ in range(3):
            try:
                return request_json(self._api, "POST", path, body=body)
            except ApiError as error:
                if error.status == 404:
                    self._namespaces.pop(namespace, None)  # made again on the next attempt
                if error.status != 409:
                    raise
            existing = self._read_job(namespace, name)
            if existing is not None:
                return existing
            # Deleted between the two calls: create again.
        raise ApiError(409, "Conflict", "the Job keeps appearing and disappearing")

    async def get_job(self, namespace: str, name: str) -> Obj | None:
        """The Job, or None if there is none."""
        return await self._remote(f"get Job {namespace}/{name}", self._read_job, namespace, name)

    def _read_job(self, namespace: str, name: str) -> Obj | None:
        try:
            return request_json(self._api, "GET", _job_path(namespace, name))
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def delete_job(self, namespace: str, name: str) -> bool:
        """Delete the Job and, in the background, its pods; False if it was not there."""
        return await self._remote(
            f"delete Job {namespace}/{name}", self._delete_job, namespace, name
        )

    def _delete_job(self, namespace: str, name: str) -> bool:
        options = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        try:
            request_json(self._api, "DELETE", _job_path(namespace, name), body=options)
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    async def set_job_ttl(self, namespace: str, name: str, seconds: int) -> bool:
        """Let the member's TTL controller delete the (finished) Job ``seconds`` after it ended,
        with its pods and what it owns; False if the Job is gone already."""
        return await self._remote(
            f"set the TTL of Job {namespace}/{name}", self._set_job_ttl, namespace, name, seconds
        )

    def _set_job_ttl(self, namespace: str, name: str, seconds: int) -> bool:
        try:
            request_json(
                self._api,
                "PATCH",
                _job_path(namespace, name),
                body={"spec": {"ttlSecondsAfterFinished": seconds}},
                content_type="application/merge-patch+json",
            )
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    async def create_service(self, body: Obj) -> None:
        """Create the Service ``body``; one of its name existing already is success."""
        namespace, name = _metadata(body, namespaced=True)
        await self._remote(
            f"create Service {namespace}/{name}", self._create_or_keep, "services", body
        )

    def _create_or_keep(self, plural: str, body: Obj) -> None:
        namespace = quote(body["metadata"]["namespace"], safe="")
        try:
            request_json(self._api, "POST", f"/api/v1/namespaces/{namespace}/{plural}", body=body)
        except ApiError as error:
            if error.status != 409:
                raise

    async def apply_copy(self, body: Obj) -> None:
        """Create the Secret or ConfigMap ``body``, or replace the one of its name (the
        original changed). The copy is written whole and never read back."""
        namespace, name = _metadata(body, namespaced=True)
        kind = str(body.get("kind"))
        await self._remote(f"copy {kind} {namespace}/{name}", self._apply_copy, body)

    def _apply_copy(self, body: Obj) -> None:
        plural = f"{str(body['kind']).lower()}s"
        namespace, name = _metadata(body, namespaced=True)
        base = f"/api/v1/namespaces/{quote(namespace, safe='')}/{plural}"
        try:
            request_json(self._api, "POST", base, body=body)
            return
        except ApiError as error:
            if error.status == 404:
                self._namespaces.pop(namespace, None)
            if error.status != 409:
                raise
        # An update without a resourceVersion replaces whatever is there: the copy is ours.
        request_json(self._api, "PUT", f"{base}/{quote(name, safe='')}", body=body)

    async def delete_copies(self, namespace: str, selector: str) -> int:
        """Delete the Secrets and ConfigMaps of ``namespace`` that match label ``selector``;
        how many there were."""
        return await self._remote(
            f"delete copies in {namespace}", self._delete_copies, namespace, selector
        )

    def _delete_copies(self, namespace: str, selector: str) -> int:
        deleted = 0
        for plural in ("secrets", "configmaps"):
            path = f"/api/v1/namespaces/{quote(namespace, safe='')}/{plural}"
            try:
                answer = request_json(
                    self._api, "DELETE", path, query=(("labelSelector", selector),)
                )
            except ApiError as error:
                if error.status != 404:
                    raise
                continue
            deleted += len((answer or {}).get("items") or [])
        return deleted

    async def delete_pods(self, namespace: str, selector: str, grace_seconds: int) -> None:
        """Delete the Pods of ``namespace`` that match ``selector``, each given at most
        ``grace_seconds`` to stop, whatever its own spec asks."""
        await self._remote(
            f"delete Pods in {namespace}",
            self._delete_pods,
            namespace,
            selector,
            grace_seconds,
        )

    def _delete_pods(self, namespace: str, selector: str, grace_seconds: int) -> None:
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/pods"
        options = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": grace_seconds}
        try:
            request_json(
                self._api, "DELETE", path, body=options, query=(("labelSelector", selector),)
            )
        except ApiError as error:
            if error.status != 404:
                raise

    async def list_services(self, selector: str) -> list[Obj]:
        """The Services of every namespace that match label ``selector``."""
        return await self._remote("list Services", self._list_all, "/api/v1/services", selector)

    async def list_namespaces(self, selector: str) -> list[Obj]:
        """The Namespaces that match label ``selector``."""
        return await self._remote("list Namespaces", self._list_all, "/api/v1/namespaces", selector)

    def _list_all(self, path: str, selector: str) -> list[Obj]:
        answer = request_json(self._api, "GET", path, query=(("labelSelector", selector),))
        items: list[Obj] = answer.get("items") or []
        return items

    async def delete_service(self, namespace: str, name: str) -> None:
        """Delete the Service; one already gone is success."""
        await self._remote(
            f"delete Service {namespace}/{name}", self._delete_service, namespace, name
        )

    def _delete_service(self, namespace: str, name: str) -> None:
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/services/{quote(name, safe='')}"
        try:
            request_json(self._api, "DELETE", path)
        except ApiError as error:
            if error.status != 404:
                raise

    async def list_pods(self, namespace: str, selector: str) -> list[Obj]:
        """The Pods of ``namespace`` that match label ``selector`` (one page: a job's pods)."""
        return await self._remote(f"list Pods in {namespace}", self._list_pods, namespace, selector)

    def _list_pods(self, namespace: str, selector: str) -> list[Obj]:
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/pods"
        answer = request_json(self._api, "GET", path, query=(("labelSelector", selector),))
        items: list[Obj] = answer.get("items") or []
        return items

    async def list_jobs(self) -> list[Obj]:
        """Every Job suanli created in the member (label managed-by=suanli), all namespaces."""
        return await self._remote("list Jobs", self._list_jobs)

    def _list_jobs(self) -> list[Obj]:
        source = KubeSource(
            self._api,
            kind="Job",
            api_version="batch/v1",
            path="/apis/batch/v1/jobs",
            label_selector=MANAGED_JOBS_SELECTOR,
        )
        for _ in range(3):
            items: list[Obj] = []
            token: str | None = None
            try:
                while True:
                    page = source.list_page(token)
                    for item in page.get("items") or ():
                        item.setdefault("kind", "Job")
                        item.setdefault("apiVersion", "batch/v1")
                        items.append(item)
                    token = (page.get("metadata") or {}).get("continue") or None
                    if token is None:
                        return items
            except ResourceGoneError:  # the continuation expired: start over
                continue
        raise ApiError(410, "Expired", "the list kept expiring while it was paged")


def _metadata(body: Obj, *, namespaced: bool) -> tuple[str, str]:
    metadata = body.get("metadata") if isinstance(body, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    namespace = metadata.get("namespace") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not name:
        raise ValueError("the object has no metadata.name")
    if namespaced and (not isinstance(namespace, str) or not namespace):
        raise ValueError(f"{name}: the object has no metadata.namespace")
    return (namespace or "", name)


def _job_path(namespace: str, name: str) -> str:
    return f"/apis/batch/v1/namespaces/{quote(namespace, safe='')}/jobs/{quote(name, safe='')}"
