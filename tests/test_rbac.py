"""The ClusterRoles: least privilege, spelled out."""

from suanli.rbac import (
    all_roles,
    chart_roles,
    operator_role,
    platform_admin_role,
    tenant_role,
    webhook_manager_role,
)


def test_no_rule_uses_a_wildcard() -> None:
    for role in all_roles():
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], (role["metadata"]["name"], rule)


def _allowed(role: dict, resource: str, verb: str) -> bool:
    return any(resource in r["resources"] and verb in r["verbs"] for r in role["rules"])


def test_tenants_submit_jobs_but_never_write_vouchers() -> None:
    role = tenant_role()
    assert _allowed(role, "computejobs", "create")
    assert _allowed(role, "voucherquotas", "get")
    for verb in ("create", "update", "patch", "delete"):
        assert not _allowed(role, "voucherquotas", verb)
        assert not _allowed(role, "voucherquotas/status", verb)
    assert not _allowed(role, "memberclusters", "get")


def test_tenants_can_neither_choose_their_subsidy_nor_touch_the_programme_s_books() -> None:
    """A namespace's company and class labels choose its rule (100% for a start-up): only the
    platform sets them. Programmes and their statements are the platform's."""
    role = tenant_role()
    for verb in ("create", "update", "patch", "delete"):
        assert not _allowed(role, "namespaces", verb)
        assert not _allowed(role, "voucherprograms", verb)
        assert not _allowed(role, "voucherstatements", verb)
        assert not _allowed(role, "voucherstatements/status", verb)
    assert not _allowed(role, "voucherstatements", "get")
    assert not _allowed(role, "voucherstatements", "list")


def test_platform_admins_issue_vouchers_and_join_members() -> None:
    role = platform_admin_role()
    for verb in ("create", "update", "patch", "delete"):
        assert _allowed(role, "voucherquotas", verb)
        assert _allowed(role, "memberclusters", verb)
    # The ledger in status is the operator's alone.
    assert not _allowed(role, "voucherquotas/status", "update")


def test_the_operator_reads_secrets_one_by_one_and_nothing_it_does_not_call() -> None:
    role = operator_role()
    assert _allowed(role, "secrets", "get")
    for verb in ("list", "watch", "create", "update", "patch", "delete"):
        assert not _allowed(role, "secrets", verb)
    # Trimmed: namespaces are listed and watched for their company labels (voucher
    # programmes), never read one by one or written; Events are created once,
    # the admission Lease is read, made and renewed but never listed or deleted, and the
    # leader's pod is labelled, never read, created or deleted.
    assert _allowed(role, "namespaces", "watch")
    for verb in ("get", "create", "update", "patch", "delete"):
        assert not _allowed(role, "namespaces", verb)
    assert not _allowed(role, "events", "patch")
    assert _allowed(role, "leases", "update")
    assert not _allowed(role, "leases", "list")
    assert not _allowed(role, "leases", "delete")
    assert _allowed(role, "pods", "patch")
    for verb in ("get", "list", "create", "delete"):
        assert not _allowed(role, "pods", verb)
    groups = {group for rule in role["rules"] for group in rule["apiGroups"]}
    assert "events.k8s.io" not in groups
    assert "admissionregistration.k8s.io" not in groups


def test_webhook_configuration_writes_are_a_role_of_their_own_outside_the_chart() -> None:
    role = webhook_manager_role()
    for resource in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
        assert _allowed(role, resource, "create")
        assert _allowed(role, resource, "patch")
        assert not _allowed(role, resource, "delete")
    names = [r["metadata"]["name"] for r in chart_roles()]
    assert role["metadata"]["name"] not in names
    assert role["metadata"]["name"] in [r["metadata"]["name"] for r in all_roles()]
