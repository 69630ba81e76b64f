"""The Helm chart on a kind hub, as in production: the operator's pod Running and Ready behind
its probes, its webhook answering through the Service with the chart's certificate, an upgrade
that keeps the certificate, and an uninstall that leaves only what the CRD policy keeps.

Named to run last in this directory: it upgrades and finally uninstalls the release the other
tests use.
"""

from __future__ import annotations

import base64
from decimal import Decimal
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.kind.conftest import GROUP, VERSION
from e2e.kube import Cluster
from e2e.tenant import compute_job, voucher
from suanli.devenv import federation, kind_install
from suanli.devenv.toolchain import Toolchain
from suanli.kits.waiting import TIMEOUTS, wait_for

RELEASE = kind_install.RELEASE
NAMESPACE = kind_install.NAMESPACE
CRD_NAMES = ("computejobs.suanli.io", "voucherquotas.suanli.io", "memberclusters.suanli.io")


def _tls(hub: Cluster) -> dict[str, bytes]:
    secret = hub.core.read_namespaced_secret(f"{RELEASE}-webhook-tls", NAMESPACE)
    return {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}


def _refused(hub: Cluster, namespace: str, body: dict[str, object]) -> str:
    custom = client.CustomObjectsApi(hub.api)
    with pytest.raises(ApiException) as error:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "computejobs", body)
    assert error.value.status == 403, error.value
    return str(error.value.body)


def _webhook_answers(hub: Cluster, namespace: str) -> None:
    """A job its voucher cannot pay for is refused with the operator's own message.

    A pod just made Ready can take a moment to become the Service's endpoint in kube-proxy's
    rules; until then the API server's call to the webhook is refused, and the write with it.
    """
    custom = client.CustomObjectsApi(hub.api)

    def voucher_created() -> bool:
        try:
            custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "voucherquotas", voucher("small", "10.00")
            )
        except ApiException as error:
            if error.status == 500 and "connection refused" in str(error.body):
                return False
            raise
        return True

    wait_for(voucher_created, timeout=TIMEOUTS.api_ready, what="the webhook's Service to answer")
    message = _refused(hub, namespace, compute_job("too-dear", voucher_name="small", run_for="1h"))
    assert "small" in message and "short by 18.00 CNY" in message, message


def test_the_leader_s_pod_is_ready_and_its_webhook_answers_through_the_service(
    kind_clusters: dict[str, Cluster],
    kind_fed: federation.FederationState,
    suanli_installed: kind_install.Images,
    kind_namespace: str,
) -> None:
    hub = kind_clusters["hub"]
    pod = kind_install.wait_admission_leader(kind_fed.hub)
    container = pod.spec.containers[0]
    assert container.image == suanli_installed.operator
    assert container.liveness_probe.http_get.path == "/healthz"
    assert container.readiness_probe is not None
    assert pod.spec.service_account_name == RELEASE
    assert pod.status.container_statuses[0].restart_count == 0

    # The API server calls the webhook through the chart's Service, whose endpoint is the pod.
    configuration = client.AdmissionregistrationV1Api(
        hub.api
    ).read_validating_webhook_configuration(f"{RELEASE}-admission")
    tls = _tls(hub)
    for webhook in configuration.webhooks:
        assert webhook.client_config.url is None
        assert webhook.client_config.service.name == f"{RELEASE}-webhook"
        assert webhook.client_config.service.namespace == NAMESPACE
        assert base64.b64decode(webhook.client_config.ca_bundle) == tls["ca.crt"]

    # The Service's one endpoint is the leader (a standby would only answer "retry").
    slices = client.DiscoveryV1Api(hub.api).list_namespaced_endpoint_slice(
        NAMESPACE, label_selector=f"kubernetes.io/service-name={RELEASE}-webhook"
    )
    addresses = [a for s in slices.items for e in s.endpoints or [] for a in e.addresses]
    assert addresses == [pod.status.pod_ip]
    _webhook_answers(hub, kind_namespace)


