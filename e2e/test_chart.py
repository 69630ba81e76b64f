"""The Helm chart on the hub of the local federation: install, operate, upgrade, uninstall.

The chart is installed with helm, as a cluster admin would. Its Deployment cannot run here (kwok
runs no containers, and the hub has no nodes at all), so the operator runs as a local process in
the chart's "external operator" mode: the webhook configuration calls https://127.0.0.1:PORT,
and the process serves the certificate the chart generated (read from the chart's Secret) and
talks to the API server with a token of the chart's own ServiceAccount. Whatever the operator
needs and the chart's RBAC does not grant fails here.

The session's fixtures already installed the CRDs and the ClusterRoles with `install_api`, as
`kubectl apply` would: the chart adopts them (the route docs/cluster-admins.md gives for
clusters set up by hand), and the module puts them back as they were when it ends. If the
session's own operator runs, its webhook configuration is set aside meanwhile, so each
ComputeJob is admitted once, by the operator under test.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.conftest import LEASE_ARGS
from e2e.kube import Cluster, kubectl
from e2e.tenant import compute_job, voucher
from suanli.api.kinds import KINDS
from suanli.api.names import SYSTEM_NAMESPACE
from suanli.devenv import install
from suanli.devenv.operator_process import OperatorProcess
from suanli.devenv.toolchain import Toolchain
from suanli.kits.waiting import TIMEOUTS, wait_for
from suanli.rbac import chart_roles

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "suanli"
RELEASE = "suanli-e2e"
CHART_NAMESPACE = "suanli-chart-e2e"
GROUP, VERSION = "suanli.io", "v1alpha1"
SESSION_WEBHOOK = "suanli.io"  # the configuration the session's operator fixture manages
CRD_NAMES = tuple(kind.info.crd_name for kind in KINDS)  # every CRD the chart installs
ROLE_NAMES = tuple(role["metadata"]["name"] for role in chart_roles())
INSTANCE = f"app.kubernetes.io/instance={RELEASE}"
TENANT = "tenant-alice"
# One job of these tests: 1 GPU for 1h at the dearest local price (H100, 28.00 CNY).
JOB_ESTIMATE = Decimal("28.00")


# --- helm and the release ----------------------------------------------------------------------


@dataclass
class Helm:
    binary: Path
    kubeconfig: str
    home: Path

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        result = subprocess.run(
            [str(self.binary), "--kubeconfig", self.kubeconfig, *args],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            env=env,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result


def release_values(webhook_port: int, **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        # The operator runs on this machine: the API server calls it at 127.0.0.1, and the
        # chart's certificate names that address.
        "webhook": {"url": f"https://127.0.0.1:{webhook_port}"},
        # Member kubeconfigs live in suanli-system (install.join_members puts them there).
        "rbac": {"secretNamespaces": [SYSTEM_NAMESPACE]},
    }
    for key, value in changes.items():
        values[key] = {**values.get(key, {}), **value}
    return values


def write_values(directory: Path, name: str, values: dict[str, Any]) -> str:
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


@dataclass
class Release:
    hub: Cluster
    helm: Helm
    workdir: Path
    operator: OperatorProcess
    installed: bool = True

    @property
    def admission(self) -> client.AdmissionregistrationV1Api:
        return client.AdmissionregistrationV1Api(self.hub.api)

    def secret(self, name: str) -> dict[str, bytes]:
        found = self.hub.core.read_namespaced_secret(name, CHART_NAMESPACE)
        return {key: base64.b64decode(value) for key, value in (found.data or {}).items()}


def _adopt_for_helm(hub: Cluster) -> None:
    """Mark what install_api created as the release's, so helm takes it over."""
    ownership = {
        "metadata": {
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {
                "meta.helm.sh/release-name": RELEASE,
                "meta.helm.sh/release-namespace": CHART_NAMESPACE,
            },
        }
    }
    extensions = client.ApiextensionsV1Api(hub.api)
    rbac = client.RbacAuthorizationV1Api(hub.api)
    for name in CRD_NAMES:
        extensions.patch_custom_resource_definition(name, ownership)
    for name in ROLE_NAMES:
        try:
            rbac.patch_cluster_role(name, ownership)
        except ApiException as error:
            if error.status != 404:
                raise


