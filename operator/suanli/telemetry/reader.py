"""Reading accelerator exporters: suanli's own, NVIDIA's dcgm-exporter and Ascend's npu-exporter.

Two layers, kept apart so the decision code can be tested without a network:

- :func:`parse_metrics` turns Prometheus text into a typed :class:`TelemetrySnapshot`: per node,
  per GPU, utilization, framebuffer memory, health. It uses prometheus_client's parser and looks
  metric families up by name, so it is indifferent to label order, extra labels (pci_bus_id,
  DCGM_FI_DRIVER_VERSION, err_code, ...), and whether ECC totals are typed gauge or counter.
- Ascend's npu-exporter has other names (``npu_chip_info_utilization``, ``..._hbm_used_memory``
  and ``..._hbm_total_memory`` in MB, ``..._health_status``) and labels (``id``, ``vdie_id``,
  ``model_name``) and no node label: its series are read into the same per-device view, under
  the node the endpoint's ``#node=<name>`` fragment names (the exporter serves one node).
- :class:`TelemetryEndpoint` fetches one exporter with aiohttp (the operator is async) under a
  timeout and keeps its :class:`EndpointStatus`: answering or not, how old its data is, stale
  or fresh. The last good snapshot is kept when the endpoint stops answering, so the caller
  decides how to discount it; ``stale`` is the verdict for capacity decisions.

Data age is taken from the exporter's own ``suanli_exporter_last_read_timestamp_seconds`` when
present (an exporter whose NVML reads hang keeps answering with old data), else from the fetch
time. The former compares clocks of two hosts: fine with NTP, and ``max_age`` is in tens of
seconds.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from suanli.api.membercluster import endpoint_node
from suanli.telemetry import names

# DCGM reports a missing value as a sentinel: int64 blanks start at 0x7ffffffffffffff0 and
# double blanks at 2**47. Anything that large is "no value", never a reading.
_DCGM_BLANK: Final = float(2**47)
DEFAULT_MAX_AGE: Final = 60.0
DEFAULT_TIMEOUT: Final = 5.0


class TelemetryError(Exception):
    """An exporter could not be read; the message says why, for a condition or event."""


class HealthIssue(enum.StrEnum):
    """Why a GPU should not get new work."""

    XID_ERROR = "XidError"  # the driver reported an XID critical error
    ECC_UNCORRECTED = "EccUncorrected"  # uncorrectable memory errors since the driver loaded
    DEVICE_UNHEALTHY = "DeviceUnhealthy"  # the vendor's exporter says so (npu health_status 0)


@dataclass(frozen=True)
class PodRef:
    """A pod dcgm-exporter says is using the GPU."""

    namespace: str
    name: str
    container: str


@dataclass(frozen=True)
class GpuTelemetry:
    """One GPU (or MIG instance) as an exporter reported it; None where it reported nothing."""

    node: str
    index: int
    uuid: str
    model: str
    gpu_instance: str | None = None  # MIG GPU instance id, when partitioned
    utilization_percent: float | None = None
    memory_copy_utilization_percent: float | None = None
    fb_used_mib: float | None = None
    fb_free_mib: float | None = None
    fb_reserved_mib: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    last_xid: int | None = None
    ecc_uncorrected_volatile: int | None = None
    pods: tuple[PodRef, ...] = ()
    device_healthy: bool | None = None  # a vendor's own health verdict, where it reports one

    @property
    def health_issues(self) -> frozenset[HealthIssue]:
        issues = set()
        if self.last_xid:
            issues.add(HealthIssue.XID_ERROR)
        if self.ecc_uncorrected_volatile:
            issues.add(HealthIssue.ECC_UNCORRECTED)
        if self.device_healthy is False:
            issues.add(HealthIssue.DEVICE_UNHEALTHY)
        return frozenset(issues)

    @property
    def healthy(self) -> bool:
        return not self.health_issues


@dataclass(frozen=True)
class NodeTelemetry:
    """The GPUs of one node, in index order."""

    name: str
    gpus: tuple[GpuTelemetry, ...]


@dataclass(frozen=True)
class TelemetrySnapshot:
    """Everything one scrape said, with the times needed to judge its freshness."""

    read_at: float  # epoch seconds when the text was fetched
    data_at: float  # epoch seconds when the exporter read the GPUs (read_at if it does not say)
    nodes: tuple[NodeTelemetry, ...]
    exporter_up: bool | None = None  # suanli_exporter_up; None from exporters without it

    @property
    def gpus(self) -> tuple[GpuTelemetry, ...]:
        return tuple(gpu for node in self.nodes for gpu in node.gpus)

    def node(self, name: str) -> NodeTelemetry | None:
        return next((node for node in self.nodes if node.name == name), None)


# The metric families a GPU's values come from.
_GPU_METRICS: Final = frozenset(
    {
        names.GPU_UTIL,
        names.MEM_COPY_UTIL,
        names.FB_USED,
        names.FB_FREE,
        names.FB_RESERVED,
        names.GPU_TEMP,
        names.POWER_USAGE,
        names.XID_ERRORS,
        names.ECC_DBE_VOL_TOTAL,
    }
)

# npu-exporter's families, each read into the dcgm-exporter field of the same meaning (memory in
# MB there, MiB here: npu-smi's "MB" are MiB, as its totals of 65536 for 64 GB show).
_NPU_METRICS: Final[dict[str, str]] = {
    names.NPU_UTIL: names.GPU_UTIL,
    names.NPU_HBM_USED: names.FB_USED,
    names.NPU_HBM_TOTAL: names.NPU_HBM_TOTAL,
    names.NPU_HEALTH: names.NPU_HEALTH,
    names.NPU_TEMP: names.GPU_TEMP,
    names.NPU_POWER: names.POWER_USAGE,
}

_GpuKey = tuple[str, str, str | None]  # node, UUID, MIG instance


@dataclass
class _GpuDraft:
    """A GPU being assembled from the series that mention it."""

    node: str
    index: int
    uuid: str
    model: str
    gpu_instance: str | None
    values: dict[str, float] = field(default_factory=dict)  # by metric family name
    pods: dict[tuple[str, str, str], PodRef] = field(default_factory=dict)

    def build(self) -> GpuTelemetry:
        def number(name: str) -> float | None:
            value = self.values.get(name)
            return None if value is None else float(value)

        def count(name: str) -> int | None:
            value = self.values.get(name)
            return None if value is None else int(value)

        free = number(names.FB_FREE)
        hbm_total, used = number(names.NPU_HBM_TOTAL), number(names.FB_USED)
        if free is None and hbm_total is not None and used is not None:
            free = max(0.0, hbm_total - used)
        health = self.values.get(names.NPU_HEALTH)

        return GpuTelemetry(
            node=self.node,
            index=self.index,
            uuid=self.uuid,
            model=self.model,
            gpu_instance=self.gpu_instance,
            utilization_percent=number(names.GPU_UTIL),
            memory_copy_utilization_percent=number(names.MEM_COPY_UTIL),
            fb_used_mib=number(names.FB_USED),
            fb_free_mib=free,
            fb_reserved_mib=number(names.FB_RESERVED),
            temperature_c=number(names.GPU_TEMP),
            power_w=number(names.POWER_USAGE),
            last_xid=count(names.XID_ERRORS),
            ecc_uncorrected_volatile=count(names.ECC_DBE_VOL_TOTAL),
            pods=tuple(self.pods[key] for key in sorted(self.pods)),
            device_healthy=None if health is None else health == 1,
        )


def parse_metrics(
    text: str, *, read_at: float, default_node: str | None = None
) -> TelemetrySnapshot:
    """Parse an exporter's Prometheus text into a snapshot.

    Args:
        text: The body of ``/metrics``.
        read_at: When the text was fetched (epoch seconds).
        default_node: The node for series without a Hostname label, if the caller knows it.

    Raises:
        TelemetryError: The text is not Prometheus text, or a GPU series lacks the labels
            that place it (gpu, UUID, a node).
    """
    drafts: dict[_GpuKey, _GpuDraft] = {}
    exporter_up: bool | None = None
    data_at = read_at
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as error:
        raise TelemetryError(f"not Prometheus text: {error}") from None
    for family in families:
        if family.name == names.EXPORTER_UP and family.samples:
            exporter_up = family.samples[0].value == 1
        elif family.name == names.EXPORTER_LAST_READ and family.samples:
            data_at = family.samples[0].value
        npu_field = _NPU_METRICS.get(family.name)
        if family.name not in _GPU_METRICS and npu_field is None:
            continue
        for sample in family.samples:
            if npu_field is None:
                draft = _draft_for(drafts, sample.labels, default_node)
            else:
                draft = _npu_draft_for(drafts, sample.labels, default_node)
            value = sample.value
            if math.isnan(value) or value >= _DCGM_BLANK:
                continue
            # Shared GPUs repeat a series per pod: the first value stands for the GPU.
            draft.values.setdefault(npu_field or family.name, value)
    by_node: dict[str, list[GpuTelemetry]] = {}
    for draft in drafts.values():
        by_node.setdefault(draft.node, []).append(draft.build())
    nodes = tuple(
        NodeTelemetry(
            name=node,
            gpus=tuple(sorted(gpus, key=lambda g: (g.index, g.gpu_instance or ""))),
        )
        for node, gpus in sorted(by_node.items())
    )
    return TelemetrySnapshot(read_at=read_at, data_at=data_at, nodes=nodes, exporter_up=exporter_up)


def _draft_for(
    drafts: dict[_GpuKey, _GpuDraft], labels: Mapping[str, str], default_node: str | None
) -> _GpuDraft:
    node = labels.get(names.LABEL_HOSTNAME) or labels.get(names.LABEL_HOSTNAME_LOWER)
    node = node or default_node
    uuid = labels.get(names.LABEL_UUID)
    index_text = labels.get(names.LABEL_GPU, "")
    if not node or not uuid or not index_text.isdigit():
        raise TelemetryError(
            "a GPU series lacks the gpu, UUID or Hostname label (and no default node was"
            f" given): {dict(labels)}"
        )
    instance = labels.get(names.LABEL_GPU_INSTANCE) or None
    model = labels.get(names.LABEL_MODEL, "")
    draft = _device_draft(drafts, node, uuid, index=int(index_text), model=model, instance=instance)
    _add_pod(draft, labels, names.LABEL_NAMESPACE, names.LABEL_POD, names.LABEL_CONTAINER)
    return draft


def _npu_draft_for(
    drafts: dict[_GpuKey, _GpuDraft], labels: Mapping[str, str], default_node: str | None
) -> _GpuDraft:
    """The device an npu-exporter series is about: by ``id`` on the endpoint's node."""
    node = labels.get(names.LABEL_HOSTNAME) or default_node
    index_text = labels.get(names.NPU_LABEL_ID, "")
    if not node or not index_text.isdigit():
        raise TelemetryError(
            "an npu-exporter series lacks the id label, or the endpoint names no node (add "
            f"#node=<node name> to its URL): {dict(labels)}"
        )
    uuid = labels.get(names.NPU_LABEL_VDIE) or f"{node}/npu-{index_text}"
    model = labels.get(names.NPU_LABEL_MODEL, "")
    draft = _device_draft(drafts, node, uuid, index=int(index_text), model=model, instance=None)
    _add_pod(
        draft, labels, names.NPU_LABEL_NAMESPACE, names.NPU_LABEL_POD, names.NPU_LABEL_CONTAINER
    )
    return draft


