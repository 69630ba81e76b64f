"""Reading accelerator exporters' text: suanli's own, NVIDIA's dcgm-exporter and Ascend's
npu-exporter. Pure (no network): the scrape is :mod:`.scrape`'s, and the decision code imports
this module alone.

- :func:`parse_metrics` turns Prometheus text into a typed :class:`TelemetrySnapshot`: per node,
  per GPU, utilization, framebuffer memory, health. It uses prometheus_client's parser and looks
  metric families up by name, so it is indifferent to label order, extra labels (pci_bus_id,
  DCGM_FI_DRIVER_VERSION, err_code, ...), and whether ECC totals are typed gauge or counter.
- Ascend's npu-exporter has other names (``npu_chip_info_utilization``, ``..._hbm_used_memory``
  and ``..._hbm_total_memory`` in MB, ``..._health_status``) and labels (``id``, ``vdie_id``,
  ``model_name``) and no node label: its series are read into the same per-device view, under
  the node the endpoint's ``#node=<name>`` fragment names (the exporter serves one node).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from prometheus_client.parser import text_string_to_metric_families

from suanli.telemetry import names

# DCGM reports a missing value as a sentinel: int64 blanks start at 0x7ffffffffffffff0 and
# double blanks at 2**47. Anything that large is "no value", never a reading.
_DCGM_BLANK: Final = float(2**47)
DEFAULT_MAX_AGE: Final = 60.0


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