def _set_aside_session_webhook(hub: Cluster) -> dict[str, Any] | None:
    admission = client.AdmissionregistrationV1Api(hub.api)
    try:
        found = admission.read_validating_webhook_configuration(SESSION_WEBHOOK)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    saved: dict[str, Any] = hub.api.sanitize_for_serialization(found)
    admission.delete_validating_webhook_configuration(SESSION_WEBHOOK)
    return saved


def _restore_session_webhook(hub: Cluster, saved: dict[str, Any] | None) -> None:
    if saved is None:
        return
    metadata = saved["metadata"]
    saved["metadata"] = {
        key: metadata[key] for key in ("name", "labels", "annotations") if key in metadata
    }
    client.AdmissionregistrationV1Api(hub.api).create_validating_webhook_configuration(saved)


def _service_account_kubeconfig(hub: Cluster, token: str, path: Path) -> str:
    """The hub's kubeconfig with its user replaced by the ServiceAccount's token."""
    config = yaml.safe_load(Path(hub.info.kubeconfig).read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    cluster = next(c for c in config["clusters"] if c["name"] == context["context"]["cluster"])
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": RELEASE, "user": {"token": token}}],
                "contexts": [
                    {
                        "name": RELEASE,
                        "context": {"cluster": cluster["name"], "user": RELEASE},
                    }
                ],
                "current-context": RELEASE,
            }
        )
    )
    path.chmod(0o600)
    return str(path)


@pytest.fixture(scope="module")
def release(
    hub: Cluster,
    members_joined: list[str],
    session_operator_paused: None,
    toolchain: Toolchain,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Release]:
    """The chart installed on the hub, its operator not yet started."""
    workdir = tmp_path_factory.mktemp("chart")
    helm = Helm(toolchain.helm, hub.info.kubeconfig, workdir / "helm")
    # Built first for its free webhook port, which the chart's webhook configuration names.
    operator = OperatorProcess(
        "(set once the ServiceAccount has a token)",
        workdir / "operator",
        "--managed-webhook-config",
        "",
        "--recount-interval",
        "3",
        "--hold-grace",
        "5",
        # As the chart's Deployment runs it: its Lease in the release namespace (the only one
        # where the chart lets it hold one), and the chart's webhook timeout.
        "--lease-namespace",
        CHART_NAMESPACE,
        "--lease-name",
        f"{RELEASE}-admission",
        "--webhook-timeout",
        "10",
        *LEASE_ARGS,
    )
    state = Release(hub, helm, workdir, operator)
    saved_webhook: dict[str, Any] | None = None
    try:
        # The pod must pass the "restricted" Pod Security Standard to be created at all.
        hub.core.create_namespace(
            {
                "metadata": {
                    "name": CHART_NAMESPACE,
                    "labels": {
                        "pod-security.kubernetes.io/enforce": "restricted",
                        "pod-security.kubernetes.io/enforce-version": "latest",
                    },
                }
            }
        )
        saved_webhook = _set_aside_session_webhook(hub)
        _adopt_for_helm(hub)
        values = write_values(workdir, "install", release_values(operator.webhook_port))
        helm("install", RELEASE, str(CHART), "-n", CHART_NAMESPACE, "-f", values)
        yield state
    finally:
        operator.stop()
        if state.installed:
            helm("uninstall", RELEASE, "-n", CHART_NAMESPACE, "--wait", check=False)
        try:
            # Never leave a fail-closed webhook pointing at a stopped process.
            state.admission.delete_validating_webhook_configuration(f"{RELEASE}-admission")
        except ApiException as error:
            if error.status != 404:
                raise
        install.install_api(hub.api)  # the CRDs and ClusterRoles as the session had them
        _restore_session_webhook(hub, saved_webhook)
        hub.core.delete_namespace(CHART_NAMESPACE)
        print(operator.log()[-3000:])


