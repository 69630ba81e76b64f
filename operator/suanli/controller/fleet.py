"""The member fleet: a link to each MemberCluster, what it says, and the capacity it shows.

For every MemberCluster the fleet reads the kubeconfig its Secret holds, refuses one that would
run code in the operator (exec and auth-provider plugins, unless allowed), and keeps a link
(:class:`~suanli.members.link.MemberLink`) made from it. The link's node, pod and telemetry
reports feed the :class:`~suanli.dispatch.capacity.CapacityIndex` that placement decides on;
its reachability marks the member (not) Ready there; its Job reports go on to the listener
(workload sync), as do pods the member will not schedule (follow-up's watchdog) and members
gone for longer than the grace period (follow-up moves their jobs).

Kubeconfigs are read again every ``kubeconfig_check_seconds`` (:meth:`MemberFleet.
check_kubeconfigs`): a changed one, a rotated token, replaces the member's link, make before
break, so dispatch never sees the member without one; a member whose Secret was missing or
refused is tried again.

The fleet knows nothing of jobs: it reports to a :class:`FleetListener`, which the controller
wires to the other parts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from suanli import metrics
from suanli.api.catalogue import DEFAULT_CATALOGUE, Catalogue, member_catalogue
from suanli.api.membercluster import DEFAULT_GPU_RESOURCE, MemberCluster
from suanli.api.meta import API_VERSION
from suanli.api.reasons import MemberReason
from suanli.controller.ports import (
    Clock,
    EventRecorder,
    Link,
    LinkFactory,
    Obj,
    SecretReader,
    Sleep,
    Spawn,
)
from suanli.controller.status import whole_seconds
from suanli.dispatch.capacity import CapacityIndex
from suanli.dispatch.kube import node_from_k8s, pod_from_k8s
from suanli.dispatch.models import ClusterInfo, NodeInfo, PodInfo
from suanli.members import kubeconfig as kubeconfigs
from suanli.members.link import LinkEvents, MemberLink, MemberLinkError
from suanli.members.workload import ModelPin
from suanli.options import OperatorOptions

logger = logging.getLogger(__name__)


class FleetListener(Protocol):
    """Where the fleet's news about jobs and capacity goes."""

    def kick(self) -> None:
        """Capacity may have changed, or a member became usable: place soon."""
        ...

    def jobs_synced(self, cluster: str, remotes: list[Obj]) -> None:
        """Every suanli Job on ``cluster``, after each (re)list."""
        ...

    def job_event(self, cluster: str, kind: str, remote: Obj) -> None: ...

    def pod_unschedulable(self, job: str) -> None:
        """A pod of job ``job`` (uid) is Pending and the member's scheduler says it fits nowhere."""
        ...

    def member_lost(self, cluster: str, since: datetime) -> Awaitable[None]:
        """``cluster`` has not answered since ``since``, for longer than the grace period."""
        ...

    def nodes_synced(self, cluster: str) -> None:
        """``cluster``'s Nodes were (re)listed: the pins of its models are known."""
        ...


def member_link(
    name: str, kubeconfig: str, events: LinkEvents, telemetry_endpoints: tuple[str, ...]
) -> Link:
    """The real link to a member (the default :data:`~.ports.LinkFactory`)."""
    return MemberLink(name, kubeconfig, events, telemetry_endpoints=telemetry_endpoints)


