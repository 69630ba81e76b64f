"""The narrow interfaces the controller's parts are handed, instead of the whole Runtime.

Each is a Protocol, so the operator's real objects (the hub client, MemberLink) satisfy them
as they are, and unit tests pass small fakes: a hub that keeps status writes in a list and
fails on demand, a member link that keeps Jobs in a dict.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from datetime import datetime
from typing import Any, Protocol

from suanli.api.membercluster import MemberCluster
from suanli.dispatch.models import JobRequest
from suanli.members.link import LinkEvents
from suanli.members.workload import ModelPin

Obj = dict[str, Any]

Clock = Callable[[], datetime]
"""The time now, zone-aware (UTC)."""
Sleep = Callable[[float], Awaitable[None]]
"""Wait so many seconds (``asyncio.sleep``; a test passes one that only yields)."""
Spawn = Callable[[Coroutine[Any, Any, Any]], None]
"""Run a coroutine in the background, keeping it referenced and logging its failure."""


class StatusPatcher(Protocol):
    """Writes an object's status subresource with a JSON merge patch (the hub client)."""

    async def patch_status(
        self, plural: str, namespace: str | None, name: str, patch: Mapping[str, Any]
    ) -> Any: ...


class EventRecorder(Protocol):
    """Records an Event for ``kubectl describe`` (the hub client; returns at once)."""

    async def event(
        self, regarding: Mapping[str, Any], *, reason: str, message: str, warning: bool = False
    ) -> None: ...


class SecretReader(Protocol):
    """Reads a Secret's data as text (the hub client)."""

    async def secret(self, namespace: str, name: str) -> dict[str, str]: ...


class TenantDataReader(Protocol):
    """Reads a tenant's Secret or ConfigMap as stored (the hub client); NotFoundError if none."""

    async def core_get(self, plural: str, namespace: str, name: str) -> dict[str, Any]: ...


class Link(Protocol):
    """What the controller asks of a member's connection (:class:`~suanli.members.link.
    MemberLink`): its life cycle, its state, and the few remote operations on Jobs."""

    @property
    def synced(self) -> bool: ...

    @property
    def credentials_refused(self) -> str | None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def ensure_namespace(self, body: Obj) -> None: ...

    async def create_job(self, body: Obj) -> Obj: ...

    async def get_job(self, namespace: str, name: str) -> Obj | None: ...

    async def delete_job(self, namespace: str, name: str) -> bool: ...

    async def delete_pods(self, namespace: str, selector: str, grace_seconds: int) -> None: ...

    async def list_jobs(self) -> list[Obj]: ...

    async def list_services(self, selector: str) -> list[Obj]: ...

    async def delete_service(self, namespace: str, name: str) -> None: ...

    async def list_namespaces(self, selector: str) -> list[Obj]: ...

    async def set_job_ttl(self, namespace: str, name: str, seconds: int) -> bool: ...

    async def create_service(self, body: Obj) -> None: ...

    async def apply_copy(self, body: Obj) -> None: ...

    async def delete_copies(self, namespace: str, selector: str) -> int: ...

    async def list_pods(self, namespace: str, selector: str) -> list[Obj]: ...


LinkFactory = Callable[[str, str, LinkEvents, tuple[str, ...]], Link]
"""Makes a member's link: (member name, kubeconfig text, callbacks, telemetry endpoints)."""


class Members(Protocol):
    """What placement, workload sync and follow-up read of the fleet."""

    def member(self, name: str) -> MemberCluster | None: ...

    def link(self, name: str) -> Link | None: ...

    def names(self) -> frozenset[str]: ...

    def pin(self, cluster: str, model: str | None) -> ModelPin | None: ...

    def nodes_listed(self, cluster: str) -> bool:
        """Whether the member's Nodes have been listed since its link (re)connected."""
        ...

    def ready_to_place(self) -> bool:
        """Whether every member that answers has listed its pods (a fair view to decide on)."""
        ...


class Dispatching(Protocol):
    """What workload sync and follow-up ask of placement: place a job again, pass soon."""

    def requeue(self, request: JobRequest) -> None: ...

    def kick(self) -> None: ...

    def withdraw(self, key: str) -> None:
        """The job is over or gone: not to be placed, nothing more to say about its wait."""
        ...


class PagedLister(Protocol):
    """Lists the hub's objects of one kind a page at a time (:meth:`suanli.kube.Hub.list_pages`)."""

    def list_pages(
        self, plural: str, namespace: str | None = None, *, limit: int
    ) -> AsyncIterator[list[dict[str, Any]]]: ...


class Hub(StatusPatcher, EventRecorder, SecretReader, TenantDataReader, PagedLister, Protocol):
    """The hub's API server, as the controller uses it (:class:`suanli.kube.Hub`)."""