def _device_draft(
    drafts: dict[_GpuKey, _GpuDraft],
    node: str,
    uuid: str,
    *,
    index: int,
    model: str,
    instance: str | None,
) -> _GpuDraft:
    """The draft of one device (or MIG instance), made on its first series."""
    key = (node, uuid, instance)
    draft = drafts.get(key)
    if draft is None:
        draft = drafts[key] = _GpuDraft(
            node=node, index=index, uuid=uuid, model=model, gpu_instance=instance
        )
    return draft


def _add_pod(
    draft: _GpuDraft, labels: Mapping[str, str], namespace: str, pod: str, container: str
) -> None:
    """The pod a series names (under the exporter's own label names), if any, on the device."""
    name = labels.get(pod)
    if name:
        ref = PodRef(
            namespace=labels.get(namespace, ""), name=name, container=labels.get(container, "")
        )
        draft.pods[(ref.namespace, ref.name, ref.container)] = ref


async def fetch_metrics(
    session: aiohttp.ClientSession,
    url: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    default_node: str | None = None,
    clock: Callable[[], float] = time.time,
) -> TelemetrySnapshot:
    """GET ``url`` and parse it; every failure is a :class:`TelemetryError`."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            if response.status != 200:
                raise TelemetryError(f"{url} answered HTTP {response.status}")
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError) as error:
        reason = f"no answer within {timeout:g}s" if isinstance(error, TimeoutError) else error
        raise TelemetryError(f"cannot read {url}: {reason}") from None
    return parse_metrics(text, read_at=clock(), default_node=default_node)


@dataclass(frozen=True)
class EndpointStatus:
    """What is known about one exporter endpoint at a moment."""

    url: str
    answering: bool  # the last attempt succeeded
    stale: bool  # no usable data: never read, not answering, or data older than max_age
    snapshot: TelemetrySnapshot | None  # the last good one, kept when the endpoint fails
    age_seconds: float | None  # of the snapshot's data
    last_error: str | None = None
    consecutive_failures: int = 0


class TelemetryEndpoint:
    """One exporter the hub reads: fetches it and judges whether its data can be trusted.

    Args:
        url: The exporter's metrics URL.
        max_age: Data older than this many seconds is stale.
        timeout: Longest one fetch may take.
        default_node: Node name for series without a Hostname label.
        clock: Wall clock, epoch seconds.
    """

    def __init__(
        self,
        url: str,
        *,
        max_age: float = DEFAULT_MAX_AGE,
        timeout: float = DEFAULT_TIMEOUT,
        default_node: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.max_age = max_age
        self.timeout = timeout
        # "#node=<name>" names the node of an exporter whose series do not (npu-exporter).
        self._fetch_url = url.split("#", 1)[0]
        self._default_node = default_node or endpoint_node(url)
        self._clock = clock
        self._snapshot: TelemetrySnapshot | None = None
        self._answering = False
        self._error: str | None = "not read yet"
        self._failures = 0

    async def refresh(self, session: aiohttp.ClientSession) -> EndpointStatus:
        """Fetch the endpoint once and return the resulting status."""
        try:
            snapshot = await fetch_metrics(
                session,
                self._fetch_url,
                timeout=self.timeout,
                default_node=self._default_node,
                clock=self._clock,
            )
        except TelemetryError as error:
            self._record_failure(str(error))
        else:
            if snapshot.exporter_up is False:
                # The exporter answers but cannot read NVML: its GPU data is gone, not zero.
                self._record_failure(f"{self.url} reports it cannot read the GPUs (up=0)")
            else:
                self._snapshot = snapshot
                self._answering = True
                self._error = None
                self._failures = 0
        return self.status()

    def status(self, now: float | None = None) -> EndpointStatus:
        """The status at ``now`` (default: the clock): data ages even without refreshes."""
        now = self._clock() if now is None else now
        age = None if self._snapshot is None else max(0.0, now - self._snapshot.data_at)
        return EndpointStatus(
            url=self.url,
            answering=self._answering,
            stale=age is None or not self._answering or age > self.max_age,
            snapshot=self._snapshot,
            age_seconds=age,
            last_error=self._error,
            consecutive_failures=self._failures,
        )

    def _record_failure(self, message: str) -> None:
        self._answering = False
        self._error = message
        self._failures += 1


def fresh_gpus(statuses: Iterable[EndpointStatus]) -> tuple[GpuTelemetry, ...]:
    """The GPUs of every endpoint whose data is fresh: what capacity decisions may use."""
    return tuple(
        gpu
        for status in statuses
        if not status.stale and status.snapshot is not None
        for gpu in status.snapshot.gpus
    )