@pytest.fixture(scope="module")
def chart_operator(release: Release) -> OperatorProcess:
    """The operator as a process, with the chart's certificate and ServiceAccount token."""
    operator = release.operator
    if operator.process is None:
        tls = release.secret(f"{RELEASE}-webhook-tls")
        certs = operator.workdir / "certs"  # where OperatorProcess points --webhook-cert-dir
        certs.mkdir(parents=True)
        for name in ("tls.crt", "tls.key", "ca.crt"):
            (certs / name).write_bytes(tls[name])
        (certs / "tls.key").chmod(0o600)
        token = kubectl(
            release.hub, "-n", CHART_NAMESPACE, "create", "token", RELEASE, "--duration=2h"
        ).stdout.strip()
        operator.kubeconfig = _service_account_kubeconfig(
            release.hub, token, release.workdir / "service-account.kubeconfig"
        )
        operator.start()
    return operator


# --- tenant objects ----------------------------------------------------------------------------


def job(name: str, voucher_name: str, gpus: int = 1) -> dict[str, Any]:
    # Runs (on kwok) past the end of the test, so its hold stays held.
    return compute_job(name, voucher_name=voucher_name, gpus=gpus, models=["H100"], run_for="1h")


class Tenant:
    """The admin's view of one namespace (the hub kubeconfig)."""

    def __init__(self, hub: Cluster, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(hub.api)
        self.namespace = namespace

    def create(self, plural: str, body: dict[str, Any], **kwargs: Any) -> None:
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, body, **kwargs
        )

    def refused(self, plural: str, body: dict[str, Any]) -> str:
        with pytest.raises(ApiException) as error:
            self.create(plural, body)
        assert error.value.status == 403, error.value
        return str(error.value.body)

    def reserved(self, voucher_name: str) -> Decimal:
        found = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "voucherquotas", voucher_name
        )
        return Decimal((found.get("status") or {}).get("reserved", "-1"))

    def wait_reserved(self, voucher_name: str, expected: Decimal) -> None:
        wait_for(
            lambda: self.reserved(voucher_name) == expected,
            timeout=TIMEOUTS.condition_stable,
            what=f"voucher {voucher_name} to show {expected} reserved",
        )

    def delete_jobs(self) -> None:
        """Delete the namespace's jobs while an operator runs to release their finalizers."""
        self.custom.delete_collection_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "computejobs"
        )
        wait_for(
            lambda: (
                not self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, "computejobs"
                )["items"]
            ),
            timeout=TIMEOUTS.job_complete,
            what="the test's ComputeJobs to be deleted",
        )


def _assert_no_permission_errors(operator: OperatorProcess) -> None:
    log = operator.log_path.read_text(errors="replace")
    denied = [line for line in log.splitlines() if "forbidden" in line.lower()]
    assert denied == [], "the chart's RBAC refused the operator:\n" + "\n".join(denied[:20])


# --- the tests, in the order a cluster admin lives them -----------------------------------------