@dataclass
class MemberFleet:
    index: CapacityIndex
    secrets: SecretReader
    events: EventRecorder
    options: OperatorOptions
    listener: FleetListener
    spawn: Spawn
    clock: Clock
    sleep: Sleep = asyncio.sleep
    link_factory: LinkFactory = member_link
    links: dict[str, Link] = field(default_factory=dict)
    members: dict[str, MemberCluster] = field(default_factory=dict)
    reachable: dict[str, bool] = field(default_factory=dict)
    # Why a member has no link: its kubeconfig Secret unreadable, its kubeconfig refused or
    # unusable (reason and message for its status conditions).
    link_problems: dict[str, tuple[MemberReason, str]] = field(default_factory=dict)
    # GPU feature discovery product label per (cluster, model), to pin pods to the model.
    _pins: dict[tuple[str, str], ModelPin] = field(default_factory=dict)
    # When each unreachable member stopped answering.
    _lost_since: dict[str, datetime] = field(default_factory=dict)
    # The kubeconfig each member's link (or refusal) was made from: a different one in its
    # Secret is a rotation, and the member is connected again with it.
    _kubeconfigs: dict[str, str] = field(default_factory=dict)
    # One connection attempt per member at a time (MemberCluster events and the kubeconfig
    # check both connect).
    _connecting: dict[str, asyncio.Lock] = field(default_factory=dict)
    # The last failure of each member's kubeconfig check, so it is logged once, not each time.
    check_failures: dict[str, str] = field(default_factory=dict)
    # Members whose link's credentials the member refuses (401/403), as last seen.
    _refused: set[str] = field(default_factory=set)
    # Members whose Nodes have been listed since they were connected: their pins are known.
    _nodes_listed: set[str] = field(default_factory=set)

    # --- what the other parts read (ports.Members) --------------------------------------------

    def member(self, name: str) -> MemberCluster | None:
        return self.members.get(name)

    def link(self, name: str) -> Link | None:
        return self.links.get(name)

    def names(self) -> frozenset[str]:
        return frozenset(self.members)

    def pin(self, cluster: str, model: str | None) -> ModelPin | None:
        """The labels of ``model``'s nodes on ``cluster``, to pin the pods to that model."""
        return self._pins.get((cluster, model)) if model else None

    def nodes_listed(self, cluster: str) -> bool:
        return cluster in self._nodes_listed

    def ready_to_place(self) -> bool:
        # Never decide on a partial view: after a (re)start, a member whose pods are not
        # listed yet would look emptier than it is. Its sync callbacks kick again.
        # A member that refuses the link's credentials will not sync until its admin acts:
        # it is not ready (see notice_refused_credentials) and must not hold up the others.
        return not any(
            self.reachable.get(name) and not link.synced and name not in self._refused
            for name, link in self.links.items()
        )

    # --- MemberCluster events -------------------------------------------------------------------

    async def member_upsert(self, body: dict[str, Any]) -> None:
        member = MemberCluster.model_validate({**body, "status": body.get("status") or {}})
        name = member.metadata.name or ""
        previous = self.members.get(name)
        self.members[name] = member
        self._refresh_cluster(name)
        unchanged = (
            previous is not None
            and previous.spec.kubeconfig_secret_ref == member.spec.kubeconfig_secret_ref
            and previous.spec.telemetry_endpoints == member.spec.telemetry_endpoints
            # Its catalogue entries decide each node's model and resource: read them again.
            and previous.spec.accelerators == member.spec.accelerators
            and previous.spec.gpu_resource_name == member.spec.gpu_resource_name
            and name in self.links
        )
        if not unchanged:
            await self._connect(member)
        self.listener.kick()

    async def member_delete(self, name: str) -> None:
        self.members.pop(name, None)
        link = self.links.pop(name, None)
        if link is not None:
            await link.stop()
        self.index.delete_cluster(name)
        self.reachable.pop(name, None)
        self.link_problems.pop(name, None)
        self._kubeconfigs.pop(name, None)
        self.check_failures.pop(name, None)
        self._refused.discard(name)
        self._nodes_listed.discard(name)

    async def stop(self) -> None:
        for link in list(self.links.values()):
            await link.stop()
        self.links.clear()

    def _refresh_cluster(self, name: str) -> None:
        member = self.members.get(name)
        if member is None:
            return
        info = ClusterInfo.from_member(member)
        reachable = self.reachable.get(name)
        if reachable is not None:
            # The link's own probe is fresher than the status condition it also feeds.
            message = "" if reachable else "its API server does not answer"
            if name in self._refused:
                reachable, message = False, "it refuses the hub's credentials"
            info = dataclasses.replace(info, ready=reachable, not_ready_message=message)
        self.index.upsert_cluster(info)

    # --- connections ----------------------------------------------------------------------------

    async def _connect(self, member: MemberCluster) -> None:
        """(Re)connect to ``member`` with the kubeconfig its Secret holds now."""
        name = member.metadata.name or ""
        lock = self._connecting.setdefault(name, asyncio.Lock())
        async with lock:
            current = self.members.get(name)
            if current is None:
                return  # deleted while this waited for the lock
            await self._connect_now(current)

    async def _connect_now(self, member: MemberCluster) -> None:
        """Make before break: the new link starts before the old one stops, so a rotation
        leaves no moment without a link (the member stays reachable, dispatch goes on)."""
        name = member.metadata.name or ""
        source = secret_source(member)
        try:
            kubeconfig = await self._read_kubeconfig(member)
        except Exception as error:  # a missing Secret leaves the member unreachable
            self._kubeconfigs.pop(name, None)
            await self._disconnect(
                name,
                MemberReason.KUBECONFIG_SECRET_NOT_FOUND,
                f"The kubeconfig in {source} cannot be read: {error}. Create it, or fix "
                "spec.kubeconfigSecretRef; the operator tries again every "
                f"{self.options.kubeconfig_check_seconds:.0f}s.",
            )
            return
        self._kubeconfigs[name] = kubeconfig
        # Before any client exists: building one already runs an exec plugin.
        refused = kubeconfigs.refusals(kubeconfig, allow_exec=self.options.allow_kubeconfig_exec)
        if refused:
            message = kubeconfigs.refusal_message(refused, source)
            await self._disconnect(name, MemberReason.KUBECONFIG_REFUSED, message)
            return
        listener = self.listener
        events = LinkEvents(
            on_nodes_synced=self._nodes_synced,
            on_node=self._node,
            on_pods_synced=self._pods_synced,
            on_pod=self._pod,
            on_jobs_synced=listener.jobs_synced,
            on_job=listener.job_event,
            on_reachability=self._on_reachability,
            on_telemetry=self._on_telemetry,
        )
        link = self.link_factory(name, kubeconfig, events, tuple(member.spec.telemetry_endpoints))
        old = self.links.get(name)
        self.links[name] = link
        try:
            await link.start()
        except MemberLinkError as error:
            if self.links.get(name) is link:
                self.links.pop(name)
            if old is not None:
                await old.stop()
            await self._disconnect(
                name,
                MemberReason.KUBECONFIG_INVALID,
                f"The kubeconfig in {source} cannot be used: {error}",
            )
            return
        self.link_problems.pop(name, None)
        if old is not None:
            await old.stop()

    async def _disconnect(self, name: str, reason: MemberReason, message: str) -> None:
        """Stop the member's link, if any, and say why there is none (``link_problems``)."""
        old = self.links.pop(name, None)
        if old is not None:
            await old.stop()
        if self.link_problems.get(name) != (reason, message):  # logged once, not every retry
            logger.warning("member %s not connected: %s", name, message)
        self.link_problems[name] = (reason, message)
        self._nodes_listed.discard(name)
        self._on_reachability(name, False, message)

    async def _read_kubeconfig(self, member: MemberCluster) -> str:
        reference = member.spec.kubeconfig_secret_ref
        secret = await self.secrets.secret(reference.namespace, reference.name)
        if reference.key not in secret:
            raise LookupError(f"it has no key {reference.key!r}")
        return secret[reference.key]

    def connection_problem(self, name: str) -> tuple[MemberReason, str] | None:
        """Why the operator cannot work with member ``name`` although its API server may be
        up (no link, or credentials refused), as a reason and a message for its conditions."""
        problem = self.link_problems.get(name)
        if problem is not None:
            return problem
        link = self.links.get(name)
        refused = link.credentials_refused if link is not None else None
        if refused is None:
            return None
        member = self.members.get(name)
        source = secret_source(member) if member is not None else "its kubeconfig Secret"
        return (
            MemberReason.CREDENTIALS_REFUSED,
            f"The member refuses the hub's credentials ({refused}). The token may be expired "
            "or revoked, or the hub's identity lacks a permission: ask the member's admin to "
            "apply `suanli member access` and to make a kubeconfig with `suanli member "
            f"kubeconfig`, then store it in {source}; the operator reconnects within "
            f"{self.options.kubeconfig_check_seconds:.0f}s, no restart needed.",
        )

    async def check_kubeconfigs(self) -> None:
        """Read every member's kubeconfig Secret once; reconnect the members whose kubeconfig
        changed (a rotated token) and those whose Secret was unreadable.

        Run every ``kubeconfig_check_seconds``. A periodic GET of each referenced Secret rather
        than a watch: the operator then needs only ``get`` on Secrets (no list or watch, which
        would hand it every Secret of the namespace), it reads no Secret no member refers to,
        and the cost is bounded: one small request per member per interval. A rotation takes
        effect within the interval; the old token must stay valid that long
        (docs/cluster-admins.md says so).
        """
        for name in list(self.members):
            try:
                await self.check_kubeconfig(name)
            except Exception as error:  # one member's failure must not stop the others
                metrics.MEMBER_KUBECONFIG_CHECK_ERRORS.labels(name).inc()
                text = f"{type(error).__name__}: {error}"
                if self.check_failures.get(name) != text:
                    logger.warning("member %s: checking its kubeconfig failed: %s", name, text)
                    self.check_failures[name] = text
            else:
                self.check_failures.pop(name, None)

    async def check_kubeconfig(self, name: str) -> None:
        member = self.members.get(name)
        if member is None:
            return
        if name not in self.links and name not in self._kubeconfigs:
            # No link and nothing read: the Secret was unreadable; try to connect again.
            await self._connect(member)
            return
        kubeconfig = await self._read_kubeconfig(member)
        if kubeconfig == self._kubeconfigs.get(name):
            return
        rotated = name in self.links
        logger.info("member %s: its kubeconfig changed; connecting with the new one", name)
        await self._connect(member)
        if not rotated or name not in self.links:
            return
        metrics.MEMBER_KUBECONFIG_RELOADS.labels(name).inc()
        await self.events.event(
            {
                "apiVersion": API_VERSION,
                "kind": "MemberCluster",
                "metadata": {"name": name, "uid": member.metadata.uid},
            },
            reason=MemberReason.KUBECONFIG_RELOADED,
            message=f"The kubeconfig in {secret_source(member)} changed: the operator "
            "reconnected with the new one.",
        )

    def notice_refused_credentials(self) -> None:
        """Members whose credentials are refused take no jobs; they do again once accepted."""
        for name, link in list(self.links.items()):
            refused = link.credentials_refused is not None
            if refused == (name in self._refused):
                continue
            if refused:
                self._refused.add(name)
                logger.warning("member %s refuses the hub's credentials", name)
            else:
                self._refused.discard(name)
            self._refresh_cluster(name)
            self.listener.kick()
        self._refused.intersection_update(self.links)

    # --- what the links report ------------------------------------------------------------------

    def catalogue(self, cluster: str) -> Catalogue:
        """The accelerator catalogue as ``cluster`` declares it (built-in plus its entries)."""
        member = self.members.get(cluster)
        if member is None or not member.spec.accelerators:
            return DEFAULT_CATALOGUE  # the common case, read on every pod event: no copy
        return member_catalogue(member)

    def _gpu_resource(self, cluster: str) -> str:
        member = self.members.get(cluster)
        return DEFAULT_GPU_RESOURCE if member is None else member.spec.gpu_resource_name

    def _node_info(self, cluster: str, node: Obj) -> NodeInfo:
        return node_from_k8s(
            node, gpu_resource=self._gpu_resource(cluster), catalogue=self.catalogue(cluster)
        )

    def _pod_info(self, cluster: str, pod: Obj) -> PodInfo:
        resources = self.catalogue(cluster).resources | {self._gpu_resource(cluster)}
        return pod_from_k8s(pod, gpu_resources=resources)

    def _nodes_synced(self, cluster: str, nodes: list[Obj]) -> None:
        infos = [self._node_info(cluster, n) for n in nodes]
        for info in infos:
            self._remember_pin(cluster, info)
        self.index.sync_nodes(cluster, infos)
        self._nodes_listed.add(cluster)
        self.listener.nodes_synced(cluster)
        self.listener.kick()

    def _node(self, cluster: str, kind: str, node: Obj) -> None:
        if kind == "DELETED":
            self.index.delete_node(cluster, node["metadata"]["name"])
        else:
            info = self._node_info(cluster, node)
            self._remember_pin(cluster, info)
            self.index.upsert_node(cluster, info)
        self.listener.kick()

    def _remember_pin(self, cluster: str, info: NodeInfo) -> None:
        if info.model:
            key = (cluster, info.model)
            pin = self._pins.get(key, ModelPin())
            self._pins[key] = pin.with_node(
                info.model_label, info.product, info.model_by, info.resource
            )

    def _pods_synced(self, cluster: str, pods: list[Obj]) -> None:
        self.index.sync_pods(cluster, [self._pod_info(cluster, p) for p in pods])
        self.listener.kick()

    def _pod(self, cluster: str, kind: str, pod: Obj) -> None:
        if kind == "DELETED":
            self.index.delete_pod(cluster, pod["metadata"]["uid"])
            self.listener.kick()
            return
        info = self._pod_info(cluster, pod)
        self.index.upsert_pod(cluster, info)
        if info.terminal:
            self.listener.kick()
        if info.job and _unschedulable(pod):
            self.listener.pod_unschedulable(info.job)

    def _on_reachability(self, cluster: str, reachable: bool, message: str) -> None:
        if self.reachable.get(cluster) == reachable:
            return
        self.reachable[cluster] = reachable
        logger.info(
            "member %s is %s: %s", cluster, "reachable" if reachable else "unreachable", message
        )
        self._refresh_cluster(cluster)
        if reachable:
            self._lost_since.pop(cluster, None)
            self.listener.kick()
        else:
            self._lost_since.setdefault(cluster, self.clock())
            self.spawn(self._after_grace(cluster))

    async def _after_grace(self, cluster: str) -> None:
        """Once a member has been gone for the grace period, its jobs are moved."""
        await self.sleep(self.options.member_grace_seconds)
        lost = self._lost_since.get(cluster)
        if lost is None or self.reachable.get(cluster, False):
            return
        logger.info("member %s unreachable since %s", cluster, whole_seconds(lost).isoformat())
        await self.listener.member_lost(cluster, lost)

    def _on_telemetry(self, cluster: str, snapshot: Any) -> None:
        self.index.update_telemetry(cluster, snapshot)
        self.listener.kick()


def secret_source(member: MemberCluster) -> str:
    """Where a member's kubeconfig comes from, for messages: ``Secret ns/name (key k)``."""
    reference = member.spec.kubeconfig_secret_ref
    return f"Secret {reference.namespace}/{reference.name} (key {reference.key})"


def _unschedulable(pod: Obj) -> bool:
    """Pending, and the scheduler said it fits nowhere."""
    status = pod.get("status") or {}
    if status.get("phase") != "Pending":
        return False
    return any(
        c.get("type") == "PodScheduled"
        and c.get("status") == "False"
        and c.get("reason") == "Unschedulable"
        for c in status.get("conditions") or []
    )
