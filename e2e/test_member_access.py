"""The hub's least-privilege identity on members: enough to dispatch, refused beyond it.

The session joins every member with the identity of ``suanli member access`` (see
``install.join_members``), so every e2e test already runs the operator with it; these tests
check that the hub really holds that identity and nothing more, that the member's admission
policy stops it where RBAC cannot, that a kubeconfig that would run a plugin is refused, and
that a rotated token is picked up without restarting the operator.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from e2e import operator_metrics
from e2e.kube import Cluster
from e2e.tenant import GROUP, VERSION, Tenant, compute_job, member_status
from suanli import member_access
from suanli.api.names import SYSTEM_NAMESPACE
from suanli.api.reasons import MemberReason
from suanli.devenv import install
from suanli.devenv.operator_process import OperatorProcess
from suanli.kits.waiting import TIMEOUTS, wait_for
from suanli.members.kubeconfig import EXEC_FLAG, refusals

HUB_USER = member_access.AccessSpec().username
GUARD = f"ValidatingAdmissionPolicy '{member_access.GUARD_POLICY}'"


@pytest.fixture
def tenant(hub: Cluster, namespace: str, operator: OperatorProcess) -> Tenant:
    return Tenant(hub, namespace)


def hub_kubeconfig(hub: Cluster, member: str) -> str:
    """The kubeconfig the hub keeps for ``member`` (what the operator connects with)."""
    secret = hub.core.read_namespaced_secret(
        install.kubeconfig_secret_name(member), SYSTEM_NAMESPACE
    )
    return base64.b64decode(secret.data["kubeconfig"]).decode()


@pytest.fixture
def as_hub(hub: Cluster, members_joined: list[str]) -> Iterator[client.ApiClient]:
    """A client of member-b with the hub's own credentials."""
    api = config.new_client_from_config_dict(yaml.safe_load(hub_kubeconfig(hub, "member-b")))
    try:
        yield api
    finally:
        api.close()


def condition(hub: Cluster, member: str, kind: str) -> dict[str, Any] | None:
    conditions = member_status(hub, member).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), None)


def refused(call: Any) -> ApiException:
    with pytest.raises(ApiException) as error:
        call()
    assert error.value.status == 403, error.value
    return error.value


# --- (a) the identity is the hub's, and it is enough ---------------------------------------------


def test_the_hub_holds_a_token_of_its_own_identity_not_an_admin_kubeconfig(
    hub: Cluster, as_hub: client.ApiClient, members_joined: list[str]
) -> None:
    for member in members_joined:
        text = hub_kubeconfig(hub, member)
        assert refusals(text) == []
        (user,) = yaml.safe_load(text)["users"]
        assert set(user["user"]) == {"token"}
    review = client.AuthenticationV1Api(as_hub).create_self_subject_review(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    )
    assert review.status.user_info.username == HUB_USER
    # Nothing beyond what it does: no Secrets, no RBAC.
    core = client.CoreV1Api(as_hub)
    refused(core.list_secret_for_all_namespaces)
    refused(lambda: client.RbacAuthorizationV1Api(as_hub).list_cluster_role())


def test_jobs_dispatch_to_members_with_the_hub_identity(tenant: Tenant, hub: Cluster) -> None:
    tenant.submit(compute_job("on-a", models=["H100"], run_for="1s"))
    tenant.submit(compute_job("on-b", models=["L40S"], run_for="1s"))
    for name, member in (("on-a", "member-a"), ("on-b", "member-b")):
        done = tenant.wait_phase(name, "Succeeded", timeout=TIMEOUTS.job_complete)
        assert done["status"]["cluster"] == member
    tenant.assert_ledger_balanced()


# --- (b) a kubeconfig that would run a command in the operator -----------------------------------


EXEC_KUBECONFIG = """
apiVersion: v1
kind: Config
clusters:
- name: elsewhere
  cluster: {{server: "https://127.0.0.1:1", certificate-authority-data: "eA=="}}
users:
- name: plugin-user
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: /bin/sh
      args: ["-c", "touch {marker}"]
      interactiveMode: Never
contexts:
- name: elsewhere
  context: {{cluster: elsewhere, user: plugin-user}}
current-context: elsewhere
"""


