"""The operator's run-time options, as `suanli run` takes them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class OperatorOptions:
    """Everything `suanli run` can be told; defaults suit a local federation."""

    kubeconfig: str | None = None  # None: in-cluster service account
    # The admission webhook server. Locally the API server calls https://127.0.0.1:PORT.
    webhook_host: str = "127.0.0.1"
    webhook_port: int = 9443
    # Where the webhook's TLS key pair lives; generated (self-signed CA) when absent.
    webhook_cert_dir: Path | None = None
    # Name of the Validating- and MutatingWebhookConfiguration the operator keeps current; None
    # when the Helm chart manages them (in a cluster, with a Service in front of the operator).
    managed_webhook_config: str | None = "suanli.io"
    # Seconds between recounts of every voucher's ledger from the ComputeJobs that exist.
    recount_interval: float = 60.0
    # A hold whose ComputeJob does not exist is released only after this many seconds, so a
    # job admitted a moment ago (its create still on the way to etcd) keeps its reservation.
    hold_grace_seconds: float = 60.0
    # A member whose API server stays unreachable this long loses its running jobs: each is
    # charged for the time it ran there and placed again elsewhere.
    member_grace_seconds: float = 60.0
    # A placed job whose pods stay unschedulable this long on its member (capacity taken
    # behind the operator's back) is withdrawn and placed again.
    unschedulable_seconds: float = 120.0
    # Let member kubeconfigs run credential plugins (exec, auth-provider) inside the operator.
    # Off: whoever may write a kubeconfig Secret could otherwise run commands here.
    allow_kubeconfig_exec: bool = False
    # Seconds between reads of each member's kubeconfig Secret: a changed one (a rotated
    # token) reconnects that member, and a member whose Secret was missing or refused is
    # tried again.
    kubeconfig_check_seconds: float = 15.0
    # Placements per job before it fails for good.
    max_attempts: int = 3
    # Seconds a finished remote Job (and its pods) stays on its member once the hub recorded
    # its outcome; the member's TTL controller then deletes it.
    remote_job_ttl_seconds: int = 3600
    # Seconds between re-reads of running jobs' Secrets and ConfigMaps (copied to members).
    tenant_data_sync_seconds: float = 20.0
    # Seconds a finished ComputeJob stays on the hub after it finished; None keeps it forever.
    # Its UsageRecords stay either way.
    job_retention_seconds: float | None = None
    # Peering: None runs standalone; a name joins that peering group with `priority`.
    peering: str | None = None
    priority: int = 0
    # Seconds a replica's peering record stays valid: a standby takes over at most this long
    # after the active replica stops renewing it.
    peering_lifetime: int = 60
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
