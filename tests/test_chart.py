"""The Helm chart, rendered by the real helm binary: what it installs, under which values.

No cluster: ``helm template`` renders the manifests and ``helm lint`` checks the chart; the tests
read the manifests as data. e2e/test_chart.py installs the same chart on a real hub.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import re
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from suanli.api.crdgen import generate as generate_crds
from suanli.api.names import LEADER_LABEL
from suanli.devenv.toolchain import HELM, KUBERNETES_VERSION
from suanli.rbac import OPERATOR_ROLE, WEBHOOK_MANAGER_ROLE, chart_roles
from tests.built_tools import built

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "suanli"
RELEASE, NAMESPACE = "suanli", "suanli-system"
KUBE_VERSION = KUBERNETES_VERSION.removeprefix("v")
RBAC_KINDS = ("Role", "ClusterRole")

# The admission handlers of operator/suanli/handlers/admission.py, as Kopf registers them.
VALIDATING = "ValidatingWebhookConfiguration"
MUTATING = "MutatingWebhookConfiguration"
HANDLERS = {
    "computejob-admission": (VALIDATING, "computejobs", ["CREATE"], "NoneOnDryRun", "Fail"),
    "computejob-immutable": (VALIDATING, "computejobs", ["UPDATE"], "None", "Fail"),
    "voucherquota-validation": (VALIDATING, "voucherquotas", ["CREATE", "UPDATE"], "None", "Fail"),
    "membercluster-validation": (
        VALIDATING,
        "memberclusters",
        ["CREATE", "UPDATE"],
        "None",
        "Fail",
    ),
    "voucherprogram-validation": (
        VALIDATING,
        "voucherprograms",
        ["CREATE", "UPDATE"],
        "None",
        "Fail",
    ),
    "computejob-defaults": (MUTATING, "computejobs", ["CREATE"], "None", "Ignore"),
}


# --- running helm ------------------------------------------------------------------------------


def helm_binary() -> Path:
    return built(HELM, "helm")


def run_helm(*args: str, tmp: Path | None = None) -> subprocess.CompletedProcess[str]:
    home = tmp or Path("/tmp/suanli-test-helm-home")
    env = {
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        [str(helm_binary()), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def _arguments(settings: tuple[tuple[str, Any], ...], values_files: tuple[Path, ...]) -> list[str]:
    args: list[str] = []
    for path in values_files:
        args += ["--values", str(path)]
    for key, value in settings:
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    return args


def template_result(
    *settings: tuple[str, Any], values_files: tuple[Path, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return run_helm(
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
        *_arguments(settings, values_files),
    )


@cache
def _render(settings: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    result = template_result(*((key, json.loads(value)) for key, value in settings))
    assert result.returncode == 0, result.stderr
    return tuple(json.dumps(doc) for doc in yaml.safe_load_all(result.stdout) if doc)


def render(**settings: Any) -> list[dict[str, Any]]:
    """The manifests for ``--set-json key=value`` settings; keys use __ for dots.

    Renders are cached per settings (as JSON text), and each call returns fresh objects.
    """
    frozen = tuple(sorted((key.replace("__", "."), json.dumps(v)) for key, v in settings.items()))
    return [json.loads(doc) for doc in _render(frozen)]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, got {len(matches)}"
    return matches[0]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)


# Value combinations every structural test runs under.
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "cert-manager": {"webhook__certificate__source": "cert-manager"},
    "external-operator": {"webhook__url": "https://127.0.0.1:9443"},
    "bindings": {
        "rbac__tenantBindings": [
            {"namespace": "tenant-acme", "subjects": [{"kind": "Group", "name": "acme"}]}
        ],
        "rbac__platformAdminBindings": [{"subjects": [{"kind": "User", "name": "root"}]}],
        "rbac__secretNamespaces": ["member-secrets"],
    },
    "member": {"hub__enabled": False, "exporter__enabled": True},
    "everything": {
        "exporter__enabled": True,
        "metrics__serviceMonitor__enabled": True,
        "monitoring__dashboard__enabled": True,
        "monitoring__prometheusRule__enabled": True,
        "networkPolicy__enabled": True,
        "webhook__certificate__source": "cert-manager",
        "webhook__certificate__certManager__issuerRef": {"kind": "ClusterIssuer", "name": "ca"},
    },
}


@pytest.fixture(params=sorted(VARIANTS))
def variant(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(**VARIANTS[request.param])


# --- lint and structure ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_helm_lint_passes(name: str) -> None:
    settings = tuple((k.replace("__", "."), v) for k, v in VARIANTS[name].items())
    result = run_helm(
        "lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION, *_arguments(settings, ())
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_default_install_is_the_hub() -> None:
    assert kinds(render()) == [
        "ClusterRole/suanli-operator",
        "ClusterRole/suanli-platform-admin",
        "ClusterRole/suanli-tenant",
        "ClusterRoleBinding/suanli-operator",
        "CustomResourceDefinition/computejobs.suanli.io",
        "CustomResourceDefinition/memberclusters.suanli.io",
        "CustomResourceDefinition/usagerecords.suanli.io",
        "CustomResourceDefinition/voucherprograms.suanli.io",
        "CustomResourceDefinition/voucherquotas.suanli.io",
        "CustomResourceDefinition/voucherstatements.suanli.io",
        "Deployment/suanli-operator",
        "MutatingWebhookConfiguration/suanli-admission",
        "PodDisruptionBudget/suanli-operator",
        "Role/suanli-operator-leader",
        "Role/suanli-operator-secrets",
        "RoleBinding/suanli-operator-leader",
        "RoleBinding/suanli-operator-secrets",
        "Secret/suanli-webhook-tls",
        "Service/suanli-metrics",
        "Service/suanli-webhook",
        "ServiceAccount/suanli",
        "ValidatingWebhookConfiguration/suanli-admission",
    ]


def test_a_member_cluster_gets_only_the_exporter() -> None:
    docs = render(hub__enabled=False, exporter__enabled=True)
    assert kinds(docs) == ["DaemonSet/suanli-exporter", "Service/suanli-exporter"]
    container = find(docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "exporter"


def test_the_exporter_asks_for_the_nodes_gpus_by_a_mount_not_by_its_environment() -> None:
    pod = find(render(hub__enabled=False, exporter__enabled=True), "DaemonSet")["spec"]
    pod = pod["template"]["spec"]
    (container,) = pod["containers"]
    names = {env["name"] for env in container["env"]}
    # Members keep the runtime from reading devices from the environment (tenants set it).
    assert "NVIDIA_VISIBLE_DEVICES" not in names
    assert "NVIDIA_DRIVER_CAPABILITIES" in names
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == "/var/run/nvidia-container-devices/all"
    assert [v["name"] for v in pod["volumes"]] == [mount["name"]]
    assert "nvidia.com/gpu" not in str(container.get("resources"))

    plain = find(
        render(hub__enabled=False, exporter__enabled=True, exporter__nvidiaDeviceRequest=False),
        "DaemonSet",
    )["spec"]["template"]["spec"]
    assert "volumeMounts" not in plain["containers"][0] and "volumes" not in plain


def test_every_object_is_labelled_and_namespaced_in_the_release(
    variant: list[dict[str, Any]],
) -> None:
    cluster_scoped = {
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        MUTATING,
        VALIDATING,
    }
    for doc in variant:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "suanli", doc["metadata"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        if doc["kind"] in cluster_scoped:
            assert "namespace" not in doc["metadata"]
        elif doc["kind"] not in ("Role", "RoleBinding"):
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]


# --- RBAC: rbac.py's roles, no wildcard --------------------------------------------------------


def test_no_rule_uses_a_wildcard(variant: list[dict[str, Any]]) -> None:
    for doc in variant:
        if doc["kind"] not in RBAC_KINDS:
            continue
        for rule in doc["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert "*" not in rule.get(key, []), (doc["metadata"]["name"], rule)
                assert not any("*" in item for item in rule.get(key, [])), rule


def _canonical(rules: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(rule, sort_keys=True) for rule in rules)


def test_cluster_roles_are_those_of_rbac_py() -> None:
    docs = render(rbac__secretNamespaces=["member-secrets"])
    for role in chart_roles():
        name = role["metadata"]["name"]
        rendered = find(docs, "ClusterRole", name)
        assert rendered["metadata"]["annotations"] == role["metadata"]["annotations"]
        rules = list(rendered["rules"])
        if name == OPERATOR_ROLE:
            # The Secret rule moves to Roles, one per namespace that holds kubeconfigs.
            # The Lease and pod rules move to one Role in the release namespace.
            roles = [d for d in docs if d["kind"] == "Role"]
            secret_roles = [r for r in roles if r["metadata"]["name"].endswith("-secrets")]
            assert sorted(r["metadata"]["namespace"] for r in secret_roles) == [
                "member-secrets",
                NAMESPACE,
            ]
            for secret_role in secret_roles:
                assert all(
                    r["resources"] == ["secrets", "configmaps"] for r in secret_role["rules"]
                )
            rules += secret_roles[0]["rules"]
            rules += find(docs, "Role", "suanli-operator-leader")["rules"]
        assert _canonical(rules) == _canonical(role["rules"]), name


def test_the_chart_grants_no_webhook_configuration_writes(
    variant: list[dict[str, Any]],
) -> None:
    # The chart renders the webhook configurations and runs the operator with
    # --managed-webhook-config=, so nothing it installs may write them.
    configurations = {"validatingwebhookconfigurations", "mutatingwebhookconfigurations"}
    for doc in variant:
        assert not (
            doc["kind"] == "ClusterRole" and doc["metadata"]["name"] == WEBHOOK_MANAGER_ROLE
        )
        if doc["kind"] not in RBAC_KINDS:
            continue
        for rule in doc["rules"]:
            assert not configurations & set(rule.get("resources", [])), rule


def test_the_operator_reads_secrets_by_name_only() -> None:
    docs = render(rbac__secretNamespaces=["member-secrets"])
    roles = [d for d in docs if d["kind"] == "Role"]
    for role in (r for r in roles if r["metadata"]["name"] == "suanli-operator-secrets"):
        assert role["rules"] == [
            {"apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": ["get"]}
        ]


def test_the_lease_and_the_leader_label_are_granted_in_the_release_namespace_only() -> None:
    docs = render(rbac__secretNamespaces=["member-secrets"])
    role = find(docs, "Role", "suanli-operator-leader")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "create", "update"],
        },
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]},
    ]
    cluster_role = find(docs, "ClusterRole", OPERATOR_ROLE)
    resources = {r for rule in cluster_role["rules"] for r in rule["resources"]}
    assert not resources & {"leases", "pods", "secrets", "configmaps"}


def test_the_operator_is_bound_to_its_roles_through_its_service_account() -> None:
    docs = render(rbac__secretNamespaces=["member-secrets"])
    account = find(docs, "ServiceAccount")["metadata"]["name"]
    deployment = find(docs, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account
    subject = {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    binding = find(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == OPERATOR_ROLE
    assert binding["subjects"] == [subject]
    for role_binding in (d for d in docs if d["kind"] == "RoleBinding"):
        assert role_binding["subjects"] == [subject]
        name = role_binding["metadata"]["name"]
        assert name in ("suanli-operator-secrets", "suanli-operator-leader")
        assert role_binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": name,
        }


def test_tenant_and_platform_admin_bindings() -> None:
    docs = render(**VARIANTS["bindings"])
    tenant = find(docs, "RoleBinding", "suanli-tenant")
    assert tenant["metadata"]["namespace"] == "tenant-acme"
    assert tenant["roleRef"]["name"] == "suanli-tenant"
    assert tenant["subjects"] == [{"kind": "Group", "name": "acme"}]
    admin = find(docs, "ClusterRoleBinding", "suanli-platform-admin")
    assert admin["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "suanli-platform-admin",
    }
    delegated = render(
        rbac__platformAdminBindings=[
            {"namespace": "tenant-acme", "subjects": [{"kind": "User", "name": "ops"}]}
        ]
    )
    assert find(delegated, "RoleBinding", "suanli-platform-admin")["metadata"]["namespace"] == (
        "tenant-acme"
    )


def test_a_namespace_bound_twice_is_refused() -> None:
    entry = {"namespace": "tenant-acme", "subjects": [{"kind": "Group", "name": "acme"}]}
    result = template_result(("rbac.tenantBindings", [entry, entry]))
    assert result.returncode != 0
    assert 'rbac.tenantBindings[1]: namespace "tenant-acme" is bound twice' in result.stderr


# --- the operator Deployment -------------------------------------------------------------------


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def test_two_replicas_roll_one_at_a_time_and_the_webhook_routes_to_the_leader() -> None:
    docs = render()
    spec = find(docs, "Deployment")["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    budget = find(docs, "PodDisruptionBudget")["spec"]
    assert budget["minAvailable"] == 1
    assert budget["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    selector = find(docs, "Service", "suanli-webhook")["spec"]["selector"]
    assert selector == {**spec["selector"]["matchLabels"], LEADER_LABEL: "true"}
    env = {e["name"]: e.get("valueFrom") for e in _container(docs)["env"]}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_the_lease_timings_and_the_webhook_timeout_reach_the_operator() -> None:
    docs = render(operator__lease__duration=20, webhook__timeoutSeconds=7)
    args = _container(docs)["args"]
    assert "--lease-duration=20" in args
    assert "--lease-name=suanli-admission" in args
    assert "--webhook-timeout=7" in args
    webhooks = find(docs, VALIDATING)["webhooks"]
    assert {hook["timeoutSeconds"] for hook in webhooks} == {7}


def test_the_disruption_budget_can_be_left_out() -> None:
    docs = render(operator__podDisruptionBudget__enabled=False)
    assert "PodDisruptionBudget" not in {doc["kind"] for doc in docs}


def test_the_operator_is_locked_down() -> None:
    deployment = find(render(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = _container([deployment])
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    # The only writable place is an emptyDir.
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/etc/suanli/webhook-tls"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]


def test_the_operator_arguments_match_its_ports_and_probes() -> None:
    docs = render(webhook__port=9999, metrics__port=9100, operator__healthPort=8181)
    container = _container(docs)
    args = container["args"]
    assert args[0] == "run"
    assert "--webhook-port=9999" in args
    assert "--webhook-host=0.0.0.0" in args
    assert "--metrics-port=9100" in args
    assert "--liveness=http://0.0.0.0:8181/healthz" in args
    # The chart owns the webhook configuration: the operator must not manage one.
    assert "--managed-webhook-config=" in args
    cert_dir = next(a for a in args if a.startswith("--webhook-cert-dir="))
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[cert_dir.split("=", 1)[1]] == "webhook-tls"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"webhook": 9999, "metrics": 9100, "health": 8181}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    service = find(docs, "Service", "suanli-webhook")
    assert service["spec"]["ports"][0]["targetPort"] == "webhook"
    metrics = find(docs, "Service", "suanli-metrics")
    assert metrics["spec"]["ports"][0]["targetPort"] == "metrics"
    selector = find(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    # Metrics come from every replica; admission reviews go to the leader alone.
    assert metrics["spec"]["selector"] == selector
    assert service["spec"]["selector"] == {**selector, LEADER_LABEL: "true"}


def test_extra_arguments_and_image() -> None:
    docs = render(
        operator__extraArgs=["--verbose"],
        operator__recountInterval=5,
        image__tag="1.2.3",
        image__repository="registry.example/suanli",
    )
    container = _container(docs)
    assert container["image"] == "registry.example/suanli:1.2.3"
    assert container["args"][-1] == "--verbose"
    assert "--recount-interval=5" in container["args"]
    assert _container(render())["image"] == "ghcr.io/suanli/suanli:0.1.0"


def test_job_retention_is_off_unless_set_and_passed_in_whole_seconds() -> None:
    assert not any(a.startswith("--job-retention") for a in _container(render())["args"])
    # A year: Helm reads numbers as floats, and would otherwise write 3.1536e+07.
    year = _container(render(operator__jobRetention=31536000))["args"]
    assert "--job-retention=31536000" in year


# --- the webhook -------------------------------------------------------------------------------


def test_one_webhook_per_kopf_admission_handler() -> None:
    # Kopf's registry is filled by importing the handler module; compare the chart with it.
    from kopf._core.intents import registries  # noqa: PLC0415
    from kopf._core.intents.causes import WebhookType  # noqa: PLC0415

    from suanli.handlers import admission  # noqa: F401, PLC0415

    kind = {WebhookType.VALIDATING: VALIDATING, WebhookType.MUTATING: MUTATING}
    registered = {
        handler.id: (
            kind[handler.reason],
            handler.selector.any_name if handler.selector else None,
            list(handler.operations or []),
            "NoneOnDryRun" if handler.side_effects else "None",
            "Ignore" if handler.ignore_failures else "Fail",
        )
        for handler in registries.get_default_registry()._webhooks.get_all_handlers()
    }
    assert registered == HANDLERS
    docs = render()
    rendered = {
        w["name"].removesuffix(".suanli.io"): (
            configuration,
            w["rules"][0]["resources"][0],
            w["rules"][0]["operations"],
            w["sideEffects"],
            w["failurePolicy"],
        )
        for configuration in (VALIDATING, MUTATING)
        for w in find(docs, configuration)["webhooks"]
    }
    assert rendered == registered


@pytest.mark.parametrize("variant_name", ["defaults", "cert-manager", "external-operator"])
def test_every_validating_webhook_fails_closed_within_thirty_seconds(variant_name: str) -> None:
    docs = render(**VARIANTS[variant_name])
    for kind, policy in ((VALIDATING, "Fail"), (MUTATING, "Ignore")):
        configuration = find(docs, kind)
        assert configuration["metadata"]["name"] == "suanli-admission"
        for webhook in configuration["webhooks"]:
            # Only the finalizer step fails open: it saves a write, and decides nothing.
            assert webhook["failurePolicy"] == policy
            assert webhook["timeoutSeconds"] <= 30
            assert webhook["admissionReviewVersions"] == ["v1"]
            assert webhook["rules"][0]["apiGroups"] == ["suanli.io"]
            assert webhook["rules"][0]["apiVersions"] == ["v1alpha1"]


def _webhooks(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [w for kind in (VALIDATING, MUTATING) for w in find(docs, kind)["webhooks"]]


def test_webhooks_call_the_service_at_the_handler_path() -> None:
    for webhook in _webhooks(render()):
        handler = webhook["name"].removesuffix(".suanli.io")
        assert webhook["clientConfig"]["service"] == {
            "name": "suanli-webhook",
            "namespace": NAMESPACE,
            "port": 443,
            "path": f"/{handler}",
        }


def test_webhooks_call_an_external_operator_at_a_url() -> None:
    docs = render(webhook__url="https://127.0.0.1:9443/")
    for webhook in _webhooks(docs):
        handler = webhook["name"].removesuffix(".suanli.io")
        assert webhook["clientConfig"]["url"] == f"https://127.0.0.1:9443/{handler}"
        assert "service" not in webhook["clientConfig"]


# --- certificates ------------------------------------------------------------------------------


def _tls(docs: list[dict[str, Any]]) -> dict[str, bytes]:
    secret = find(docs, "Secret", "suanli-webhook-tls")
    assert secret["type"] == "kubernetes.io/tls"
    return {key: base64.b64decode(value) for key, value in secret["data"].items()}


def _alt_names(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (
        names.get_values_for_type(x509.DNSName),
        [str(ip) for ip in names.get_values_for_type(x509.IPAddress)],
    )


def _verify_signed_by(cert: x509.Certificate, ca: x509.Certificate) -> None:
    key = ca.public_key()
    assert cert.signature_hash_algorithm is not None
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(
            cert.signature,
            cert.tbs_certificate_bytes,
            padding.PKCS1v15(),
            cert.signature_hash_algorithm,
        )
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(
            cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
        )


def test_the_chart_made_certificate_is_trusted_by_the_webhook_configuration() -> None:
    docs = render()
    tls = _tls(docs)
    ca = x509.load_pem_x509_certificate(tls["ca.crt"])
    cert = x509.load_pem_x509_certificate(tls["tls.crt"])
    _verify_signed_by(cert, ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    dns, ips = _alt_names(cert)
    assert "suanli-webhook.suanli-system.svc" in dns
    assert "suanli-webhook.suanli-system.svc.cluster.local" in dns
    assert ips == []
    remaining = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert remaining > datetime.timedelta(days=3000)
    for webhook in _webhooks(docs):
        assert base64.b64decode(webhook["clientConfig"]["caBundle"]) == tls["ca.crt"]
    # The pod restarts when the certificate changes: its checksum is in the pod template.
    annotations = find(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/webhook-tls"] == hashlib.sha256(tls["tls.crt"]).hexdigest()[:16]
    # The key matches the certificate.
    assert load_pem_private_key(tls["tls.key"], None).public_key() == cert.public_key()


def test_an_external_operator_gets_a_certificate_for_its_address() -> None:
    docs = render(
        webhook__url="https://127.0.0.1:9443",
        webhook__certificate__extraDNSNames=["operator.example"],
        webhook__certificate__extraIPs=["10.0.0.7"],
    )
    dns, ips = _alt_names(x509.load_pem_x509_certificate(_tls(docs)["tls.crt"]))
    assert sorted(ips) == ["10.0.0.7", "127.0.0.1"]
    assert "operator.example" in dns
    by_name = render(webhook__url="https://operator.example:8443/base")
    dns, ips = _alt_names(x509.load_pem_x509_certificate(_tls(by_name)["tls.crt"]))
    assert "operator.example" in dns and ips == []
    hooks = find(by_name, "ValidatingWebhookConfiguration")["webhooks"]
    assert hooks[0]["clientConfig"]["url"] == "https://operator.example:8443/base/" + (
        hooks[0]["name"].removesuffix(".suanli.io")
    )


def test_cert_manager_makes_and_injects_the_certificate() -> None:
    docs = render(webhook__certificate__source="cert-manager", webhook__url="https://127.0.0.1:1")
    assert not [d for d in docs if d["kind"] == "Secret"]
    certificate = find(docs, "Certificate", "suanli-webhook")
    assert certificate["spec"]["secretName"] == "suanli-webhook-cert"
    assert "suanli-webhook.suanli-system.svc" in certificate["spec"]["dnsNames"]
    assert certificate["spec"]["ipAddresses"] == ["127.0.0.1"]
    # A self-signed issuer signs a CA; the CA's issuer signs the serving certificate.
    assert certificate["spec"]["issuerRef"] == {"kind": "Issuer", "name": "suanli-webhook-ca"}
    ca = find(docs, "Certificate", "suanli-webhook-ca")
    assert ca["spec"]["isCA"] is True
    assert (
        find(docs, "Issuer", "suanli-webhook-ca")["spec"]["ca"]["secretName"]
        == (ca["spec"]["secretName"])
    )
    assert "selfSigned" in find(docs, "Issuer", "suanli-webhook-selfsigned")["spec"]
    for kind in (VALIDATING, MUTATING):
        assert find(docs, kind)["metadata"]["annotations"] == {
            "cert-manager.io/inject-ca-from": f"{NAMESPACE}/suanli-webhook"
        }
    assert all("caBundle" not in w["clientConfig"] for w in _webhooks(docs))
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["webhook-tls"]["secret"]["secretName"] == "suanli-webhook-cert"


def test_cert_manager_with_an_existing_issuer_makes_no_ca() -> None:
    docs = render(**VARIANTS["everything"])
    assert not [d for d in docs if d["kind"] == "Issuer"]
    certificate = find(docs, "Certificate")
    assert certificate["spec"]["issuerRef"] == {"kind": "ClusterIssuer", "name": "ca"}


# --- CRDs ---------------------------------------------------------------------------------------


def test_crds_are_the_generated_ones_and_kept_on_uninstall() -> None:
    docs = [d for d in render() if d["kind"] == "CustomResourceDefinition"]
    expected = {
        crd["metadata"]["name"]: crd
        for crd in (yaml.safe_load(text) for text in generate_crds().values())
    }
    assert sorted(d["metadata"]["name"] for d in docs) == sorted(expected)
    for doc in docs:
        assert doc["spec"] == expected[doc["metadata"]["name"]]["spec"]
        assert doc["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        for key, value in expected[doc["metadata"]["name"]]["metadata"]["labels"].items():
            assert doc["metadata"]["labels"][key] == value


def test_crds_can_be_left_to_someone_else() -> None:
    assert not [d for d in render(crds__install=False) if d["kind"] == "CustomResourceDefinition"]
    unkept = [d for d in render(crds__keep=False) if d["kind"] == "CustomResourceDefinition"]
    assert unkept and all("annotations" not in d["metadata"] for d in unkept)


# --- metrics -----------------------------------------------------------------------------------


def test_metrics_service_and_service_monitor() -> None:
    docs = render(metrics__serviceMonitor__enabled=True, metrics__serviceMonitor__labels={"a": "b"})
    monitor = find(docs, "ServiceMonitor")
    service = find(docs, "Service", "suanli-metrics")
    assert monitor["metadata"]["labels"]["a"] == "b"
    for key, value in monitor["spec"]["selector"]["matchLabels"].items():
        assert service["metadata"]["labels"][key] == value
    assert "Service/suanli-metrics" not in kinds(render(metrics__service__enabled=False))
    refused = template_result(
        ("metrics.serviceMonitor.enabled", True), ("metrics.service.enabled", False)
    )
    assert refused.returncode != 0
    assert "set metrics.service.enabled=true" in refused.stderr


# --- values: documented, and checked by the schema --------------------------------------------


def _schema() -> dict[str, Any]:
    result: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return result


def _leaves(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _leaves(value, path + ".")
        else:
            yield path


def _schema_node(schema: dict[str, Any], path: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for part in path.split("."):
        if node is None:
            return None
        if "$ref" in node:
            node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
        properties = node.get("properties", {})
        if part in properties:
            node = properties[part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        elif node.get("additionalProperties", True) is True:
            return node  # a free-form object, e.g. a pod's securityContext
        else:
            return None
    return node


def test_the_default_values_meet_the_schema() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator.check_schema(_schema())
    jsonschema.Draft7Validator(_schema()).validate(values)


def test_every_value_has_a_schema() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [path for path in _leaves(values) if _schema_node(_schema(), path) is None]
    assert missing == []


def test_every_value_is_documented_where_it_is_defined() -> None:
    """Each key of values.yaml has a comment above it, or only documented keys inside it."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    key_line = re.compile(r"^(\s*)([A-Za-z][\w.-]*):")
    entries: list[tuple[int, str, bool]] = []  # indent, key, has a comment just above
    for number, line in enumerate(lines):
        match = key_line.match(line)
        if match:
            above = lines[number - 1].strip() if number else ""
            entries.append((len(match.group(1)), match.group(2), above.startswith("#")))
    undocumented: list[str] = []
    for index, (_indent, key, documented) in enumerate(entries):
        if documented or _covered_by_a_documented_parent(entries, index):
            continue
        if not _children(entries, index):
            undocumented.append(key)
    assert undocumented == [], "document these values with a `# --` comment above them"