def test_an_upgrade_hands_admission_to_a_new_replica_and_keeps_the_certificate(
    kind_clusters: dict[str, Cluster],
    kind_fed: federation.FederationState,
    kind_toolchain: Toolchain,
    suanli_installed: kind_install.Images,
    kind_namespace: str,
) -> None:
    hub = kind_clusters["hub"]
    before = _tls(hub)
    old_pod = kind_install.wait_admission_leader(kind_fed.hub)
    workdir = Path(kind_fed.directory) / "helm"
    helm = kind_install.Helm(kind_toolchain.helm, kind_fed.hub.kubeconfig, workdir)
    values = kind_install.hub_values(
        suanli_installed, operator={"recountInterval": 7}, commonLabels={"suanli.io/rev": "2"}
    )
    helm.install(RELEASE, kind_install.charts_dir() / "suanli", values, workdir)

    deployment = client.AppsV1Api(hub.api).read_namespaced_deployment(
        f"{RELEASE}-operator", NAMESPACE
    )
    assert "--recount-interval=7" in deployment.spec.template.spec.containers[0].args
    # A rolling update: new replicas, one of them leading; the certificate is kept.
    new_pod = wait_for(
        lambda: (
            pod
            if (pod := kind_install.wait_admission_leader(kind_fed.hub)).metadata.uid
            != old_pod.metadata.uid
            and (pod.metadata.labels or {}).get("suanli.io/rev") == "2"
            else None
        ),
        timeout=TIMEOUTS.job_complete,
        what="an upgraded replica to lead",
    )
    assert new_pod.metadata.labels["suanli.io/rev"] == "2"
    assert _tls(hub) == before
    _webhook_answers(hub, kind_namespace)
    # And it still admits what the voucher affords.
    custom = client.CustomObjectsApi(hub.api)
    custom.create_namespaced_custom_object(
        GROUP, VERSION, kind_namespace, "voucherquotas", voucher("after", "100.00")
    )
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        kind_namespace,
        "computejobs",
        compute_job("admitted", voucher_name="after", run_for="1h"),
    )

    def reserved() -> Decimal | None:
        found = custom.get_namespaced_custom_object(
            GROUP, VERSION, kind_namespace, "voucherquotas", "after"
        )
        value = Decimal((found.get("status") or {}).get("reserved", "-1"))
        return value if value == Decimal("28.00") else None

    wait_for(reserved, timeout=TIMEOUTS.job_complete, what="the job's hold on the voucher")
    custom.delete_namespaced_custom_object(
        GROUP, VERSION, kind_namespace, "computejobs", "admitted"
    )


def test_uninstall_leaves_only_what_the_crd_policy_keeps(
    kind_clusters: dict[str, Cluster],
    kind_fed: federation.FederationState,
    kind_toolchain: Toolchain,
    suanli_installed: kind_install.Images,
) -> None:
    hub = kind_clusters["hub"]
    workdir = Path(kind_fed.directory) / "helm"
    helm = kind_install.Helm(kind_toolchain.helm, kind_fed.hub.kubeconfig, workdir)
    helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "180s")

    admission = client.AdmissionregistrationV1Api(hub.api)
    names = [c.metadata.name for c in admission.list_validating_webhook_configuration().items]
    assert f"{RELEASE}-admission" not in names
    selector = f"app.kubernetes.io/instance={RELEASE}"

    def gone() -> bool:
        pods = hub.core.list_namespaced_pod(NAMESPACE, label_selector=selector).items
        services = hub.core.list_namespaced_service(NAMESPACE, label_selector=selector).items
        deployments = (
            client.AppsV1Api(hub.api)
            .list_namespaced_deployment(NAMESPACE, label_selector=selector)
            .items
        )
        return not (pods or services or deployments)

    wait_for(gone, timeout=TIMEOUTS.job_complete, what="the release's objects to be deleted")
    extensions = client.ApiextensionsV1Api(hub.api)
    for name in CRD_NAMES:
        crd = extensions.read_custom_resource_definition(name)
        assert crd.metadata.annotations["helm.sh/resource-policy"] == "keep"
