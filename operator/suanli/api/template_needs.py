"""What a pod template needs of the member that runs it, beyond GPUs, and which members offer it.

A ComputeJob's accelerators come from ``spec.gpusPerReplica`` alone; everything else its pods
ask for is the template's. Resources are judged by allow-list, not by deny-list: a name a device
plugin invents tomorrow (another sharing stack's slices, a member's own device under a domain
the vendor table does not know) would pass a deny-list unpaid. So a template may ask for:

- the core resources every kubelet offers: ``cpu``, ``memory``, ``ephemeral-storage`` and
  ``hugepages-<size>`` (:data:`CORE_RESOURCES`, :data:`HUGEPAGES_PREFIX`);
- an extended resource a member declares as not an accelerator
  (``MemberCluster.spec.allowedResources``: RDMA or SR-IOV network devices, say), and then runs
  only there;

and it may mount inline CSI volumes only of a driver a member lists
(``MemberCluster.spec.inlineVolumeDrivers``), and then runs only there. A member is never chosen
for a template that names one of its own accelerator resources (its catalogue's, its
``gpuResourceName``), whatever it declares.

:func:`template_needs` reads the needs from a template; :func:`unmet_need` says why one member
does not meet them (:func:`suanli.api.catalogue.member_offer` reads a member's offer).
Admission's pricing and the dispatcher's placement both ask
:func:`unmet_need`, so a job admitted is never one no member would take. Pure.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from suanli.api.podpolicy import CONTAINER_KINDS
from suanli.api.validation import PathPart, join_path

CORE_RESOURCES: Final = frozenset({"cpu", "memory", "ephemeral-storage"})
HUGEPAGES_PREFIX: Final = "hugepages-"
SPEC_PATH: Final[tuple[PathPart, ...]] = ("spec", "template", "spec")


def is_core_resource(name: str) -> bool:
    """Whether every kubelet offers ``name`` (no member has to declare it)."""
    return name in CORE_RESOURCES or name.startswith(HUGEPAGES_PREFIX)


@dataclass(frozen=True)
class Need:
    """One thing a template asks for, and the field that asks for it."""

    name: str
    path: str


@dataclass(frozen=True)
class TemplateNeeds:
    """The extended resources and inline CSI drivers a template asks for, each with the first
    field that asks (for messages)."""

    resources: tuple[Need, ...] = ()
    csi_drivers: tuple[Need, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.resources and not self.csi_drivers

    @property
    def resource_names(self) -> frozenset[str]:
        return frozenset(need.name for need in self.resources)

    @property
    def driver_names(self) -> frozenset[str]:
        return frozenset(need.name for need in self.csi_drivers)


@dataclass(frozen=True)
class MemberOffer:
    """What one member offers a template besides GPUs (from its MemberCluster)."""

    allowed_resources: frozenset[str] = frozenset()
    """Extended resources the member declares as not accelerators (``spec.allowedResources``)."""
    accelerator_resources: frozenset[str] = frozenset()
    """The member's own accelerator resources: its catalogue's and its ``gpuResourceName``."""
    inline_volume_drivers: frozenset[str] = frozenset()
    """CSI drivers whose inline volumes the member runs (``spec.inlineVolumeDrivers``)."""


NOTHING_BEYOND_GPUS: Final = MemberOffer()
"""A member that declares no extended resources or inline volume drivers."""
GPUS_ONLY: Final = TemplateNeeds()
"""A template that asks for nothing beyond GPUs and the core resources."""


def _obj(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _items(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def requested_resources(template: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(path, resource name) of every request and limit in the template: the pod's own
    (Kubernetes 1.32+) and every container's of every kind."""
    spec = _obj(template.get("spec"))
    holders: list[tuple[tuple[PathPart, ...], Mapping[str, Any]]] = [
        ((*SPEC_PATH, "resources"), _obj(spec.get("resources")))
    ]
    for kind in CONTAINER_KINDS:
        for index, container in enumerate(_items(spec.get(kind))):
            holders.append(
                ((*SPEC_PATH, kind, index, "resources"), _obj(_obj(container).get("resources")))
            )
    for path, resources in holders:
        for section in ("limits", "requests"):
            for name in _obj(resources.get(section)):
                yield join_path((*path, section, str(name))), str(name)


def inline_csi_drivers(template: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(path of the driver field, driver) of every inline CSI volume in the template."""
    spec = _obj(template.get("spec"))
    for index, volume in enumerate(_items(spec.get("volumes"))):
        csi = _obj(volume).get("csi")
        if isinstance(csi, Mapping):
            yield (
                join_path((*SPEC_PATH, "volumes", index, "csi", "driver")),
                str(csi.get("driver") or ""),
            )


def template_needs(template: Mapping[str, Any]) -> TemplateNeeds:
    """The template's extended resources (core ones left out) and inline CSI drivers."""
    resources: dict[str, Need] = {}
    for path, name in requested_resources(template):
        if not is_core_resource(name):
            resources.setdefault(name, Need(name, path))
    drivers: dict[str, Need] = {}
    for path, driver in inline_csi_drivers(template):
        drivers.setdefault(driver, Need(driver, path))
    return TemplateNeeds(tuple(resources.values()), tuple(drivers.values()))


def unmet_need(needs: TemplateNeeds, offer: MemberOffer) -> str | None:
    """Why a member offering ``offer`` cannot run a template with ``needs``; None if it can.

    The sentence names the field and the member setting, e.g. ``spec.template.spec.
    containers[0].resources.limits[rdma/hca]: rdma/hca is not among the member's
    spec.allowedResources``.
    """
    for need in needs.resources:
        if need.name in offer.accelerator_resources:
            return (
                f"{need.path}: {need.name} is one of the member's accelerator resources; "
                "accelerators come from spec.gpusPerReplica only"
            )
        if need.name not in offer.allowed_resources:
            return f"{need.path}: {need.name} is not among the member's spec.allowedResources"
    for need in needs.csi_drivers:
        if need.name not in offer.inline_volume_drivers:
            return (
                f"{need.path}: CSI driver {need.name!r} is not among the member's "
                "spec.inlineVolumeDrivers"
            )
    return None