def test_the_chart_installs_the_hub(release: Release) -> None:
    hub = release.hub
    apps = client.AppsV1Api(hub.api)
    deployment = apps.read_namespaced_deployment(f"{RELEASE}-operator", CHART_NAMESPACE)
    assert deployment.spec.strategy.type == "RollingUpdate"
    assert deployment.spec.replicas == 2
    budget = client.PolicyV1Api(hub.api).read_namespaced_pod_disruption_budget(
        f"{RELEASE}-operator", CHART_NAMESPACE
    )
    assert budget.spec.min_available == 1
    # The ReplicaSet's pod passes the namespace's "restricted" Pod Security admission (it stays
    # Pending: the hub has no nodes). Check that the admission is really on: a privileged pod
    # is refused.
    pods = wait_for(
        lambda: hub.core.list_namespaced_pod(CHART_NAMESPACE, label_selector=INSTANCE).items,
        timeout=TIMEOUTS.pod_scheduled,
        what="the operator's ReplicaSet to create its pod under the restricted policy",
    )
    assert pods[0].spec.service_account_name == RELEASE
    privileged = {
        "metadata": {"name": "privileged"},
        "spec": {
            "containers": [{"name": "c", "image": "x", "securityContext": {"privileged": True}}]
        },
    }
    with pytest.raises(ApiException) as error:
        hub.core.create_namespaced_pod(CHART_NAMESPACE, privileged, dry_run="All")
    assert error.value.status == 403 and "PodSecurity" in str(error.value.body)

    configuration = release.admission.read_validating_webhook_configuration(f"{RELEASE}-admission")
    port = release.operator.webhook_port
    assert sorted(w.client_config.url for w in configuration.webhooks) == sorted(
        f"https://127.0.0.1:{port}/{handler}"
        for handler in (
            "computejob-admission",
            "computejob-immutable",
            "voucherquota-validation",
            "membercluster-validation",
            "voucherprogram-validation",
        )
    )
    tls = release.secret(f"{RELEASE}-webhook-tls")
    for webhook in configuration.webhooks:
        assert base64.b64decode(webhook.client_config.ca_bundle) == tls["ca.crt"]
    extensions = client.ApiextensionsV1Api(hub.api)
    for name in CRD_NAMES:
        crd = extensions.read_custom_resource_definition(name)
        assert crd.metadata.annotations["helm.sh/resource-policy"] == "keep"
        assert crd.metadata.labels["app.kubernetes.io/instance"] == RELEASE
    listed = release.helm("list", "-n", CHART_NAMESPACE, "-o", "yaml").stdout
    assert [(r["name"], r["status"]) for r in yaml.safe_load(listed)] == [(RELEASE, "deployed")]


def test_the_operator_enforces_vouchers_with_the_chart_service_account(
    release: Release, chart_operator: OperatorProcess, namespace: str
) -> None:
    tenant = Tenant(release.hub, namespace)
    # Room for one job and 22.00 CNY more.
    tenant.create("voucherquotas", voucher("team", str(JOB_ESTIMATE + Decimal("22.00"))))
    # A dry run is checked and reserves nothing: had it held 28.00, the real job would not fit.
    tenant.create("computejobs", job("probe", "team"), dry_run="All")
    tenant.create("computejobs", job("first", "team"))
    tenant.wait_reserved("team", JOB_ESTIMATE)

    message = tenant.refused("computejobs", job("second", "team"))
    assert "team" in message and "short by 6.00 CNY" in message, message
    message = tenant.refused("computejobs", job("huge", "team", gpus=4))
    assert "short by 90.00 CNY" in message, message
    assert tenant.reserved("team") == JOB_ESTIMATE

    with pytest.raises(ApiException) as error:
        tenant.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "computejobs", "first", {"spec": {"gpusPerReplica": 2}}
        )
    assert "spec.gpusPerReplica: cannot change after admission" in str(error.value.body)

    tenant.delete_jobs()
    _assert_no_permission_errors(chart_operator)


