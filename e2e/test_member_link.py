"""The operator's link to a member, against real API servers: watches, remote Jobs, outages.

The link runs on an event loop in a thread of its own, as it would in the operator; the test
thread drives it with ``LoopThread.run`` and waits on what its callbacks recorded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client

from e2e.kube import Cluster
from suanli.api.computejob import ComputeJob
from suanli.api.names import JOB_UID_LABEL
from suanli.api.podpolicy import PodSecurityLevel
from suanli.devenv import federation
from suanli.devenv.manifests import GPU_RESOURCE, RUN_DURATION_ANNOTATION
from suanli.devenv.toolchain import Toolchain
from suanli.devenv.topology import H100, L40S, ClusterSpec, FederationSpec, NodePool
from suanli.dispatch.kube import node_from_k8s, pod_from_k8s
from suanli.kits.waiting import TIMEOUTS, wait_for
from suanli.members.link import LinkEvents, MemberLink
from suanli.members.workload import (
    ModelPin,
    remote_job,
    remote_namespace,
    remote_namespace_object,
)

T = TypeVar("T")
Obj = dict[str, Any]

PROBE_INTERVAL = 1.0
# Its own small federation, named per session like the shared one (see conftest.py), so
# sessions running side by side never stop each other's clusters.
OUTAGE_FEDERATION = f"e2e-link-{os.getpid()}"


class LoopThread:
    """An asyncio event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="link-loop", daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Recorder:
    """What a link reported; every callback checks it runs on the loop's thread."""

    def __init__(self, loop_thread: threading.Thread) -> None:
        self._loop_thread = loop_thread
        self._lock = threading.Lock()
        self.wrong_thread = 0
        self.node_lists: list[list[Obj]] = []
        self.pod_lists: list[list[Obj]] = []
        self.job_lists: list[list[Obj]] = []
        self.nodes: list[tuple[str, Obj]] = []
        self.pods: list[tuple[str, Obj]] = []
        self.jobs: list[tuple[str, Obj]] = []
        self.reachability: list[tuple[bool, str]] = []

    def _here(self) -> None:
        if threading.current_thread() is not self._loop_thread:
            self.wrong_thread += 1

    def events(self, cluster: str) -> LinkEvents:
        def synced(into: list[list[Obj]]) -> Any:
            def record(name: str, items: list[Obj]) -> None:
                self._here()
                assert name == cluster
                with self._lock:
                    into.append(items)

            return record

        def changed(into: list[tuple[str, Obj]]) -> Any:
            def record(name: str, kind: str, obj: Obj) -> None:
                self._here()
                assert name == cluster
                with self._lock:
                    into.append((kind, obj))

            return record

        def reachability(name: str, ok: bool, message: str) -> None:
            self._here()
            with self._lock:
                self.reachability.append((ok, message))

        return LinkEvents(
            on_nodes_synced=synced(self.node_lists),
            on_node=changed(self.nodes),
            on_pods_synced=synced(self.pod_lists),
            on_pod=changed(self.pods),
            on_jobs_synced=synced(self.job_lists),
            on_job=changed(self.jobs),
            on_reachability=reachability,
        )

    def job_events(self, name: str) -> list[tuple[str, Obj]]:
        with self._lock:
            return [(kind, obj) for kind, obj in self.jobs if obj["metadata"]["name"] == name]

    def pod_events(self, job_uid: str) -> list[tuple[str, Obj]]:
        with self._lock:
            return [
                (kind, obj)
                for kind, obj in self.pods
                if (obj["metadata"].get("labels") or {}).get(JOB_UID_LABEL) == job_uid
            ]


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    runner = LoopThread()
    try:
        yield runner
    finally:
        runner.close()


def link_threads(name: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(f"suanli-{name}-")]


def stop_link(runner: LoopThread, link: MemberLink) -> float:
    started = time.monotonic()
    runner.run(link.stop(), timeout=10)
    return time.monotonic() - started


def complete(job: Obj) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Complete" and c.get("status") == "True" for c in conditions)


def computejob(namespace: str) -> ComputeJob:
    return ComputeJob.model_validate(
        {
            "apiVersion": "suanli.io/v1alpha1",
            "kind": "ComputeJob",
            "metadata": {"name": "train", "namespace": namespace, "uid": str(uuid.uuid4())},
            "spec": {
                "replicas": 2,
                "gpusPerReplica": 2,
                "maxRuntime": "10m",
                "template": {
                    "metadata": {"annotations": {RUN_DURATION_ANNOTATION: "2s"}},
                    "spec": {"containers": [{"name": "main", "image": "registry.example/t:1"}]},
                },
            },
        }
    )


