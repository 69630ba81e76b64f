"""Capacity in PFLOPS: a member's devices counted in dense FP16, and the federation's sum.

The city asks "how much of the pooled compute is actually schedulable, and at what price", in
PFLOPS of FP16. Per member, from the capacity index's per-model read-out and the member's
accelerator catalogue:

- ``total``: every device the member's nodes report (capacity), schedulable or not;
- ``schedulable``: devices on nodes that take new pods (allocatable there);
- ``free``: devices free for new jobs now (allocatable minus requests, busy and unhealthy
  devices the telemetry shows, and placements not yet visible).

Devices of a model without a figure in the catalogue count as devices but add no PFLOPS; the
sums are exact (whole TFLOPS, three decimals of PFLOPS). The federation's summary adds up
what the members' statuses say (:func:`federation_summary`), so the CLI and the operator's
metric agree with ``kubectl get mc``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from suanli.api.catalogue import Catalogue
from suanli.dispatch.capacity import ModelCapacity

STATES: Final = ("total", "schedulable", "free")


def pflops_of(catalogue: Catalogue, inventory: Iterable[ModelCapacity]) -> dict[str, Decimal]:
    """Total, schedulable and free PFLOPS of one member's devices."""
    sums = dict.fromkeys(STATES, Decimal(0))
    for view in inventory:
        entry = catalogue.get(view.model)
        per_device = entry.pflops if entry is not None else None
        if per_device is None:
            continue
        sums["total"] += per_device * view.total
        sums["schedulable"] += per_device * view.allocatable
        sums["free"] += per_device * view.free
    return sums


def catalogue_fields(catalogue: Catalogue, model: str, resource: str | None) -> dict[str, Any]:
    """What the catalogue says of ``model``, as ``status.gpus[]`` carries it."""
    entry = catalogue.get(model)
    fields: dict[str, Any] = {}
    if entry is not None:
        fields["vendor"] = entry.vendor.value
        if entry.fp16_tflops is not None:
            fields["fp16TFLOPS"] = entry.fp16_tflops
    resource = resource or (entry.resource if entry is not None else None)
    if resource:
        fields["resourceName"] = resource
    return fields


@dataclass(frozen=True)
class MemberPflops:
    """One member's PFLOPS as its status reports them."""

    name: str
    ready: bool
    total: Decimal
    schedulable: Decimal
    free: Decimal
    devices: int
    free_devices: int


def _decimal(value: object) -> Decimal:
    try:
        return Decimal(str(value)) if value is not None else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


def member_pflops(body: Mapping[str, Any]) -> MemberPflops:
    """Read a MemberCluster object's status (a dict as the API server returns it)."""
    status = body.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return MemberPflops(
        name=str((body.get("metadata") or {}).get("name", "")),
        ready=ready,
        total=_decimal(status.get("totalPFLOPS")),
        schedulable=_decimal(status.get("schedulablePFLOPS")),
        free=_decimal(status.get("freePFLOPS")),
        devices=int(status.get("totalGPUs") or 0),
        free_devices=int(status.get("freeGPUs") or 0),
    )


@dataclass(frozen=True)
class FederationSummary:
    """The federation's PFLOPS: everything, what members that take jobs can schedule, free."""

    members: tuple[MemberPflops, ...]

    @property
    def total(self) -> Decimal:
        return sum((m.total for m in self.members), Decimal(0))

    @property
    def schedulable(self) -> Decimal:
        """On members that are Ready: a member that takes no jobs schedules nothing."""
        return sum((m.schedulable for m in self.members if m.ready), Decimal(0))

    @property
    def free(self) -> Decimal:
        return sum((m.free for m in self.members if m.ready), Decimal(0))


def federation_summary(bodies: Iterable[Mapping[str, Any]]) -> FederationSummary:
    """Sum the members' statuses, members by name."""
    return FederationSummary(
        tuple(sorted((member_pflops(body) for body in bodies), key=lambda m: m.name))
    )