def test_the_chart_operator_dispatches_and_charges_a_job(
    release: Release, chart_operator: OperatorProcess, namespace: str
) -> None:
    """The whole flow, admission to charge, with nothing but the chart's RBAC."""
    tenant = Tenant(release.hub, namespace)
    tenant.create("voucherquotas", voucher("flow", "1000.00"))
    tenant.create(
        "computejobs", compute_job("run", voucher_name="flow", models=["H100"], run_for="2s")
    )

    def finished() -> dict[str, Any] | None:
        found = tenant.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "computejobs", "run"
        )
        status: dict[str, Any] = found.get("status") or {}
        return status if status.get("chargedCost") else None

    status = wait_for(finished, timeout=TIMEOUTS.job_complete, what="the job to be charged")
    assert status["phase"] == "Succeeded" and status["cluster"] == "member-a"
    tenant.wait_reserved("flow", Decimal(0))
    spent = tenant.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "voucherquotas", "flow"
    )["status"]["spent"]
    assert Decimal(spent) == Decimal(status["chargedCost"]) > 0
    tenant.delete_jobs()
    _assert_no_permission_errors(chart_operator)


def test_an_upgrade_applies_new_values_and_keeps_the_certificate(
    release: Release, chart_operator: OperatorProcess, namespace: str
) -> None:
    before = release.secret(f"{RELEASE}-webhook-tls")
    changes = {
        "operator": {"recountInterval": 7},
        "metrics": {"service": {"enabled": False}},
        "commonLabels": {"suanli.io/e2e-revision": "2"},
        # Stored by the real API server: its validation of the policy and the ConfigMap.
        "networkPolicy": {"enabled": True, "webhookFrom": [{"ipBlock": {"cidr": "127.0.0.0/8"}}]},
        "monitoring": {"dashboard": {"enabled": True}},
        "rbac": {
            "secretNamespaces": [SYSTEM_NAMESPACE],
            "tenantBindings": [
                {
                    "namespace": namespace,
                    "subjects": [
                        {"kind": "User", "name": TENANT, "apiGroup": "rbac.authorization.k8s.io"}
                    ],
                }
            ],
        },
    }
    values = release_values(release.operator.webhook_port, **changes)
    path = write_values(release.workdir, "upgrade", values)
    release.helm("upgrade", RELEASE, str(CHART), "-n", CHART_NAMESPACE, "-f", path)

    hub = release.hub
    deployment = client.AppsV1Api(hub.api).read_namespaced_deployment(
        f"{RELEASE}-operator", CHART_NAMESPACE
    )
    assert "--recount-interval=7" in deployment.spec.template.spec.containers[0].args
    assert deployment.metadata.labels["suanli.io/e2e-revision"] == "2"
    services = hub.core.list_namespaced_service(CHART_NAMESPACE, label_selector=INSTANCE).items
    assert [s.metadata.name for s in services] == [f"{RELEASE}-webhook"]
    policy = client.NetworkingV1Api(hub.api).read_namespaced_network_policy(
        f"{RELEASE}-operator", CHART_NAMESPACE
    )
    assert [p.port for rule in policy.spec.ingress for p in rule.ports] == ["webhook", "metrics"]
    dashboard = hub.core.read_namespaced_config_map(f"{RELEASE}-dashboard", CHART_NAMESPACE)
    assert dashboard.metadata.labels["grafana_dashboard"] == "1"
    assert json.loads(dashboard.data["suanli.json"])["uid"] == "suanli-hub"
    # The certificate the API server trusts is kept, so the running operator still serves.
    assert release.secret(f"{RELEASE}-webhook-tls") == before
    configuration = release.admission.read_validating_webhook_configuration(f"{RELEASE}-admission")
    assert base64.b64decode(configuration.webhooks[0].client_config.ca_bundle) == before["ca.crt"]

    # The new tenant binding: the tenant submits jobs and reads, but never writes, vouchers.
    def can(verb: str, resource: str) -> bool:
        result = kubectl(
            hub, "auth", "can-i", verb, resource, "-n", namespace, f"--as={TENANT}", check=False
        )
        return result.stdout.strip() == "yes"

    assert can("create", "computejobs.suanli.io")
    assert can("get", "voucherquotas.suanli.io")
    assert not can("patch", "voucherquotas.suanli.io")
    assert not can("update", "voucherquotas.suanli.io/status")
    assert not can("get", "secrets")
    # Nor choose its own subsidy (its namespace's company labels), nor touch programmes and
    # their statements.
    assert not can("patch", "namespaces")
    assert not can("patch", "voucherprograms.suanli.io")
    assert not can("create", "voucherstatements.suanli.io")
    assert not can("get", "voucherstatements.suanli.io")

    # And through it, the operator of the upgraded release still admits against the voucher.
    tenant = Tenant(hub, namespace)
    tenant.create("voucherquotas", voucher("after-upgrade", "100.00"))
    manifest = yaml.safe_dump(job("by-tenant", "after-upgrade"))
    kubectl(hub, "-n", namespace, "create", f"--as={TENANT}", "-f", "-", stdin=manifest)
    tenant.wait_reserved("after-upgrade", JOB_ESTIMATE)
    tenant.delete_jobs()
    _assert_no_permission_errors(chart_operator)