def test_link_syncs_member_and_follows_a_remote_job_to_completion(
    fed: federation.FederationState,
    clusters: dict[str, Cluster],
    loop_thread: LoopThread,
    session_operator_paused: None,
) -> None:
    # The link makes a Job for a ComputeJob the hub does not have: the session's operator
    # would sweep it as an orphan (as it must), so it does not run meanwhile.
    kubeconfig = Path(fed.cluster("member-a").kubeconfig).read_text()
    recorder = Recorder(loop_thread.thread)
    link = MemberLink(
        "member-a", kubeconfig, recorder.events("member-a"), probe_interval=PROBE_INTERVAL
    )
    job = computejob(f"link-{uuid.uuid4().hex[:8]}")
    namespace = remote_namespace(job)
    loop_thread.run(link.start())
    try:
        # Nodes: the member's four H100 nodes, 8 GPUs each, as the dispatcher reads them.
        listed = wait_for(
            lambda: recorder.node_lists[0] if recorder.node_lists else None,
            timeout=TIMEOUTS.api_ready,
            what="the node list",
        )
        gpu_nodes = [node_from_k8s(n) for n in listed if node_from_k8s(n).allocatable]
        assert len(gpu_nodes) == 4
        assert {(n.model, n.allocatable, n.schedulable) for n in gpu_nodes} == {("H100", 8, True)}
        assert all(n["kind"] == "Node" for n in listed)
        wait_for(lambda: recorder.reachability, timeout=TIMEOUTS.api_ready, what="the probe")
        assert recorder.reachability[0][0] is True
        assert link.reachable
        wait_for(lambda: link.synced, timeout=TIMEOUTS.api_ready, what="every watch to sync")

        # The remote namespace and Job, as the dispatcher will create them.
        loop_thread.run(
            link.ensure_namespace(remote_namespace_object(job, PodSecurityLevel.BASELINE))
        )
        loop_thread.run(
            link.ensure_namespace(remote_namespace_object(job, PodSecurityLevel.BASELINE))
        )  # exists: fine
        body = remote_job(job, GPU_RESOURCE, ModelPin(product_values=frozenset({H100.product})))
        name = body["metadata"]["name"]
        created = loop_thread.run(link.create_job(body))
        again = loop_thread.run(link.create_job(body))
        assert again["metadata"]["uid"] == created["metadata"]["uid"]
        assert [j["metadata"]["uid"] for j in loop_thread.run(link.list_jobs())].count(
            created["metadata"]["uid"]
        ) == 1

        # The watch follows it to Complete.
        wait_for(
            lambda: any(complete(obj) for _, obj in recorder.job_events(name)),
            timeout=TIMEOUTS.job_complete,
            what="the Job's Complete event",
        )
        events = recorder.job_events(name)
        assert events[0][0] == "ADDED"
        assert {kind for kind, _ in events[1:]} == {"MODIFIED"}
        finished = loop_thread.run(link.get_job(namespace, name))
        assert finished is not None and finished["status"]["succeeded"] == 2

        # Its pods were seen bound, holding 2 GPUs each, and finished.
        uid = job.metadata.uid or ""

        def seen_pods() -> list[Any]:
            return [pod_from_k8s(obj) for _, obj in recorder.pod_events(uid)]

        pods = seen_pods()
        assert len({p.uid for p in pods}) == 2
        assert {p.uid for p in pods if p.node is not None and p.gpus == 2} == {p.uid for p in pods}
        assert {p.job for p in pods} == {uid}
        wait_for(
            lambda: len({p.uid for p in seen_pods() if p.terminal}) == 2,
            timeout=TIMEOUTS.condition_stable,
            what="both pods to be seen finished",
        )

        # Deletion, twice.
        assert loop_thread.run(link.delete_job(namespace, name)) is True
        wait_for(
            lambda: any(kind == "DELETED" for kind, _ in recorder.job_events(name)),
            timeout=TIMEOUTS.condition_stable,
            what="the Job's DELETED event",
        )
        assert loop_thread.run(link.get_job(namespace, name)) is None
        assert loop_thread.run(link.delete_job(namespace, name)) is False
        assert recorder.wrong_thread == 0
    finally:
        took = stop_link(loop_thread, link)
        clusters["member-a"].core.delete_namespace(namespace, propagation_policy="Background")
    print(f"stop() took {took:.2f}s")
    assert took < 2.5, f"stop() took {took:.1f}s"
    assert link_threads("member-a") == []