def _children(entries: list[tuple[int, str, bool]], index: int) -> list[tuple[int, str, bool]]:
    indent = entries[index][0]
    found = []
    for entry in entries[index + 1 :]:
        if entry[0] <= indent:
            break
        found.append(entry)
    return found


def _covered_by_a_documented_parent(entries: list[tuple[int, str, bool]], index: int) -> bool:
    indent = entries[index][0]
    for entry in reversed(entries[:index]):
        if entry[0] < indent:
            if entry[2]:
                return True
            indent = entry[0]
    return False


WRONG_VALUES = [
    ("webhook:\n  port: '9443'\n", "at '/webhook/port': got string, want integer"),
    ("operator:\n  replicas: 0\n", "minimum: got 0, want 1"),
    ("operator:\n  resources: small\n", "at '/operator/resources': got string, want object"),
    (
        "webhook:\n  certificate:\n    source: vault\n",
        "value must be one of 'helm', 'cert-manager'",
    ),
    ("webhook:\n  url: http://127.0.0.1:9443\n", "at '/webhook/url'"),
    ("webhook:\n  timeoutSeconds: 60\n", "maximum: got 60, want 30"),
    ("crds:\n  keep: 'no'\n", "at '/crds/keep': got string, want boolean"),
    ("operator:\n  jobRetention: 0\n", "at '/operator/jobRetention'"),
    ("operator:\n  jobRetention: 30d\n", "at '/operator/jobRetention'"),
    ("webhook:\n  certificate:\n    extraIPs: [localhost]\n", "is not valid ipv4"),
    ("rbac:\n  tenantBindings:\n    - subjects: [{kind: User, name: a}]\n", "'namespace'"),
    ("exporter:\n  enabled: true\n  exporter:\n    port: high\n", "at '/exporter/port'"),
]


@pytest.mark.parametrize(("values", "message"), WRONG_VALUES)
def test_a_wrong_values_file_is_refused_with_its_path(
    tmp_path: Path, values: str, message: str
) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(values)
    result = template_result(values_files=(path,))
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr
