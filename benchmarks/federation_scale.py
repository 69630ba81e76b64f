"""Federation at scale: how fast ComputeJobs go out, what that costs the operator, and the floor.

Brings up its own local federation (``--federation``, default ``bench-scale``; an existing one
of that name is reused and left up): a hub and ``--members`` members of ``--nodes`` kwok nodes
with ``--gpus-per-node`` H100 each. Installs suanli, joins the members, gives each of
``--tenants`` tenant namespaces a voucher, starts the operator as a process, and then:

1. submits ``--jobs`` ComputeJobs (1 GPU each, round-robin over the tenants) from
   ``--concurrency`` client threads, at ``--rate`` jobs/s offered (0: all at once);
2. watches them on the hub and records when each is first seen Dispatched (or later), and
   watches batch Jobs in every member and records when each job's remote Job first appears
   (what a user of MultiKueue would call dispatched);
3. waits until every job has finished (they run ``--run-duration`` on the members), so the
   operator's cost covers a job's whole life: admission, dispatch, follow-up and charging;
4. the floor: as many plain batch/v1 Jobs (same pod template, 1 GPU) created directly in the
   members, spread across them, by the same client at the same concurrency and rate;
5. the webhooks-off floor: the operator stopped and suanli's webhook configurations removed
   (saved, and restored after), the same ComputeJobs created in fresh hub namespaces by the
   same client at the same concurrency and rate, then deleted; the operator is started again
   (see ``_scale_webhooks_off``).

Figures (printed as a table, and with ``--json`` written as JSON; ``--compare OLD.json`` puts an
earlier run beside this one):

- creates/s: successful creates over the time from the first create call's start to the last
  one's return, the same for the ComputeJobs, the webhooks-off floor and the batch Job floor;
  the ratio of the first two is what admission costs a create;
- dispatched jobs/s and remote Jobs created/s: jobs over the time from the first create to the
  last job seen Dispatched on the hub, and to the last remote Job seen in a member; each of
  them over the batch Job floor's creates/s;
- submit-to-dispatched and submit-to-remote-Job latency p50/p95/p99: from the create call's
  return to the first watch event showing the job Dispatched, or its remote Job (timestamps
  of this process, so they include the watch's delivery; the Dispatched condition's own time
  has only second resolution);
- webhook latency p50/p99 from the hub API server's histogram
  ``apiserver_admission_webhook_admission_duration_seconds`` (delta over the submission,
  interpolated in its buckets, whose bounds near the target are 5 ms and 25 ms, so the share
  of calls within 25 ms is given as well), the client's create latency, and the operator's
  own ``suanli_admission_duration_seconds``;
- operator CPU seconds per job (utime+stime from /proc/PID/stat, until all dispatched and
  until all finished) and peak RSS (VmHWM from /proc/PID/status);
- API requests the operator made per job: the API servers count requests by verb and
  resource but not by client, so they are attributed by resource. On the hub, every request
  on ComputeJobs, VoucherQuotas, MemberClusters, Events and Secrets is the operator's except
  the benchmark's own creates and its watch's lists; no other client of the hub touches them.
  On the members, creates, reads and deletes of batch Jobs (not their status) and creates of
  Namespaces are the operator's (the job controller, scheduler and kwok only touch pods, job
  status, nodes and leases). Long-running WATCHes are left out of both (a handful per run, and
  counted by the server only when they end), as are the operator's /readyz probes.

Sizing: jobs need 1 GPU each and the federation has members x nodes x GPUs (2,400 by default)
for 2,000 jobs, so the dispatch rate measures the operator, not a wait for capacity; jobs run
``--run-duration`` (default 20 s), long enough that most of the burst is dispatched before the
first ones end, short enough that the run ends.

``--memory-run``: 10,000 ComputeJobs submitted at once, every other one running an hour, so
the long ones fill the federation and the hub ends up with finished, running and queued jobs;
once every job has its status and dispatch has settled, the operator's RSS is read. No floor.

``--profile FILE`` records the operator with py-spy (speedscope format, ``--gil``: samples of
the thread holding the GIL) from the first create until everything was dispatched (or, in a
memory run, settled).

``--no-floor`` skips both floors (a quicker A/B of the operator alone).

Figures are printed, never asserted; the exit status is 0 unless the set-up itself failed.

    .venv/bin/python benchmarks/federation_scale.py --jobs 300 --nodes 20
    .venv/bin/python benchmarks/federation_scale.py --json /tmp/scale.json
    .venv/bin/python benchmarks/federation_scale.py --rate 20 --json /tmp/rate20.json
    .venv/bin/python benchmarks/federation_scale.py --memory-run --json /tmp/memory.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import _scale_programme as programmes
import _scale_webhooks_off as webhooks_off
from _common import (
    REQUEST_METRIC,
    Labels,
    api_metrics,
    counter,
    cpu_seconds,
    delta,
    fraction_within,
    histogram,
    histogram_means,
    http_metrics,
    log,
    machine_cpu,
    memory_bytes,
    ms,
    percentile,
    quantile,
    table,
    wait_until,
    webhook_buckets,
)
from _scale_submit import Post, Sent, create, rate_of, send_all
from _scale_watch import RUN_LABEL, RemoteJobs, Tracker, watch_jobs, watch_remote_jobs

from suanli.api.meta import API_VERSION
from suanli.devenv import federation, install
from suanli.devenv.manifests import GPU_RESOURCE, RUN_DURATION_ANNOTATION
from suanli.devenv.operator_process import OperatorProcess
from suanli.devenv.toolchain import Toolchain, ensure_toolchain
from suanli.devenv.topology import H100, ClusterSpec, FederationSpec, NodePool
from suanli.members.kubeapi import describe_error, load_client, request_json

WEBHOOK: Final = "computejob-admission.suanli.io"
VOUCHER: Final = "bench"
MEMBER_LETTERS: Final = "abcdefgh"
IMAGE: Final = "registry.example/bench:1"
HUB_OPERATOR_RESOURCES: Final = frozenset(
    {"computejobs", "voucherquotas", "memberclusters", "events", "secrets"}
)
MEMBER_OPERATOR_REQUESTS: Final = frozenset(
    {
        ("POST", "jobs", ""),
        ("GET", "jobs", ""),
        ("DELETE", "jobs", ""),
        ("POST", "namespaces", ""),
    }
)
MEMORY_RUN_JOBS: Final = 10_000
GC_METRIC: Final = "suanli_gc_pause_seconds"

# Targets of issue 16 (measured on a 2-core machine), and issue 9's memory target.
TARGET_WEBHOOK_P99_S: Final = 0.025
TARGET_WEBHOOK_CONCURRENCY: Final = 50
TARGET_WEBHOOKS_RATIO: Final = 0.8
TARGET_FLOOR_RATIO: Final = 0.5
TARGET_LATENCY_P99_S: Final = 1.0
TARGET_LATENCY_RATE: Final = 20.0
TARGET_RSS_BYTES: Final = 300 * 10**6


# --- the federation -----------------------------------------------------------------------------


def federation_spec(members: int, nodes: int, gpus_per_node: int) -> FederationSpec:
    return FederationSpec(
        members=tuple(
            ClusterSpec(
                name=f"member-{letter}",
                region=f"shanghai-{letter}",
                node_pools=(
                    NodePool(name="h100", count=nodes, gpus_per_node=gpus_per_node, gpu=H100),
                ),
            )
            for letter in MEMBER_LETTERS[:members]
        )
    )


def connect(kubeconfig: str, pool_size: int) -> Any:
    """A client with a connection per submitter thread and no automatic retries."""
    return load_client(Path(kubeconfig).read_text(), pool_size=pool_size)


# --- the objects --------------------------------------------------------------------------------


def voucher(jobs: int, max_runtime_hours: int) -> dict[str, Any]:
    # Every job's worst case (1 GPU x maxRuntime x the dearest H100 price), twice over.
    price = Decimal(install.DEFAULT_PRICES["H100"])
    amount = price * max_runtime_hours * max(jobs, 1) * 2 + 100
    return {
        "apiVersion": API_VERSION,
        "kind": "VoucherQuota",
        "metadata": {"name": VOUCHER},
        "spec": {
            "amount": f"{amount:.2f}",
            "currency": "CNY",
            "validUntil": "2099-01-01T00:00:00Z",
        },
    }


def pod_template(run_duration: str, gpu_request: bool) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": IMAGE}
    spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if gpu_request:  # the floor asks for its GPU itself; suanli adds it to ComputeJobs
        container["resources"] = {"limits": {GPU_RESOURCE: "1"}, "requests": {GPU_RESOURCE: "1"}}
        spec["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    return {"metadata": {"annotations": {RUN_DURATION_ANNOTATION: run_duration}}, "spec": spec}


def compute_job(
    name: str, run: str, run_duration: str, max_runtime: str, voucher_name: str = VOUCHER
) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ComputeJob",
        "metadata": {"name": name, "labels": {RUN_LABEL: run}},
        "spec": {
            "maxRuntime": max_runtime,
            "gpuModels": ["H100"],
            "voucherRef": {"name": voucher_name},
            "template": pod_template(run_duration, gpu_request=False),
        },
    }


def floor_job(name: str, run_duration: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": pod_template(run_duration, gpu_request=True)},
    }


# --- metrics ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    hub: str
    members: dict[str, str]
    operator: str
    cpu: float
    machine: tuple[float, float]
    processes: dict[str, float]
    taken: float

    @classmethod
    def take(cls, bench: Bench, operator: OperatorProcess, pid: int) -> Snapshot:
        return cls(
            hub=api_metrics(bench.hub),
            members={name: api_metrics(api) for name, api in bench.members.items()},
            operator=http_metrics(f"http://127.0.0.1:{operator.metrics_port}/metrics"),
            cpu=cpu_seconds(pid),
            machine=machine_cpu(),
            processes=bench.process_cpu(pid),
            taken=time.monotonic(),
        )


def _requests(text: str) -> dict[Labels, float]:
    return counter(text, REQUEST_METRIC)


def _key(labels: Labels) -> tuple[str, str, str]:
    found = dict(labels)
    return found.get("verb", ""), found.get("resource", ""), found.get("subresource", "")


def operator_requests(
    before: Snapshot, after: Snapshot, creates: int, watch_lists: int
) -> tuple[Counter[str], Counter[str]]:
    """The operator's requests to the hub and to the members, by 'VERB resource[/sub]'."""
    hub: Counter[str] = Counter()
    for labels, count in delta(_requests(after.hub), _requests(before.hub)).items():
        verb, resource, sub = _key(labels)
        if resource in HUB_OPERATOR_RESOURCES and verb != "WATCH" and count > 0:
            hub[f"{verb} {resource}{'/' + sub if sub else ''}"] += round(count)
    # The benchmark's own: its creates (admitted or refused) and its watch's lists.
    hub["POST computejobs"] -= creates
    hub["LIST computejobs"] -= watch_lists
    members: Counter[str] = Counter()
    for name, text in after.members.items():
        for labels, count in delta(_requests(text), _requests(before.members[name])).items():
            if _key(labels) in MEMBER_OPERATOR_REQUESTS and count > 0:
                verb, resource, _sub = _key(labels)
                members[f"{verb} {resource}"] += round(count)
    return +hub, +members