def _leftovers(hub: Cluster) -> list[str]:
    """Every object of the release still on the hub, as Kind/name."""
    rbac = client.RbacAuthorizationV1Api(hub.api)
    apps = client.AppsV1Api(hub.api)
    labelled = {
        "Deployment": apps.list_deployment_for_all_namespaces,
        "ReplicaSet": apps.list_replica_set_for_all_namespaces,
        "Pod": hub.core.list_pod_for_all_namespaces,
        "Service": hub.core.list_service_for_all_namespaces,
        "Secret": hub.core.list_secret_for_all_namespaces,
        "ServiceAccount": hub.core.list_service_account_for_all_namespaces,
        "ConfigMap": hub.core.list_config_map_for_all_namespaces,
        "Role": rbac.list_role_for_all_namespaces,
        "RoleBinding": rbac.list_role_binding_for_all_namespaces,
        "ClusterRoleBinding": rbac.list_cluster_role_binding,
    }
    found = [
        f"{kind}/{item.metadata.name}"
        for kind, lister in labelled.items()
        for item in lister(label_selector=INSTANCE).items
    ]
    found += [
        f"ClusterRole/{role.metadata.name}"
        for role in rbac.list_cluster_role().items
        if role.metadata.name in ROLE_NAMES
    ]
    # Helm's own record of the release.
    found += [
        f"Secret/{secret.metadata.name}"
        for secret in hub.core.list_namespaced_secret(
            CHART_NAMESPACE, label_selector=f"owner=helm,name={RELEASE}"
        ).items
    ]
    return found


def test_uninstall_leaves_only_what_the_crd_policy_keeps(
    release: Release, chart_operator: OperatorProcess, namespace: str
) -> None:
    hub = release.hub
    tenant = Tenant(hub, namespace)
    tenant.create("voucherquotas", voucher("kept", "10.00"))
    # Stopped once it has written the voucher's first status, not in the middle of it.
    tenant.wait_reserved("kept", Decimal(0))
    chart_operator.stop()
    release.helm("uninstall", RELEASE, "-n", CHART_NAMESPACE, "--wait")
    release.installed = False

    # No webhook configuration is left to refuse every later ComputeJob.
    configurations = release.admission.list_validating_webhook_configuration().items
    assert f"{RELEASE}-admission" not in [c.metadata.name for c in configurations]
    # The garbage collector removes the ReplicaSet and its pod after the Deployment.
    wait_for(
        lambda: not _leftovers(hub),
        timeout=TIMEOUTS.api_ready,
        what="every object of the release to be deleted",
    )
    # What the CRD policy keeps: the CRDs, and with them the tenants' objects.
    extensions = client.ApiextensionsV1Api(hub.api)
    for name in CRD_NAMES:
        crd = extensions.read_custom_resource_definition(name)
        assert crd.metadata.annotations["helm.sh/resource-policy"] == "keep"
    kept = tenant.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "voucherquotas", "kept"
    )
    assert Decimal(str(kept["spec"]["amount"])) == Decimal("10.00")
    assert release.helm("list", "-A", "-q").stdout.strip() == ""
