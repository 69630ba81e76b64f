"""The hub's identity on a member: exactly what the hub does there, rendered without drift."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from suanli import cli, member_access
from suanli.api.podpolicy import PodSecurityLevel
from suanli.members.kubeapi import load_client
from suanli.members.kubeconfig import refusals

ROOT = Path(__file__).resolve().parent.parent
RENDERED = ROOT / "deploy" / "member-access.yaml"


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = (o for o in objects if o["kind"] == kind)
    return found


def test_the_rendered_copy_is_up_to_date() -> None:
    expected = member_access.render(member_access.manifest())
    assert RENDERED.read_text() == expected, (
        "run `suanli member access > deploy/member-access.yaml`"
    )


def test_the_cli_prints_the_manifest(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["member", "access"]) == 0
    assert capsys.readouterr().out == RENDERED.read_text()


def test_the_role_grants_exactly_what_the_hub_calls_with_explicit_verbs() -> None:
    role = by_kind(member_access.manifest(), "ClusterRole")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == {
        ("", "nodes", "list"),
        ("", "nodes", "watch"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "pods", "deletecollection"),
        *(
            ("batch", "jobs", verb)
            for verb in ("create", "get", "list", "watch", "patch", "delete")
        ),
        *(("", "namespaces", verb) for verb in ("create", "get", "list", "patch")),
        *(("", "services", verb) for verb in ("create", "list", "delete")),
        *(
            ("", kind, verb)
            for kind in ("secrets", "configmaps")
            for verb in ("create", "update", "deletecollection")
        ),
    }
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}  # no nonResourceURLs, names
        for key in ("apiGroups", "resources", "verbs"):
            assert not any("*" in item for item in rule[key]), rule


def test_the_role_is_bound_to_the_account_whose_token_the_secret_holds() -> None:
    objects = member_access.manifest()
    account = by_kind(objects, "ServiceAccount")["metadata"]
    binding = by_kind(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == by_kind(objects, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
    ]
    secret = by_kind(objects, "Secret")
    assert secret["type"] == "kubernetes.io/service-account-token"
    assert secret["metadata"]["annotations"] == {
        "kubernetes.io/service-account.name": account["name"]
    }
    assert secret["metadata"]["namespace"] == account["namespace"]


def test_the_guard_policy_binds_to_the_hub_identity_and_denies() -> None:
    spec = member_access.AccessSpec(namespace="ops", account="hub")
    objects = member_access.manifest(spec)
    policy = by_kind(objects, "ValidatingAdmissionPolicy")
    binding = by_kind(objects, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }
    assert policy["spec"]["failurePolicy"] == "Fail"
    (condition,) = policy["spec"]["matchConditions"]
    assert condition["expression"] == "request.userInfo.username == 'system:serviceaccount:ops:hub'"
    expressions = " ".join(v["expression"] for v in policy["spec"]["validations"])
    assert "['baseline', 'restricted']" in expressions
    # The levels the operator gives its namespaces (suanli.api.podpolicy) are all accepted.
    for level in PodSecurityLevel:
        assert f"'{level.value}'" in expressions
    only_restricted = member_access.guard_policy(
        member_access.AccessSpec(levels=(PodSecurityLevel.RESTRICTED,))
    )
    assert "in ['restricted']" in str(only_restricted["spec"]["validations"])


def test_a_rotation_token_is_another_secret_of_the_same_account() -> None:
    spec = member_access.AccessSpec()
    second = member_access.token_secret(spec, "suanli-hub-token-2")
    assert second["metadata"]["name"] == "suanli-hub-token-2"
    assert (
        second["metadata"]["annotations"]
        == member_access.token_secret(spec)["metadata"]["annotations"]
    )


def test_the_hub_kubeconfig_is_inline_and_accepted_by_the_operator() -> None:
    ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    text = member_access.hub_kubeconfig(
        server="https://member.example:6443", ca_pem=ca, token="t0ken", name="member-a"
    )
    assert refusals(text) == []
    document = yaml.safe_load(text)
    (cluster,) = document["clusters"]
    assert cluster["cluster"]["server"] == "https://member.example:6443"
    assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]).decode() == ca
    assert document["users"][0]["user"] == {"token": "t0ken"}
    assert document["current-context"] == "member-a"
    load_client(text).close()  # the operator's own loader takes it
