"""Who may do what with suanli's objects: the ClusterRoles for each audience, as data.

- ``suanli-tenant``: bound per tenant namespace (RoleBinding). Tenants create, watch and delete
  their ComputeJobs and read their VoucherQuotas, but never write a VoucherQuota: the voucher is
  the platform's money. They get no VoucherStatements: a statement is cluster-scoped and the
  platform's (a center's sums many companies' records); a company reads its own records.
- ``suanli-platform-admin``: issues and edits VoucherQuotas and MemberClusters (and reads the
  rest); bound cluster-wide, or per namespace for a delegated admin.
- ``suanli-operator``: what the operator itself needs on the hub, verb by verb, and nothing
  it does not call (each rule says who calls it).
- ``suanli-operator-webhooks``: writing its own admission webhook configurations, which only
  an operator started with ``--managed-webhook-config`` does (outside a cluster: ``suanli dev``
  and the e2e tests). The Helm chart renders those configurations itself and runs the
  operator without it, so the chart does not install this role.

Every rule names its verbs and resources: no wildcards (a test checks it). The Helm chart and
the e2e tests use these same objects, so what is tested is what is installed.

The operator's rights on member clusters are not here: a member's admin grants them with the
manifest of :mod:`suanli.member_access`.
"""

from __future__ import annotations

from typing import Any, Final

from suanli.api.kinds import (
    COMPUTEJOBS,
    MEMBERCLUSTERS,
    USAGERECORDS,
    VOUCHERPROGRAMS,
    VOUCHERQUOTAS,
    VOUCHERSTATEMENTS,
)
from suanli.api.meta import GROUP
from suanli.api.names import DESCRIPTION_ANNOTATION

READ: Final = ("get", "list", "watch")
WRITE: Final = ("create", "update", "patch", "delete")

TENANT_ROLE: Final = "suanli-tenant"
PLATFORM_ADMIN_ROLE: Final = "suanli-platform-admin"
OPERATOR_ROLE: Final = "suanli-operator"
WEBHOOK_MANAGER_ROLE: Final = "suanli-operator-webhooks"


def _rule(group: str, resources: tuple[str, ...], verbs: tuple[str, ...]) -> dict[str, Any]:
    return {"apiGroups": [group], "resources": list(resources), "verbs": list(verbs)}


def _cluster_role(name: str, rules: list[dict[str, Any]], description: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/part-of": "suanli"},
            "annotations": {DESCRIPTION_ANNOTATION: description},
        },
        "rules": rules,
    }


def tenant_role() -> dict[str, Any]:
    return _cluster_role(
        TENANT_ROLE,
        [
            _rule(GROUP, (COMPUTEJOBS,), (*READ, "create", "delete")),
            _rule(GROUP, ("computejobs/status",), ("get",)),
            _rule(GROUP, (VOUCHERQUOTAS, "voucherquotas/status"), READ),
            # The programmes that issue their vouchers: pool, rules and what is left.
            _rule(GROUP, (VOUCHERPROGRAMS,), READ),
            # What each job used and was charged; written by the operator alone.
            _rule(GROUP, (USAGERECORDS,), READ),
            _rule("", ("events",), READ),
        ],
        "Submit and follow ComputeJobs, read VoucherQuotas and UsageRecords in the bound "
        "namespace.",
    )


def platform_admin_role() -> dict[str, Any]:
    return _cluster_role(
        PLATFORM_ADMIN_ROLE,
        [
            _rule(GROUP, (VOUCHERQUOTAS, MEMBERCLUSTERS, VOUCHERPROGRAMS), (*READ, *WRITE)),
            _rule(GROUP, ("voucherprograms/status",), READ),
            _rule(GROUP, (COMPUTEJOBS,), (*READ, "delete")),
            _rule(GROUP, ("computejobs/status", "voucherquotas/status"), READ),
            _rule(GROUP, ("memberclusters/status",), READ),
            # The record of every charge: read, never written, even by the platform.
            _rule(GROUP, (USAGERECORDS,), READ),
            # Programme statements: computed from the records by the operator alone.
            _rule(GROUP, (VOUCHERSTATEMENTS, "voucherstatements/status"), READ),
            _rule("", ("events",), READ),
        ],
        "Issue VoucherQuotas, join MemberClusters, and oversee every tenant's ComputeJobs.",
    )


