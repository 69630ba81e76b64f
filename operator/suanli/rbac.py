"""Who may do what with suanli's objects: the ClusterRoles for each audience, as data.

- ``suanli-tenant``: bound per tenant namespace (RoleBinding). Tenants create, watch and delete
  their ComputeJobs and read their VoucherQuotas, but never write a VoucherQuota: the voucher is
  the platform's money.
- ``suanli-platform-admin``: issues and edits VoucherQuotas and MemberClusters (and reads the
  rest); bound cluster-wide, or per namespace for a delegated admin.
- ``suanli-operator``: what the operator itself needs on the hub, verb by verb.

Every rule names its verbs and resources: no wildcards (a test checks it). The Helm chart and
the e2e tests use these same objects, so what is tested is what is installed.
"""

from __future__ import annotations

from typing import Any, Final

from suanli.api.meta import GROUP

READ: Final = ("get", "list", "watch")
WRITE: Final = ("create", "update", "patch", "delete")

TENANT_ROLE: Final = "suanli-tenant"
PLATFORM_ADMIN_ROLE: Final = "suanli-platform-admin"
OPERATOR_ROLE: Final = "suanli-operator"


def _rule(group: str, resources: tuple[str, ...], verbs: tuple[str, ...]) -> dict[str, Any]:
    return {"apiGroups": [group], "resources": list(resources), "verbs": list(verbs)}


def _cluster_role(name: str, rules: list[dict[str, Any]], description: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/part-of": "suanli"},
            "annotations": {"suanli.io/description": description},
        },
        "rules": rules,
    }


def tenant_role() -> dict[str, Any]:
    return _cluster_role(
        TENANT_ROLE,
        [
            _rule(GROUP, ("computejobs",), (*READ, "create", "delete")),
            _rule(GROUP, ("computejobs/status",), ("get",)),
            _rule(GROUP, ("voucherquotas", "voucherquotas/status"), READ),
            _rule("", ("events",), READ),
        ],
        "Submit and follow ComputeJobs and read VoucherQuotas in the bound namespace.",
    )


def platform_admin_role() -> dict[str, Any]:
    return _cluster_role(
        PLATFORM_ADMIN_ROLE,
        [
            _rule(GROUP, ("voucherquotas", "memberclusters"), (*READ, *WRITE)),
            _rule(GROUP, ("computejobs",), (*READ, "delete")),
            _rule(GROUP, ("computejobs/status", "voucherquotas/status"), READ),
            _rule(GROUP, ("memberclusters/status",), READ),
            _rule("", ("events",), READ),
        ],
        "Issue VoucherQuotas, join MemberClusters, and oversee every tenant's ComputeJobs.",
    )


def operator_role() -> dict[str, Any]:
    return _cluster_role(
        OPERATOR_ROLE,
        [
            _rule(GROUP, ("computejobs", "voucherquotas", "memberclusters"), (*READ, "patch")),
            _rule(
                GROUP,
                ("computejobs/status", "voucherquotas/status", "memberclusters/status"),
                ("get", "patch", "update"),
            ),
            # Member kubeconfigs; the chart narrows this to its namespace with a Role.
            _rule("", ("secrets",), ("get", "list", "watch")),
            _rule("", ("events",), ("create", "patch")),
            _rule("events.k8s.io", ("events",), ("create", "patch")),
            # Kopf watches namespaces to follow cluster-wide resources.
            _rule("", ("namespaces",), READ),
            # Kopf keeps the webhook configurations current when run outside a cluster.
            _rule(
                "admissionregistration.k8s.io",
                ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"),
                (*READ, "create", "patch"),
            ),
            _rule("apiextensions.k8s.io", ("customresourcedefinitions",), READ),
            # Peering between replicas (Kopf's own resources).
            _rule("kopf.dev", ("clusterkopfpeerings", "kopfpeerings"), (*READ, "patch")),
            _rule("coordination.k8s.io", ("leases",), (*READ, "create", "update")),
        ],
        "What the suanli operator needs on the hub.",
    )


def all_roles() -> list[dict[str, Any]]:
    return [tenant_role(), platform_admin_role(), operator_role()]