SERVER_LATENCY: Final = (
    ("hub", "POST", "computejobs", ""),
    ("hub", "PATCH", "computejobs", ""),
    ("hub", "PATCH", "computejobs", "status"),
    ("hub", "PUT", "voucherquotas", "status"),
    ("hub", "POST", "events", ""),
    ("members", "POST", "jobs", ""),
    ("members", "POST", "namespaces", ""),
)


def server_latencies(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """Mean time the API servers took per request, in ms, for the requests a job makes."""
    keys = ("verb", "resource", "subresource")
    family = "apiserver_request_duration_seconds"

    def means(b: str, a: str) -> dict[tuple[str, ...], tuple[float, float]]:
        old, new = histogram_means(b, family, keys), histogram_means(a, family, keys)
        return {
            key: (value[0] - old.get(key, (0, 0))[0], value[1] - old.get(key, (0, 0))[1])
            for key, value in new.items()
        }

    sides = {"hub": means(before.hub, after.hub)}
    members: dict[tuple[str, ...], tuple[float, float]] = {}
    for name, text in after.members.items():
        for key, (total, count) in means(before.members[name], text).items():
            old = members.get(key, (0.0, 0.0))
            members[key] = (old[0] + total, old[1] + count)
    sides["members"] = members
    found: dict[str, float] = {}
    for side, verb, resource, sub in SERVER_LATENCY:
        total, count = sides[side].get((verb, resource, sub), (0.0, 0.0))
        if count > 0:
            name = f"{side}: {verb} {resource}{'/' + sub if sub else ''}"
            found[name] = round(total / count * 1000, 1)
    return found


def operator_histogram(before: Snapshot, after: Snapshot, family: str) -> dict[float, float]:
    return delta(histogram(after.operator, family), histogram(before.operator, family))


# --- the operator -------------------------------------------------------------------------------


def start_operator(kubeconfig: str) -> OperatorProcess:
    """The operator under test, as a process (its flags, if a run needs any, go here)."""
    operator = OperatorProcess(kubeconfig, Path(tempfile.mkdtemp(prefix="bench-scale-op-")))
    operator.start()
    log(f"operator running (pid {operator.process.pid if operator.process else '?'})")
    return operator


@contextmanager
def operator_stopped(operator: OperatorProcess) -> Iterator[None]:
    """The operator stopped for the block (nothing dispatches or charges), then started again
    with the same flags, ports and certificate, as the run's clean-up expects it running."""
    operator.stop()
    log("operator stopped")
    try:
        yield
    finally:
        operator.start()
        log(f"operator running again (pid {operator.process.pid if operator.process else '?'})")


# --- profiling ----------------------------------------------------------------------------------


class Profiler:
    """py-spy record of the operator, stopped with SIGINT (it writes its file then)."""

    def __init__(self, pid: int, output: Path) -> None:
        py_spy = Path(sys.executable).with_name("py-spy")
        self.output = output
        self.process = subprocess.Popen(
            [
                str(py_spy),
                "record",
                "--pid",
                str(pid),
                "--output",
                str(output),
                "--format",
                "speedscope",
                "--rate",
                "100",
                # Only the thread holding the GIL: where the operator's Python time goes
                # (threads blocked in I/O or waiting for the GIL would hide it).
                "--gil",
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            _out, err = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _out, err = self.process.communicate(timeout=10)
        if not self.output.exists():
            log(f"py-spy wrote no profile: {err.decode(errors='replace')[-500:]}")
        else:
            log(f"profile written to {self.output}")


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    state: federation.FederationState
    tools: Toolchain
    hub: Any
    members: dict[str, Any]
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    results: dict[str, Any] = field(default_factory=dict)
    breakdown: dict[str, dict[str, int]] = field(default_factory=dict)
    server_latency: dict[str, float] = field(default_factory=dict)
    cpu_by_process: dict[str, float] = field(default_factory=dict)

    def process_cpu(self, operator: int) -> dict[str, float]:
        """CPU seconds so far of each process of the run, grouped: hub/kube-apiserver, ..."""
        groups: dict[int, str] = {operator: "operator", os.getpid(): "benchmark client"}
        for cluster in self.state.clusters:
            side = "hub" if cluster.role == "hub" else "members"
            for pid in federation.cluster_pids(self.state, cluster, self.tools):
                try:
                    name = Path(f"/proc/{pid}/comm").read_text().strip()
                except OSError:
                    continue
                groups[pid] = f"{side}: {name}"
        found: dict[str, float] = {}
        for pid, group in groups.items():
            try:
                found[group] = found.get(group, 0.0) + cpu_seconds(pid)
            except (OSError, IndexError, ValueError):
                continue
        return found

    @property
    def tenants(self) -> list[str]:
        return [f"bench-{self.run}-t{index:02d}" for index in range(self.args.tenants)]

    @property
    def voucher_name(self) -> str:
        """What the run's jobs name: the tenants' own voucher, or the programme's."""
        return programmes.issued_voucher(self.run) if self.args.programme else VOUCHER

    def prepare_tenants(self, max_runtime_hours: int) -> None:
        if self.args.programme:
            programmes.prepare(
                self.hub,
                self.run,
                self.tenants,
                jobs=self.args.jobs,
                max_runtime_hours=max_runtime_hours,
                companies=self.args.programme,
            )
            return
        per_tenant = math.ceil(self.args.jobs / self.args.tenants)
        for namespace in self.tenants:
            create(self.hub, "/api/v1/namespaces", {"metadata": {"name": namespace}})
            create(
                self.hub,
                f"/apis/{API_VERSION}/namespaces/{namespace}/voucherquotas",
                voucher(per_tenant, max_runtime_hours),
            )

    def members_ready(self) -> bool:
        listed = request_json(self.hub, "GET", f"/apis/{API_VERSION}/memberclusters")
        ready = 0
        for member in listed.get("items", []):
            conditions = (member.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
                ready += 1
        return ready >= len(self.members)

    def compute_jobs(self, namespaces: list[str], run: str) -> list[Post]:
        """The run's ComputeJobs, round-robin over ``namespaces``, labelled with ``run``."""
        posts = []
        for index in range(self.args.jobs):
            namespace = namespaces[index % len(namespaces)]
            duration = self.args.run_duration
            if self.args.memory_run:  # every other job holds its GPU; the others end soon
                duration = "1h" if index % 2 else "5s"
            body = compute_job(
                f"j-{index:05d}",
                run,
                duration,
                "2h" if self.args.memory_run else self.args.max_runtime,
                self.voucher_name,
            )
            path = f"/apis/{API_VERSION}/namespaces/{namespace}/computejobs"
            posts.append(Post(self.hub, path, body))
        return posts

    def floor(self) -> dict[str, Any]:
        namespace = f"bench-floor-{self.run}"
        apis = list(self.members.values())
        for api in apis:
            create(api, "/api/v1/namespaces", {"metadata": {"name": namespace}})
        posts = [
            Post(
                apis[index % len(apis)],
                f"/apis/batch/v1/namespaces/{namespace}/jobs",
                floor_job(f"f-{index:05d}", self.args.run_duration),
            )
            for index in range(self.args.jobs)
        ]
        log(f"floor: creating {len(posts)} batch Jobs directly in {len(apis)} member(s)")
        sent = send_all(posts, self.args.rate, self.args.concurrency)
        errors = [s.error for s in sent if s.error]
        if errors:
            log(f"floor: {len(errors)} creates failed, e.g. {errors[0]}")
        return {
            "floor_jobs_created": len(sent) - len(errors),
            "floor_jobs_per_s": round(rate_of(sent), 1),
            "floor_create_p50_ms": ms(percentile([s.returned - s.started for s in sent], 0.5)),
            "floor_create_p99_ms": ms(percentile([s.returned - s.started for s in sent], 0.99)),
        }

    def webhooks_off_floor(self) -> dict[str, Any]:
        """The same ComputeJobs again, with the webhooks removed (the operator is stopped)."""
        run = f"{self.run}-off"
        namespaces = [f"bench-{run}-t{index:02d}" for index in range(self.args.tenants)]
        return webhooks_off.measure(
            self.hub,
            self.compute_jobs(namespaces, run),
            namespaces,
            f"{RUN_LABEL}={run}",
            rate=self.args.rate,
            concurrency=self.args.concurrency,
        )

    def cleanup_namespaces(self) -> None:
        """On a federation that stays up: remove what this run made (bounded, best effort)."""
        for namespace in self.tenants:
            try:
                request_json(self.hub, "DELETE", f"/api/v1/namespaces/{namespace}")
            except Exception as error:
                log(f"could not delete {namespace}: {describe_error(error)}")
        for api in self.members.values():
            try:
                request_json(api, "DELETE", f"/api/v1/namespaces/bench-floor-{self.run}")
            except Exception as error:
                if "404" not in describe_error(error):
                    log(f"could not delete the floor namespace: {describe_error(error)}")

        def gone() -> bool:
            listed = request_json(self.hub, "GET", "/api/v1/namespaces")
            names = {item["metadata"]["name"] for item in listed.get("items", [])}
            return not names.intersection(self.tenants)

        wait_until(gone, 180, "the run's tenant namespaces to be deleted")
        if self.args.programme:
            programmes.delete(self.hub, self.run)


@dataclass
class Measured:
    """What one run observed, before it is turned into figures."""

    pid: int
    idle: dict[str, int]
    before: Snapshot
    submitted: Snapshot
    after: Snapshot
    sent: list[Sent]
    admitted: dict[str, Sent]
    tracker: Tracker
    remote: RemoteJobs
    watch_lists: int
    dispatched_at: float
    dispatched_cpu: float
    memory: dict[str, int]
    memory_after: dict[str, int]
    finished_at: float


def run(bench: Bench, operator: OperatorProcess) -> None:
    """The main phase, measured; then the floors, the operator stopped for the second."""
    measured = main_phase(bench, operator)
    figures(bench, measured)
    if bench.args.memory_run or bench.args.no_floor:
        return
    results = bench.results
    results.update(bench.floor())
    results["dispatch_to_floor_ratio"] = ratio(results, "dispatched_per_s", "floor_jobs_per_s")
    results["remote_to_floor_ratio"] = ratio(results, "remote_jobs_per_s", "floor_jobs_per_s")
    with operator_stopped(operator):
        results.update(bench.webhooks_off_floor())
    results["webhooks_on_off_ratio"] = ratio(
        results, "submitted_per_s", "webhooks_off_creates_per_s"
    )


def ratio(results: dict[str, Any], numerator: str, denominator: str) -> float:
    over, under = results.get(numerator, math.nan), results.get(denominator, math.nan)
    return round(over / under, 3) if under and under > 0 else math.nan


def main_phase(bench: Bench, operator: OperatorProcess) -> Measured:
    args = bench.args
    pid = operator.process.pid if operator.process is not None else 0
    wait_until(bench.members_ready, 180, "every MemberCluster to be Ready")
    time.sleep(2)  # let the start-up writes settle before the baseline
    idle = memory_bytes(pid)
    before = Snapshot.take(bench, operator, pid)
    tracker = Tracker()
    watcher = watch_jobs(bench.hub, bench.run, tracker)
    remote = RemoteJobs()
    member_watchers = watch_remote_jobs(bench.members, bench.tenants, remote)
    watchers = [watcher, *member_watchers]
    wait_until(lambda: all(w.synced for w in watchers), 30, "the benchmark's watches")
    profiler = Profiler(pid, args.profile) if args.profile else None
    posts = bench.compute_jobs(bench.tenants, bench.run)
    what = "all at once" if args.rate <= 0 else f"at {args.rate:g}/s"
    log(f"submitting {len(posts)} ComputeJobs {what} from {args.concurrency} threads")
    sent = send_all(posts, args.rate, args.concurrency)
    submitted = Snapshot.take(bench, operator, pid)
    errors = Counter(s.error for s in sent if s.error)
    names = [post.body["metadata"]["name"] for post in posts]
    admitted = {name: s for name, s in zip(names, sent, strict=True) if s.error is None}
    log(f"submitted: {len(admitted)} admitted, {sum(errors.values())} refused or failed")
    for error, count in errors.most_common(3):
        log(f"  {count} x {error}")
    if args.memory_run:
        settled = settle(tracker, len(admitted), args.timeout)
        log(f"memory run: {tracker.counts()} ({'settled' if settled else 'not settled'})")
    else:
        wait_until(
            lambda: tracker.counts()["dispatched"] >= len(admitted),
            args.timeout,
            f"{len(admitted)} jobs to be Dispatched",
            tracker.counts,
        )
    dispatched_at, dispatched_cpu = time.monotonic(), cpu_seconds(pid)
    if profiler is not None:
        profiler.stop()
    memory = memory_bytes(pid)
    if not args.memory_run:
        wait_until(
            lambda: tracker.counts()["finished"] >= len(admitted),
            args.timeout,
            f"{len(admitted)} jobs to finish",
            tracker.counts,
        )
    finished_at = time.monotonic()
    after = Snapshot.take(bench, operator, pid)
    for each in watchers:
        each.stop()
    return Measured(
        pid=pid,
        idle=idle,
        before=before,
        submitted=submitted,
        after=after,
        sent=sent,
        admitted=admitted,
        tracker=tracker,
        remote=remote,
        watch_lists=watcher.lists,
        dispatched_at=dispatched_at,
        dispatched_cpu=dispatched_cpu,
        memory=memory,
        memory_after=memory_bytes(pid),
        finished_at=finished_at,
    )


def figures(bench: Bench, m: Measured) -> None:
    """Turn what was measured into the figures of the report."""
    with m.tracker.lock:
        dispatched = dict(m.tracker.dispatched)
        finished = len(m.tracker.finished)
        phases = Counter(m.tracker.phases.values())
        clusters = Counter(m.tracker.clusters.values())
    with m.remote.lock:
        remote = dict(m.remote.created)
    first = min((s.started for s in m.sent), default=math.nan)
    latencies, span = arrivals(dispatched, m.admitted, first)
    remote_latencies, remote_span = arrivals(remote, m.admitted, first)
    before, after = m.before, m.after
    webhook = delta(webhook_buckets(m.submitted.hub, WEBHOOK), webhook_buckets(before.hub, WEBHOOK))
    inside = operator_histogram(before, m.submitted, "suanli_admission_duration_seconds")
    lag = operator_histogram(before, after, "suanli_event_loop_lag_seconds")
    gc_pauses = operator_histogram(before, after, "suanli_gc_pause_seconds")
    gc_sums = {
        generation: total
        - histogram_means(before.operator, GC_METRIC, ("generation",)).get(generation, (0.0, 0.0))[
            0
        ]
        for generation, (total, _count) in histogram_means(
            after.operator, GC_METRIC, ("generation",)
        ).items()
    }
    creates = [s.returned - s.started for s in m.sent]
    hub_calls, member_calls = operator_requests(before, after, len(m.sent), m.watch_lists)
    jobs = max(len(m.admitted), 1)
    window = after.taken - before.taken
    bench.results.update(
        jobs_submitted=len(m.sent),
        jobs_admitted=len(m.admitted),
        jobs_dispatched=len(dispatched),
        jobs_finished=finished,
        submitted_per_s=round(rate_of(m.sent), 1),
        dispatched_per_s=round(len(dispatched) / span, 1) if span > 0 else math.nan,
        dispatch_span_s=round(span, 1),
        latency_p50_ms=ms(percentile(latencies, 0.50)),
        latency_p95_ms=ms(percentile(latencies, 0.95)),
        latency_p99_ms=ms(percentile(latencies, 0.99)),
        latency_max_ms=ms(max(latencies, default=math.nan)),
        remote_jobs_created=len(remote),
        remote_jobs_per_s=round(len(remote) / remote_span, 1) if remote_span > 0 else math.nan,
        remote_span_s=round(remote_span, 1),
        remote_latency_p50_ms=ms(percentile(remote_latencies, 0.50)),
        remote_latency_p95_ms=ms(percentile(remote_latencies, 0.95)),
        remote_latency_p99_ms=ms(percentile(remote_latencies, 0.99)),
        remote_latency_max_ms=ms(max(remote_latencies, default=math.nan)),
        webhook_calls=round(webhook.get(math.inf, 0.0)),
        webhook_p50_ms=ms(quantile(webhook, 0.50)),
        webhook_p99_ms=ms(quantile(webhook, 0.99)),
        webhook_within_25ms=round(fraction_within(webhook, 0.025), 4),
        operator_admission_p50_ms=ms(quantile(inside, 0.50)),
        operator_admission_p99_ms=ms(quantile(inside, 0.99)),
        loop_lag_p50_ms=ms(quantile(lag, 0.50)),
        loop_lag_p99_ms=ms(quantile(lag, 0.99)),
        gc_collections=round(gc_pauses.get(math.inf, 0.0)),
        gc_cpu_s=round(
            sum(
                delta(
                    counter(after.operator, "suanli_gc_cpu_seconds"),
                    counter(before.operator, "suanli_gc_cpu_seconds"),
                ).values()
            ),
            2,
        ),
        gc_pause_s=round(sum(gc_sums.values()), 2),
        gc_pause_gen2_s=round(gc_sums.get(("2",), 0.0), 2),
        gc_pause_p99_ms=ms(quantile(gc_pauses, 0.99)),
        create_p50_ms=ms(percentile(creates, 0.50)),
        create_p99_ms=ms(percentile(creates, 0.99)),
        operator_cpu_s_per_job_to_dispatch=round((m.dispatched_cpu - before.cpu) / jobs, 4),
        operator_cpu_s_per_job=round((after.cpu - before.cpu) / jobs, 4),
        operator_cpu_share=round((after.cpu - before.cpu) / window, 2),
        machine_cpu_busy=round((after.machine[0] - before.machine[0]) / window, 2),
        operator_rss_idle_mb=round(m.idle["VmRSS"] / 1e6, 1),
        operator_rss_mb=round(m.memory["VmRSS"] / 1e6, 1),
        operator_rss_end_mb=round(m.memory_after["VmRSS"] / 1e6, 1),
        operator_peak_rss_mb=round(m.memory_after["VmHWM"] / 1e6, 1),
        hub_requests_per_job=round(sum(hub_calls.values()) / jobs, 2),
        member_requests_per_job=round(sum(member_calls.values()) / jobs, 2),
        api_requests_per_job=round(
            (sum(hub_calls.values()) + sum(member_calls.values())) / jobs, 2
        ),
        window_s=round(window, 1),
        finish_wait_s=round(m.finished_at - m.dispatched_at, 1),
    )
    bench.results["phases"] = dict(phases)
    bench.results["clusters"] = dict(clusters)
    bench.breakdown = {
        "hub": dict(hub_calls.most_common()),
        "members": dict(member_calls.most_common()),
    }
    bench.server_latency = server_latencies(before, after)
    used = delta(after.processes, before.processes)
    used["everything else"] = (after.machine[0] - before.machine[0]) - sum(used.values())
    bench.cpu_by_process = {
        group: round(seconds / window, 2)
        for group, seconds in sorted(used.items(), key=lambda item: -item[1])
    }


def arrivals(
    seen: dict[str, float], admitted: dict[str, Sent], first: float
) -> tuple[list[float], float]:
    """Each admitted job's time from its create's return to when it was ``seen`` (never
    below 0: a watch event may be handled before the create's answer), and the span from
    the first create to the last job seen."""
    latencies = [max(0.0, seen[name] - s.returned) for name, s in admitted.items() if name in seen]
    return latencies, max(seen.values(), default=math.nan) - first


def settle(tracker: Tracker, admitted: int, timeout: float) -> bool:
    """Memory run: every job has a status, and nothing was dispatched for 15 s."""
    deadline = time.monotonic() + timeout
    if not wait_until(
        lambda: tracker.counts()["seen"] >= admitted, timeout, "every job's status", tracker.counts
    ):
        return False
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = tracker.counts()["dispatched"]
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= 15:
            return True
        time.sleep(0.5)
    return False


# --- reporting ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    key: str  # in the results
    met: Callable[[float], bool]
    untested: str | None  # why this run's conditions do not test it; None when they do


def targets(args: argparse.Namespace, results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue, with whether this run's conditions test it."""
    burst = None if args.rate <= 0 else "not tested (needs --rate 0)"
    floors = "not tested (--no-floor)" if args.no_floor else None
    if args.memory_run:
        burst = floors = "not tested (a memory run)"
    submitters = None
    if args.concurrency < TARGET_WEBHOOK_CONCURRENCY:
        submitters = f"not tested (needs --concurrency {TARGET_WEBHOOK_CONCURRENCY})"
    latency = None
    if args.rate <= 0:
        latency = "n/a at rate 0"
    elif abs(args.rate - TARGET_LATENCY_RATE) > 1e-9 or args.memory_run:
        latency = f"not tested (needs --rate {TARGET_LATENCY_RATE:g})"
    rss = None if args.memory_run and args.jobs >= MEMORY_RUN_JOBS else "not tested (--memory-run)"
    rows = (
        Target(
            "webhook p99 < 25 ms, 50 submitters (ms)",
            "webhook_p99_ms",
            lambda v: v < TARGET_WEBHOOK_P99_S * 1000,
            burst or submitters,
        ),
        Target(
            "creates/s through the webhooks >= 0.8 x webhooks off",
            "webhooks_on_off_ratio",
            lambda v: v >= TARGET_WEBHOOKS_RATIO,
            burst or floors,
        ),
        Target(
            "remote Jobs/s >= 0.5 x the direct-create floor",
            "remote_to_floor_ratio",
            lambda v: v >= TARGET_FLOOR_RATIO,
            burst or floors,
        ),
        Target(
            "submit-to-remote-Job p99 < 1 s at 20 jobs/s (ms)",
            "remote_latency_p99_ms",
            lambda v: v < TARGET_LATENCY_P99_S * 1000,
            latency,
        ),
        Target(
            "operator RSS < 300 MB with 10,000 jobs (MB, issue 9)",
            "operator_peak_rss_mb",
            lambda v: v < TARGET_RSS_BYTES / 1e6,
            rss,
        ),
    )
    verdicts = []
    for target in rows:
        value = results.get(target.key, math.nan)
        if target.untested:
            verdict = target.untested
        elif isinstance(value, float) and math.isnan(value):
            verdict = "no figure"
        else:
            verdict = "met" if target.met(value) else "MISSED"
        verdicts.append({"target": target.name, "value": value, "verdict": verdict})
    return verdicts


LABELS: Final = {
    "jobs_submitted": "ComputeJobs submitted",
    "jobs_admitted": "admitted",
    "jobs_dispatched": "dispatched (seen by the watch)",
    "jobs_finished": "finished",
    "submitted_per_s": "creates/s (hub, through the webhooks)",
    "webhooks_off_creates_per_s": "floor: creates/s with the webhooks off",
    "webhooks_on_off_ratio": "creates/s through the webhooks : webhooks off",
    "webhooks_off_with_finalizer": "floor: webhooks-off jobs with a finalizer",
    "dispatched_per_s": "dispatched jobs/s (hub status)",
    "dispatch_span_s": "first create to last dispatched (s)",
    "remote_jobs_created": "remote Jobs created (member watches)",
    "remote_jobs_per_s": "remote Jobs created/s",
    "remote_span_s": "first create to last remote Job (s)",
    "floor_jobs_per_s": "floor: batch Jobs created in members /s",
    "dispatch_to_floor_ratio": "dispatched/s : floor/s",
    "remote_to_floor_ratio": "remote Jobs/s : floor/s",
    "latency_p50_ms": "submit-to-dispatched p50 (ms)",
    "latency_p95_ms": "submit-to-dispatched p95 (ms)",
    "latency_p99_ms": "submit-to-dispatched p99 (ms)",
    "latency_max_ms": "submit-to-dispatched max (ms)",
    "remote_latency_p50_ms": "submit-to-remote-Job p50 (ms)",
    "remote_latency_p95_ms": "submit-to-remote-Job p95 (ms)",
    "remote_latency_p99_ms": "submit-to-remote-Job p99 (ms)",
    "remote_latency_max_ms": "submit-to-remote-Job max (ms)",
    "webhook_calls": "webhook calls (API server histogram)",
    "webhook_p50_ms": "webhook p50 (ms, API server)",
    "webhook_p99_ms": "webhook p99 (ms, API server)",
    "webhook_within_25ms": "webhook calls within 25 ms (share)",
    "operator_admission_p50_ms": "admission in the operator p50 (ms)",
    "operator_admission_p99_ms": "admission in the operator p99 (ms)",
    "loop_lag_p50_ms": "operator event loop lag p50 (ms)",
    "loop_lag_p99_ms": "operator event loop lag p99 (ms)",
    "gc_collections": "operator garbage collections",
    "gc_cpu_s": "operator GC CPU, total (s)",
    "gc_pause_s": "operator GC pauses, total (s)",
    "gc_pause_gen2_s": "operator GC pauses, full collections (s)",
    "gc_pause_p99_ms": "operator GC pause p99 (ms)",
    "create_p50_ms": "client create p50 (ms)",
    "create_p99_ms": "client create p99 (ms)",
    "floor_create_p50_ms": "floor: client create p50 (ms)",
    "floor_create_p99_ms": "floor: client create p99 (ms)",
    "webhooks_off_create_p50_ms": "webhooks off: client create p50 (ms)",
    "webhooks_off_create_p99_ms": "webhooks off: client create p99 (ms)",
    "operator_cpu_s_per_job_to_dispatch": "operator CPU s/job, until all dispatched",
    "operator_cpu_s_per_job": "operator CPU s/job, whole life",
    "operator_cpu_share": "operator CPU (cores, mean over the window)",
    "machine_cpu_busy": "whole machine CPU busy (cores, mean)",
    "operator_rss_idle_mb": "operator RSS idle before (MB)",
    "operator_rss_mb": "operator RSS when dispatched/settled (MB)",
    "operator_rss_end_mb": "operator RSS at the end (MB)",
    "operator_peak_rss_mb": "operator peak RSS, VmHWM (MB)",
    "hub_requests_per_job": "operator requests to the hub /job",
    "member_requests_per_job": "operator requests to members /job",
    "api_requests_per_job": "operator API requests /job",
    "window_s": "measured window (s)",
    "finish_wait_s": "waiting for the jobs to finish (s)",
}


def report(
    args: argparse.Namespace, bench: Bench, verdicts: list[dict[str, Any]], previous: Any
) -> None:
    old = (previous or {}).get("results", {})
    header = ["figure", "value"] + (["previous"] if previous else [])
    rows = []
    for key, label in LABELS.items():
        if key not in bench.results:
            continue
        row: list[object] = [label, bench.results[key]]
        if previous:
            row.append(old.get(key, math.nan))
        rows.append(row)
    print()
    print(table(rows, header))
    print()
    print(
        table(
            [[v["target"], v["value"], v["verdict"]] for v in verdicts],
            ["target", "value", "verdict"],
        )
    )
    for side, calls in bench.breakdown.items():
        if calls:
            jobs = max(bench.results.get("jobs_admitted", 0), 1)
            print()
            print(
                table(
                    [[call, count, count / jobs] for call, count in calls.items()],
                    [f"operator requests to the {side}", "count", "per job"],
                )
            )
    if bench.server_latency:
        print()
        print(
            table(
                list(bench.server_latency.items()),
                ["API server time per request (mean)", "ms"],
            )
        )
    if bench.cpu_by_process:
        print()
        print(table(list(bench.cpu_by_process.items()), ["CPU by process (cores, mean)", "cores"]))
    print()
    print(f"phases: {bench.results.get('phases')}  clusters: {bench.results.get('clusters')}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--jobs", type=int, default=None, help="ComputeJobs (default 2000)")
    parser.add_argument("--rate", type=float, default=0.0, help="jobs/s offered; 0: all at once")
    parser.add_argument("--concurrency", type=int, default=50, help="submitting threads")
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument(
        "--programme",
        type=int,
        default=0,
        metavar="COMPANIES",
        help="pay with a VoucherProgram whose vouchers the operator issues to the tenants, "
        "which belong to this many companies (0: a hand-written voucher per tenant)",
    )
    parser.add_argument("--members", type=int, default=3, choices=range(1, 9))
    parser.add_argument("--nodes", type=int, default=100, help="kwok nodes per member")
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--run-duration", default="20s", help="how long each job's pod runs")
    parser.add_argument("--max-runtime", default="10m", help="each job's maxRuntime")
    parser.add_argument(
        "--memory-run", action="store_true", help=f"{MEMORY_RUN_JOBS:,} jobs; print the RSS"
    )
    parser.add_argument(
        "--no-floor", action="store_true", help="skip both floors (batch Jobs, webhooks off)"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="bound on each wait (s)")
    parser.add_argument("--profile", type=Path, help="py-spy the operator into this file")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--compare", type=Path, help="an earlier --json file to show beside")
    parser.add_argument("--keep", action="store_true", help="leave the federation up")
    parser.add_argument("--federation", default="bench-scale")
    args = parser.parse_args()
    if args.jobs is None:
        args.jobs = MEMORY_RUN_JOBS if args.memory_run else 2000
    if args.memory_run:
        args.rate = 0.0
    return args


def write_json(path: Path, args: argparse.Namespace, bench: Bench, verdicts: Any) -> None:
    document = {
        "config": {
            key: str(value) if isinstance(value, Path) else value
            for key, value in vars(args).items()
        },
        "results": bench.results,
        "operator_requests": bench.breakdown,
        "server_latency_ms": bench.server_latency,
        "cpu_by_process_cores": bench.cpu_by_process,
        "targets": verdicts,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path.write_text(json.dumps(document, indent=2, default=str))
    log(f"figures written to {path}")


def main() -> int:
    args = parse_args()
    previous = json.loads(args.compare.read_text()) if args.compare else None

    tools = ensure_toolchain()
    started_here = federation.load_state(args.federation) is None
    spec = federation_spec(args.members, args.nodes, args.gpus_per_node)
    t0 = time.monotonic()
    state = federation.up(spec, tools, name=args.federation, log=log)
    up_seconds = time.monotonic() - t0
    pool = args.concurrency + 4
    hub = connect(state.hub.kubeconfig, pool)
    members = {member.name: connect(member.kubeconfig, pool) for member in state.members}
    operator: OperatorProcess | None = None
    bench = Bench(args, state, tools, hub, members)
    try:
        with federation.api_client(state.hub.kubeconfig) as admin:
            install.install_api(admin)
            # The operator first: on a reused federation the webhooks (failing closed) still
            # point at the previous run's operator until this one takes them over.
            operator = start_operator(state.hub.kubeconfig)
            install.join_members(admin, state.members)
        leftovers = request_json(
            hub, "GET", f"/apis/{API_VERSION}/computejobs", query=[("limit", 1)]
        )
        if leftovers.get("items"):
            log("note: the hub already holds ComputeJobs (a reused federation): expect noise")
        bench.prepare_tenants(2 if args.memory_run else hours(args.max_runtime))
        try:
            run(bench, operator)
        except Exception:  # report what was measured; the set-up itself worked
            log(f"the run failed:\n{traceback.format_exc()}")
            if operator.running:
                log(f"operator log (tail):\n{operator.log()[-3000:]}")
    finally:
        if operator is not None and operator.running and not started_here and not args.keep:
            bench.cleanup_namespaces()
        if operator is not None:
            operator.stop()
        if started_here and not args.keep:
            federation.down(args.federation, tools, log=log)
    bench.results["federation_up_s"] = round(up_seconds, 1)
    verdicts = targets(args, bench.results)
    report(args, bench, verdicts, previous)
    if args.json:
        write_json(args.json, args, bench, verdicts)
    return 0


def hours(duration: str) -> int:
    """Whole hours (rounded up) of a duration such as 10m, 1h30m, 90s."""
    seconds, number = 0, ""
    units = {"h": 3600, "m": 60, "s": 1}
    for char in duration:
        if char.isdigit():
            number += char
        elif char in units and number:
            seconds += int(number) * units[char]
            number = ""
    return max(1, math.ceil(seconds / 3600))


if __name__ == "__main__":
    sys.exit(main())
