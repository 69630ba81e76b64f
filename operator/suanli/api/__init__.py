"""The suanli API: pydantic models of the custom resources, the one source of their CRDs.

One module per kind (:mod:`~suanli.api.computejob`, :mod:`~suanli.api.voucherquota`,
:mod:`~suanli.api.membercluster`), each with its model, its kubectl names and its
``validate_<kind>`` function; shared types (money, durations, conditions) in
:mod:`~suanli.api.common`; condition types and reasons in :mod:`~suanli.api.reasons`. The CRDs
under ``crds/`` are generated from these models by :mod:`~suanli.api.crdgen` (``suanli crds``).
"""

from suanli.api.common import (
    Condition,
    ConditionStatus,
    format_duration,
    format_money,
    parse_duration,
    parse_money,
)
from suanli.api.computejob import ComputeJob, JobPhase, PlacementPolicy, validate_computejob
from suanli.api.kinds import KINDS, Kind, kind_named, validate_manifest
from suanli.api.membercluster import MemberCluster, validate_membercluster
from suanli.api.meta import API_VERSION, GROUP, VERSION
from suanli.api.validation import FieldError, from_validation_error
from suanli.api.voucherquota import VoucherQuota, validate_voucherquota

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "VERSION",
    "ComputeJob",
    "Condition",
    "ConditionStatus",
    "FieldError",
    "JobPhase",
    "Kind",
    "MemberCluster",
    "PlacementPolicy",
    "VoucherQuota",
    "format_duration",
    "format_money",
    "from_validation_error",
    "kind_named",
    "parse_duration",
    "parse_money",
    "validate_computejob",
    "validate_manifest",
    "validate_membercluster",
    "validate_voucherquota",
]
