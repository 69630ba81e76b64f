"""The ClusterRoles: least privilege, spelled out."""

from suanli.rbac import all_roles, platform_admin_role, tenant_role


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


def test_platform_admins_issue_vouchers_and_join_members() -> None:
    role = platform_admin_role()
    for verb in ("create", "update", "patch", "delete"):
        assert _allowed(role, "voucherquotas", verb)
        assert _allowed(role, "memberclusters", verb)
    # The ledger in status is the operator's alone.
    assert not _allowed(role, "voucherquotas/status", "update")