def test_a_kubeconfig_with_an_exec_plugin_is_refused_and_never_run(
    hub: Cluster, operator: OperatorProcess, tmp_path: Path, fed: Any
) -> None:
    name = f"exec-{uuid.uuid4().hex[:6]}"
    marker = tmp_path / "the-plugin-ran"
    secret = install.store_kubeconfig(hub.api, name, EXEC_KUBECONFIG.format(marker=marker))
    custom = client.CustomObjectsApi(hub.api)
    body = install.member_cluster(fed.cluster("member-a"), secret)
    body["metadata"]["name"] = name
    custom.create_cluster_custom_object(GROUP, VERSION, "memberclusters", body)
    try:
        reachable = wait_for(
            lambda: (c := condition(hub, name, "Reachable")) and c["status"] == "False" and c,
            timeout=TIMEOUTS.api_ready,
            what=f"{name} to be reported not Reachable",
        )
        assert reachable["reason"] == MemberReason.KUBECONFIG_REFUSED
        assert 'user "plugin-user" runs a credential plugin (exec)' in reachable["message"]
        assert EXEC_FLAG in reachable["message"]
        ready = condition(hub, name, "Ready")
        assert ready is not None and ready["status"] == "False"
        assert ready["reason"] == MemberReason.KUBECONFIG_REFUSED
        assert not marker.exists(), "the operator ran the kubeconfig's command"
    finally:
        custom.delete_cluster_custom_object(GROUP, VERSION, "memberclusters", name)
        hub.core.delete_namespaced_secret(secret, SYSTEM_NAMESPACE)


# --- (c) rotation without a restart --------------------------------------------------------------


def _rotate(hub: Cluster, member: Cluster, operator: OperatorProcess, new: str, old: str) -> None:
    """As the member's admin: a new token Secret, its kubeconfig to the hub, wait until the
    operator reconnected with it, then delete the old Secret (which revokes the old token)."""
    spec = member_access.AccessSpec()
    member_access.apply(member.api, [member_access.token_secret(spec, new)])
    token, ca_pem = member_access.read_token(member.api, spec, new, timeout=TIMEOUTS.api_ready)
    kubeconfig = member_access.hub_kubeconfig(
        server=member.api.configuration.host, ca_pem=ca_pem, token=token, name=member.info.name
    )
    reloads = operator_metrics.value(
        operator, "suanli_member_kubeconfig_reloads_total", member=member.info.name
    )
    install.store_kubeconfig(hub.api, member.info.name, kubeconfig)
    wait_for(
        lambda: (
            operator_metrics.value(
                operator, "suanli_member_kubeconfig_reloads_total", member=member.info.name
            )
            > reloads
        ),
        timeout=TIMEOUTS.condition_stable,
        what=f"the operator to reconnect to {member.info.name} with the new kubeconfig",
    )
    member.core.delete_namespaced_secret(old, spec.namespace)


def _old_token_is_refused(member: Cluster, kubeconfig: str) -> bool:
    api = config.new_client_from_config_dict(yaml.safe_load(kubeconfig))
    try:
        client.CoreV1Api(api).list_node(limit=1)
    except ApiException as error:
        return error.status == 401
    finally:
        api.close()
    return False


