"""The registry of kinds: model, kubectl names and validator of each, in one list.

The CRD generator and anything that handles "some suanli object" (the admission webhook, the
example tests) go through :data:`KINDS`, so a new kind is added here once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from suanli.api import (
    computejob,
    membercluster,
    usagerecord,
    voucherprogram,
    voucherquota,
    voucherstatement,
)
from suanli.api.common import ApiModel
from suanli.api.meta import API_VERSION, KindInfo
from suanli.api.validation import FieldError, parse

# Each kind's plural, the name its API path, RBAC rules and Kopf handlers use.
COMPUTEJOBS: Final = computejob.KIND_INFO.plural
VOUCHERQUOTAS: Final = voucherquota.KIND_INFO.plural
MEMBERCLUSTERS: Final = membercluster.KIND_INFO.plural
USAGERECORDS: Final = usagerecord.KIND_INFO.plural
VOUCHERPROGRAMS: Final = voucherprogram.KIND_INFO.plural
VOUCHERSTATEMENTS: Final = voucherstatement.KIND_INFO.plural

M = TypeVar("M", bound=ApiModel)


@dataclass(frozen=True)
class Kind(Generic[M]):
    """One kind of the API: its names, its model and its semantic validator."""

    info: KindInfo
    model: type[M]
    validator: Callable[[M], list[FieldError]]

    def validate(self, data: Any) -> list[FieldError]:
        """Parse ``data`` and apply the kind's rules: every problem, as field errors."""
        obj, errors = parse(self.model, data)
        if obj is None:
            return errors
        return self.validator(obj)


KINDS: Final[tuple[Kind[Any], ...]] = (
    Kind(computejob.KIND_INFO, computejob.ComputeJob, computejob.validate_computejob),
    Kind(voucherquota.KIND_INFO, voucherquota.VoucherQuota, voucherquota.validate_voucherquota),
    Kind(
        membercluster.KIND_INFO,
        membercluster.MemberCluster,
        membercluster.validate_membercluster,
    ),
    Kind(usagerecord.KIND_INFO, usagerecord.UsageRecord, usagerecord.validate_usagerecord),
    Kind(
        voucherprogram.KIND_INFO,
        voucherprogram.VoucherProgram,
        voucherprogram.validate_voucherprogram,
    ),
    Kind(
        voucherstatement.KIND_INFO,
        voucherstatement.VoucherStatement,
        voucherstatement.validate_voucherstatement,
    ),
)


def kind_named(name: str) -> Kind[Any] | None:
    """The kind called ``name`` (e.g. ``"ComputeJob"``), if it is one of ours."""
    return next((kind for kind in KINDS if kind.info.kind == name), None)


def validate_manifest(data: Mapping[str, Any]) -> list[FieldError]:
    """Validate any suanli object given as a dict, choosing the kind from ``kind``."""
    if data.get("apiVersion") != API_VERSION:
        return [FieldError("apiVersion", f"must be {API_VERSION}")]
    kind = kind_named(str(data.get("kind")))
    if kind is None:
        names = ", ".join(kind.info.kind for kind in KINDS)
        return [FieldError("kind", f"must be one of {names}")]
    return kind.validate(data)
