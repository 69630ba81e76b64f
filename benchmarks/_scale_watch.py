"""Watching the scale benchmark's jobs: ComputeJobs on the hub, their remote Jobs in members.

Each watch records, in this process's monotonic clock, when it first saw a job reach a state:
on the hub, a ComputeJob with a status, Dispatched (or later) and finished; in a member, the
batch/v1 Job the operator created for a ComputeJob, as a user of MultiKueue would see the
workload arrive. Times are those of the watch thread handling the event, so they include the
watch's delivery and this process's own scheduling (one Python process also runs the
submitting threads).

A remote Job is mapped back to its ComputeJob by the annotation the operator writes on it
(``suanli.io/computejob``: "namespace/name"); the watch selects the run's remote Jobs by the
label that names the ComputeJob's hub namespace (the run's tenant namespaces are its own).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Final

from suanli.api.meta import API_VERSION
from suanli.api.names import HUB_ANNOTATION, JOB_NAMESPACE_LABEL
from suanli.members.kubeapi import KubeSource
from suanli.members.watch import ResourceWatcher

RUN_LABEL: Final = "suanli.io/bench-run"
DISPATCHED: Final = frozenset({"Dispatched", "Running", "Succeeded", "Failed"})
FINISHED: Final = frozenset({"Succeeded", "Failed", "Rejected"})


@dataclass
class Tracker:
    """First time (monotonic) each ComputeJob was seen with a status, Dispatched, finished."""

    seen: dict[str, float] = field(default_factory=dict)
    dispatched: dict[str, float] = field(default_factory=dict)
    finished: dict[str, float] = field(default_factory=dict)
    phases: dict[str, str] = field(default_factory=dict)
    clusters: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def synced(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            self.event("ADDED", item)

    def event(self, kind: str, body: dict[str, Any]) -> None:
        if kind == "DELETED":
            return
        now = time.monotonic()
        name = body["metadata"]["name"]
        status = body.get("status") or {}
        phase = status.get("phase")
        if not phase:
            return
        with self.lock:
            self.phases[name] = phase
            self.seen.setdefault(name, now)
            if phase in DISPATCHED:
                self.dispatched.setdefault(name, now)
                if status.get("cluster"):
                    self.clusters.setdefault(name, status["cluster"])
            if phase in FINISHED:
                self.finished.setdefault(name, now)

    def counts(self) -> dict[str, int]:
        with self.lock:
            return {
                "seen": len(self.seen),
                "dispatched": len(self.dispatched),
                "finished": len(self.finished),
            }


def watch_jobs(hub: Any, run: str, tracker: Tracker) -> ResourceWatcher:
    """The run's ComputeJobs on the hub (labelled with the run), into ``tracker``."""
    source = KubeSource(
        hub,
        kind="ComputeJob",
        api_version=API_VERSION,
        path=f"/apis/{API_VERSION}/computejobs",
        label_selector=f"{RUN_LABEL}={run}",
    )
    watcher = ResourceWatcher(
        source, on_synced=tracker.synced, on_event=tracker.event, name="bench-watch"
    )
    watcher.start()
    return watcher


@dataclass
class RemoteJobs:
    """First time (monotonic) a remote Job was seen in any member, by its ComputeJob's name,
    and in which member (a job moved to another member keeps its first)."""

    created: dict[str, float] = field(default_factory=dict)
    members: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def event(self, member: str, kind: str, body: dict[str, Any]) -> None:
        if kind == "DELETED":
            return
        annotations = body.get("metadata", {}).get("annotations") or {}
        _namespace, _slash, name = str(annotations.get(HUB_ANNOTATION, "")).partition("/")
        if not name:
            return
        now = time.monotonic()
        with self.lock:
            if name not in self.created:
                self.created[name] = now
                self.members[name] = member

    def count(self) -> int:
        with self.lock:
            return len(self.created)


@dataclass(frozen=True)
class _MemberWatch:
    """One member's watch callbacks, recording into the shared :class:`RemoteJobs`."""

    remote: RemoteJobs
    member: str

    def synced(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            self.event("ADDED", item)

    def event(self, kind: str, body: dict[str, Any]) -> None:
        self.remote.event(self.member, kind, body)


def watch_remote_jobs(
    members: dict[str, Any], tenants: list[str], remote: RemoteJobs
) -> list[ResourceWatcher]:
    """A watch per member on the batch Jobs of the run's tenants, into ``remote``."""
    selector = f"{JOB_NAMESPACE_LABEL} in ({','.join(tenants)})"
    watchers = []
    for name, api in members.items():
        source = KubeSource(
            api,
            kind="Job",
            api_version="batch/v1",
            path="/apis/batch/v1/jobs",
            label_selector=selector,
        )
        member = _MemberWatch(remote, name)
        watcher = ResourceWatcher(
            source, on_synced=member.synced, on_event=member.event, name=f"bench-remote-{name}"
        )
        watcher.start()
        watchers.append(watcher)
    return watchers