def _stays_ready(hub: Cluster, member: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready = condition(hub, member, "Ready")
        assert ready is not None and ready["status"] == "True", ready
        reachable = condition(hub, member, "Reachable")
        assert reachable is not None and reachable["status"] == "True", reachable
        time.sleep(1.0)


def test_a_rotated_token_is_used_without_restarting_the_operator(
    hub: Cluster, clusters: dict[str, Cluster], operator: OperatorProcess, tenant: Tenant
) -> None:
    member = clusters["member-a"]
    first = hub_kubeconfig(hub, "member-a")
    rotated = f"{member_access.TOKEN_SECRET}-{uuid.uuid4().hex[:6]}"
    pid = operator.process.pid if operator.process else None
    _rotate(hub, member, operator, rotated, member_access.TOKEN_SECRET)
    try:
        wait_for(
            lambda: _old_token_is_refused(member, first),
            timeout=TIMEOUTS.condition_stable,
            what="the member to refuse the deleted token",
        )
        # Two probes and a status write later, still Ready with the new token.
        _stays_ready(hub, "member-a", seconds=12)
        tenant.submit(compute_job("after-rotation", models=["H100"], run_for="1s"))
        done = tenant.wait_phase("after-rotation", "Succeeded", timeout=TIMEOUTS.job_complete)
        assert done["status"]["cluster"] == "member-a"
        assert (operator.process.pid if operator.process else None) == pid
    finally:
        # Back to the session's token Secret, the same way.
        _rotate(hub, member, operator, member_access.TOKEN_SECRET, rotated)
    _stays_ready(hub, "member-a", seconds=3)


def test_refused_credentials_are_reported_as_such(
    hub: Cluster, clusters: dict[str, Cluster], operator: OperatorProcess
) -> None:
    """A token the member no longer accepts: CredentialsRefused, then Ready once replaced."""
    member = clusters["member-a"]
    spec = member_access.AccessSpec()
    doomed = f"{member_access.TOKEN_SECRET}-{uuid.uuid4().hex[:6]}"
    _rotate(hub, member, operator, doomed, member_access.TOKEN_SECRET)
    try:
        member.core.delete_namespaced_secret(doomed, spec.namespace)  # revoked, not replaced
        ready = wait_for(
            lambda: (
                (c := condition(hub, "member-a", "Ready"))
                and c["reason"] == MemberReason.CREDENTIALS_REFUSED
                and c
            ),
            timeout=TIMEOUTS.api_ready,
            what="member-a to be reported with refused credentials",
        )
        assert ready["status"] == "False"
        assert "401" in ready["message"] and "suanli member kubeconfig" in ready["message"]
        # Reachable follows from the probe, which may see the 401 a moment after the watches.
        wait_for(
            lambda: (
                (c := condition(hub, "member-a", "Reachable")) is not None
                and c["reason"] == MemberReason.CREDENTIALS_REFUSED
            ),
            timeout=TIMEOUTS.api_ready,
            what="member-a's Reachable condition to say the credentials are refused",
        )
    finally:
        install.store_kubeconfig(hub.api, "member-a", install.grant_hub_access(member.info))
    wait_for(
        lambda: (c := condition(hub, "member-a", "Ready")) and c["status"] == "True",
        timeout=TIMEOUTS.api_ready,
        what="member-a to be Ready again with a valid token",
    )


# --- (d) the member's admission policy holds the hub where RBAC cannot ---------------------------


def _namespace(name: str, level: str | None) -> dict[str, Any]:
    labels = {member_access.ENFORCE_LABEL: level} if level else {}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def test_the_hub_cannot_open_a_privileged_namespace(
    as_hub: client.ApiClient, clusters: dict[str, Cluster]
) -> None:
    core = client.CoreV1Api(as_hub)
    suffix = uuid.uuid4().hex[:6]
    privileged = refused(
        lambda: core.create_namespace(_namespace(f"suanli-p-{suffix}", "privileged"))
    )
    assert GUARD in str(privileged.body) and "Pod Security" in str(privileged.body)
    unlabelled = refused(lambda: core.create_namespace(_namespace(f"suanli-u-{suffix}", None)))
    assert GUARD in str(unlabelled.body)
    foreign = refused(lambda: core.create_namespace(_namespace(f"other-{suffix}", "baseline")))
    assert GUARD in str(foreign.body) and "suanli-*" in str(foreign.body)
    # What the operator makes passes, and may not be loosened afterwards.
    allowed = f"suanli-ok-{suffix}"
    core.create_namespace(_namespace(allowed, "baseline"))
    try:
        patch = {"metadata": {"labels": {member_access.ENFORCE_LABEL: "privileged"}}}
        loosened = refused(lambda: core.patch_namespace(allowed, patch))
        assert GUARD in str(loosened.body)
    finally:
        clusters["member-b"].core.delete_namespace(allowed)


def test_the_hub_cannot_create_pods_nor_jobs_outside_its_namespaces(
    as_hub: client.ApiClient, clusters: dict[str, Cluster], namespace: str
) -> None:
    admin = clusters["member-b"]
    work = f"suanli-pods-{uuid.uuid4().hex[:6]}"
    admin.core.create_namespace(_namespace(work, "baseline"))
    rbac = client.RbacAuthorizationV1Api(admin.api)
    try:
        # Even where an admin grants it the right by mistake, the policy refuses a bare Pod.
        rbac.create_namespaced_role(
            work,
            {
                "metadata": {"name": "pods"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}],
            },
        )
        rbac.create_namespaced_role_binding(
            work,
            {
                "metadata": {"name": "pods"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "pods",
                },
                "subjects": [
                    {
                        "kind": "ServiceAccount",
                        "name": member_access.ACCOUNT,
                        "namespace": SYSTEM_NAMESPACE,
                    }
                ],
            },
        )
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "bare"},
            "spec": {"containers": [{"name": "main", "image": "registry.example/train:1"}]},
        }
        core = client.CoreV1Api(as_hub)
        bare = wait_for(
            lambda: _refusal_of(lambda: core.create_namespaced_pod(work, pod)),
            timeout=TIMEOUTS.condition_stable,
            what="the RoleBinding to take effect and the policy to refuse the Pod",
        )
        assert "never Pods directly" in str(bare.body)
        # A Job in a namespace of the member's own (the test namespace exists on members too).
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "outside"},
            "spec": {"template": {"spec": pod["spec"] | {"restartPolicy": "Never"}}},
        }
        outside = refused(lambda: client.BatchV1Api(as_hub).create_namespaced_job(namespace, job))
        assert GUARD in str(outside.body) and "suanli-*" in str(outside.body)
    finally:
        admin.core.delete_namespace(work)


def _refusal_of(call: Any) -> ApiException | None:
    """The policy's refusal of ``call``, or None while RBAC still refuses it (binding lag)."""
    try:
        call()
    except ApiException as error:
        return error if error.status == 403 and GUARD in str(error.body) else None
    raise AssertionError("the hub created a Pod directly")
