"""The operator's run-time options, as `suanli run` takes them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from suanli.api.names import LEASE_NAME, SYSTEM_NAMESPACE


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
    # Seconds between passes of the leader over the voucher programmes' months whose usage
    # records changed, regenerating their VoucherStatements.
    statement_interval: float = 30.0
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
    # Failed remote creates per job (a member refused it, a referenced Secret is missing, no
    # answer) before it fails for good; a failed create uses no attempt.
    max_dispatch_failures: int = 5
    # Seconds a job may wait to be placed before it fails and its hold is released.
    queue_timeout_seconds: float = 86400.0
    # The most seconds a job's pods get to stop (terminationGracePeriodSeconds, probes' grace):
    # a template asking for more is bounded to it, and a deleted job's pods are removed with it.
    termination_grace_seconds: int = 30
    # Seconds between sweeps of every member for workloads, Services and copies whose
    # ComputeJob the hub no longer has.
    orphan_sweep_seconds: float = 300.0
    # Seconds the API server waits for a webhook's answer (the webhook configuration's
    # timeoutSeconds: Kopf writes 30 into the ones it manages, the chart its own value). A hold
    # whose job is not stored this long after admission is dropped, and a new admission leader
    # waits this long for the holds its predecessor admitted.
    webhook_timeout: float = 30.0
    # The admission Lease (see suanli.leadership): only its holder admits and runs the
    # controllers. Its namespace defaults to $POD_NAMESPACE, else suanli-system.
    lease_namespace: str = SYSTEM_NAMESPACE
    lease_name: str = LEASE_NAME
    lease_duration: float = 15.0
    lease_renew_deadline: float = 10.0
    lease_retry: float = 2.0
    # This replica's pod ($POD_NAME, $POD_NAMESPACE): the leader labels it so that the chart's
    # webhook Service selects the leader alone. None outside a cluster.
    pod_name: str | None = None
    pod_namespace: str | None = None
    # Seconds a finished remote Job (and its pods) stays on its member once the hub recorded
    # its outcome; the member's TTL controller then deletes it.
    remote_job_ttl_seconds: int = 3600
    # Seconds between re-reads of running jobs' Secrets and ConfigMaps (copied to members).
    tenant_data_sync_seconds: float = 20.0
    # Seconds a finished, charged ComputeJob stays on the hub after it finished; then the leader
    # deletes it (its UsageRecords stay). None keeps every job: deleting is for the platform
    # to choose, since a tenant loses `kubectl describe` of the job.
    job_retention_seconds: float | None = None
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
