"""Condition types and reasons of every kind, in one place.

Programs (the operator, dashboards, tests) match on these; people read the condition message
next to them. A reason is a CamelCase word that says why a condition has its status, so the
same reason may serve several condition types. Adding a reason is an API change: list it here,
never as a string literal at the call site.
"""

from __future__ import annotations

from enum import StrEnum


class JobConditionType(StrEnum):
    """Condition types of a ComputeJob; logic reads these rather than ``status.phase``."""

    RESERVED = "Reserved"
    """True while the job's worst-case cost is held on its voucher."""
    DISPATCHED = "Dispatched"
    """True while a member cluster is chosen and the remote workload exists there."""
    RUNNING = "Running"
    """True while all replicas of the gang run on the member."""
    FINISHED = "Finished"
    """True once the job ended, whatever the outcome; the reason says which."""
    CHARGED = "Charged"
    """True once the job's actual use was charged to the voucher (exactly once)."""


class JobReason(StrEnum):
    """Reasons on ComputeJob conditions and attempt records."""

    # Reserved
    VOUCHER_RESERVED = "VoucherReserved"
    RESERVATION_RELEASED = "ReservationReleased"
    VOUCHER_NOT_FOUND = "VoucherNotFound"
    VOUCHER_INACTIVE = "VoucherInactive"
    INSUFFICIENT_BALANCE = "InsufficientBalance"
    LIMIT_EXCEEDED = "LimitExceeded"
    # Dispatched
    PLACED = "Placed"
    NO_CAPACITY = "NoCapacity"
    NO_ELIGIBLE_CLUSTER = "NoEligibleCluster"
    REMOTE_CREATE_FAILED = "RemoteCreateFailed"
    REMOTE_REFUSED = "RemoteRefused"
    DISPATCH_FAILED = "DispatchFailed"
    QUEUE_TIMEOUT = "QueueTimeout"
    NODES_NOT_LISTED = "NodesNotListed"
    TENANT_DATA_REFUSED = "TenantDataRefused"
    MEMBER_LOST = "MemberLost"
    MEMBER_REMOVED = "MemberRemoved"
    WITHDRAWN_UNSCHEDULABLE = "WithdrawnUnschedulable"
    # Running
    PODS_RUNNING = "PodsRunning"
    PODS_PENDING = "PodsPending"
    # Finished (also the end reasons of attempts)
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    REJECTED = "Rejected"
    DELETED = "Deleted"
    # Charged
    CHARGE_RECORDED = "ChargeRecorded"
    CHARGE_PENDING = "ChargePending"


class VoucherConditionType(StrEnum):
    """Condition types of a VoucherQuota."""

    ACTIVE = "Active"
    """True when new jobs may be charged: inside the validity window and not exhausted."""
    EXPIRED = "Expired"
    """True once ``validUntil`` has passed."""
    EXHAUSTED = "Exhausted"
    """True when amount plus credit line minus spent and reserved leaves nothing to reserve."""
    LEDGER_NEARLY_FULL = "LedgerNearlyFull"
    """True when the voucher's ledger is near the most entries its status can store."""


class VoucherReason(StrEnum):
    """Reasons on VoucherQuota conditions."""

    WITHIN_VALIDITY = "WithinValidity"
    NOT_YET_VALID = "NotYetValid"
    VALIDITY_ENDED = "ValidityEnded"
    BALANCE_AVAILABLE = "BalanceAvailable"
    USING_CREDIT_LINE = "UsingCreditLine"
    BALANCE_EXHAUSTED = "BalanceExhausted"
    LEDGER_NEARLY_FULL = "LedgerNearlyFull"
    LEDGER_HAS_ROOM = "LedgerHasRoom"


class MemberConditionType(StrEnum):
    """Condition types of a MemberCluster."""

    READY = "Ready"
    """True when the member takes new jobs: reachable, telemetry fresh, not cordoned."""
    REACHABLE = "Reachable"
    """True when the member's API server answered the last probe with the given kubeconfig."""
    TELEMETRY_FRESH = "TelemetryFresh"
    """True when a telemetry endpoint was read recently enough to trust its GPU view."""


class MemberReason(StrEnum):
    """Reasons on MemberCluster conditions."""

    # Ready
    MEMBER_READY = "MemberReady"
    CORDONED = "Cordoned"
    UNREACHABLE = "Unreachable"
    TELEMETRY_STALE = "TelemetryStale"
    UNPRICED_GPU_MODELS = "UnpricedGPUModels"
    # Reachable
    API_SERVER_REACHABLE = "APIServerReachable"
    API_SERVER_UNREACHABLE = "APIServerUnreachable"
    KUBECONFIG_SECRET_NOT_FOUND = "KubeconfigSecretNotFound"
    KUBECONFIG_INVALID = "KubeconfigInvalid"
    KUBECONFIG_REFUSED = "KubeconfigRefused"
    """The kubeconfig asks the operator to run a plugin or read its own files."""
    UNAUTHORIZED = "Unauthorized"
    CREDENTIALS_REFUSED = "CredentialsRefused"
    """The member's API server refused the kubeconfig's credentials (HTTP 401 or 403)."""
    # Events on a MemberCluster
    KUBECONFIG_RELOADED = "KubeconfigReloaded"
    """Its kubeconfig Secret changed and the operator reconnected with the new one."""
    # TelemetryFresh
    SCRAPE_SUCCEEDED = "ScrapeSucceeded"
    SCRAPE_FAILED = "ScrapeFailed"
    NO_TELEMETRY_ENDPOINTS = "NoTelemetryEndpoints"


ALL_REASONS: tuple[type[StrEnum], ...] = (JobReason, VoucherReason, MemberReason)
ALL_CONDITION_TYPES: tuple[type[StrEnum], ...] = (
    JobConditionType,
    VoucherConditionType,
    MemberConditionType,
)