def _apiserver_pid(
    state: federation.FederationState, member: federation.ClusterInfo, toolchain: Toolchain
) -> int:
    for pid in federation.cluster_pids(state, member, toolchain):
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        if command.endswith(b"kube-apiserver"):
            return pid
    raise AssertionError(f"no kube-apiserver process for {member.name}")


def test_link_reports_an_outage_and_resumes_its_watches_after_it(
    toolchain: Toolchain, loop_thread: LoopThread
) -> None:
    small = FederationSpec(
        members=(
            ClusterSpec(
                name="solo", node_pools=(NodePool(name="l40s", count=1, gpus_per_node=4, gpu=L40S),)
            ),
        )
    )
    state = federation.up(small, toolchain, name=OUTAGE_FEDERATION, log=print)
    link: MemberLink | None = None
    try:
        member = state.cluster("solo")
        recorder = Recorder(loop_thread.thread)
        link = MemberLink(
            "solo",
            Path(member.kubeconfig).read_text(),
            recorder.events("solo"),
            probe_interval=PROBE_INTERVAL,
        )
        loop_thread.run(link.start())
        wait_for(lambda: link.synced, timeout=TIMEOUTS.api_ready, what="every watch to sync")
        wait_for(lambda: link.reachable, timeout=TIMEOUTS.api_ready, what="reachable")
        lists_before = len(recorder.node_lists)

        # The member's control plane goes away.
        federation.stop_cluster(state, member.name, toolchain)
        stopped = time.monotonic()
        wait_for(
            lambda: not link.reachable,
            timeout=2 * PROBE_INTERVAL + 5,
            what="the link to see the member unreachable",
        )
        noticed = time.monotonic() - stopped
        assert recorder.reachability[-1][0] is False
        print(f"unreachable after {noticed:.1f}s: {recorder.reachability[-1][1]}")
        wait_for(lambda: not link.synced, timeout=TIMEOUTS.condition_stable, what="watches down")

        # It comes back: reachable again, the watches relist on their own and follow changes.
        federation.start_cluster(state, member.name, toolchain)
        wait_for(lambda: link.reachable, timeout=TIMEOUTS.api_ready, what="reachable again")
        assert [ok for ok, _ in recorder.reachability] == [True, False, True]
        wait_for(
            lambda: len(recorder.node_lists) > lists_before and link.synced,
            timeout=TIMEOUTS.api_ready,
            what="the watches to relist",
        )
        with federation.api_client(member.kubeconfig) as api:
            core = client.CoreV1Api(api)
            node = core.list_node(label_selector="nvidia.com/gpu.present=true").items[0]
            core.patch_node(node.metadata.name, {"metadata": {"labels": {"suanli.io/e2e": "x"}}})
        wait_for(
            lambda: any(
                (obj["metadata"].get("labels") or {}).get("suanli.io/e2e") == "x"
                for kind, obj in recorder.nodes
                if kind == "MODIFIED"
            ),
            timeout=TIMEOUTS.condition_stable,
            what="the resumed node watch to see a label change",
        )

        # A frozen API server (SIGSTOP) holds connections open and answers nothing: the probe
        # times out, the link cuts its watches, and they relist once it thaws.
        apiserver = _apiserver_pid(state, member, toolchain)
        lists_before = len(recorder.node_lists)
        os.kill(apiserver, signal.SIGSTOP)
        try:
            frozen = time.monotonic()
            wait_for(
                lambda: not link.reachable,
                timeout=2 * PROBE_INTERVAL + 5,
                what="the link to see the frozen member unreachable",
            )
            print(f"frozen: unreachable after {time.monotonic() - frozen:.1f}s")
            wait_for(lambda: not link.synced, timeout=5, what="the watches to be cut")
        finally:
            os.kill(apiserver, signal.SIGCONT)
        wait_for(lambda: link.reachable, timeout=TIMEOUTS.api_ready, what="reachable after thaw")
        wait_for(
            lambda: len(recorder.node_lists) > lists_before and link.synced,
            timeout=TIMEOUTS.api_ready,
            what="the watches to relist after the thaw",
        )
        assert [ok for ok, _ in recorder.reachability] == [True, False, True, False, True]
        assert recorder.wrong_thread == 0
    finally:
        if link is not None:
            took = stop_link(loop_thread, link)
            print(f"stop() took {took:.2f}s")
            assert took < 2.5, f"stop() took {took:.1f}s"
        federation.down(OUTAGE_FEDERATION, toolchain, log=print)