def operator_role() -> dict[str, Any]:
    return _cluster_role(
        OPERATOR_ROLE,
        [
            _rule(GROUP, (VOUCHERQUOTAS, MEMBERCLUSTERS, VOUCHERPROGRAMS), (*READ, "patch")),
            # Delete: finished, charged jobs leave the hub after --job-retention.
            _rule(GROUP, (COMPUTEJOBS,), (*READ, "patch", "delete")),
            # Programme vouchers: issued to every company namespace a programme
            # selects, withdrawn when it stops matching; no other voucher is created or deleted.
            _rule(GROUP, (VOUCHERQUOTAS,), ("create", "delete")),
            # Namespaces carry the company labels programmes select on: watched, never written.
            _rule("", ("namespaces",), ("list", "watch")),
            # One record per finished attempt: created once (a retry finds it), listed by the
            # recount, never changed (the schema refuses it) nor deleted.
            _rule(GROUP, (USAGERECORDS,), ("create", "get", "list")),
            # Programme statements: one per company and center and month, created
            # and rewritten from the records by the leader; never deleted (the audit trail).
            _rule(GROUP, (VOUCHERSTATEMENTS,), ("create", "get", "list", "patch", "update")),
            _rule(
                GROUP,
                (
                    "computejobs/status",
                    "voucherquotas/status",
                    "memberclusters/status",
                    "voucherprograms/status",
                    "voucherstatements/status",
                ),
                ("get", "patch", "update"),
            ),
            # Member kubeconfigs, read one by one (Hub.secret) when a member connects and every
            # --kubeconfig-check-interval for rotations: never listed nor watched, so the
            # operator sees no Secret a MemberCluster does not name. The chart narrows this to
            # the namespaces that hold them with Roles.
            # Tenant data too: the Secrets and ConfigMaps a ComputeJob's template names, read
            # one by one at admission (do they exist?) and to copy them to the job's member.
            _rule("", ("secrets", "configmaps"), ("get",)),
            # Events for kubectl describe: ours (Hub.event) and Kopf's, both core/v1, created
            # once and never patched.
            _rule("", ("events",), ("create",)),
            # Kopf follows CRDs to learn when its resources appear or change.
            _rule("apiextensions.k8s.io", ("customresourcedefinitions",), READ),
            # The admission Lease (suanli.leadership): read, made once, renewed. The chart
            # grants this and the next rule in its own namespace only, with a Role.
            _rule("coordination.k8s.io", ("leases",), ("get", "create", "update")),
            # The leader labels its own pod, for the webhook Service's selector.
            _rule("", ("pods",), ("patch",)),
        ],
        "What the suanli operator needs on the hub.",
    )


def webhook_manager_role() -> dict[str, Any]:
    # Kopf creates each configuration if absent and patches its webhooks; it never reads them.
    return _cluster_role(
        WEBHOOK_MANAGER_ROLE,
        [
            _rule(
                "admissionregistration.k8s.io",
                ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"),
                ("create", "patch"),
            ),
        ],
        "Keep the operator's own admission webhook configurations current "
        "(suanli run --managed-webhook-config); not needed where the Helm chart renders them.",
    )


def chart_roles() -> list[dict[str, Any]]:
    """The roles the Helm chart installs (charts/suanli/templates/rbac)."""
    return [tenant_role(), platform_admin_role(), operator_role()]


def all_roles() -> list[dict[str, Any]]:
    """Every role, for a hub set up without the chart (``suanli dev up``, the e2e tests)."""
    return [*chart_roles(), webhook_manager_role()]
