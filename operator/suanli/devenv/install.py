"""Put suanli on a local federation's hub: CRDs, RBAC roles, members, as an admin would.

Used by `suanli dev up`, the e2e tests and the benchmarks, so all three run the same setup.
Members are joined as their admins would join them (docs/cluster-admins.md): the hub's
least-privilege identity is applied on each member with the member's admin kubeconfig, and
the hub keeps a kubeconfig with that identity's token, never the admin's. Everything the
operator does on members in e2e is thereby done with exactly the rights that identity has.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Final

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from suanli import member_access
from suanli.api.crdgen import generate
from suanli.api.kinds import KINDS, MEMBERCLUSTERS
from suanli.api.meta import GROUP, VERSION
from suanli.api.names import SYSTEM_NAMESPACE
from suanli.devenv.federation import ClusterInfo, api_client
from suanli.failures import api_message
from suanli.kits.waiting import TIMEOUTS, wait_for
from suanli.rbac import all_roles

# Prices per GPU-hour on the local members, in CNY: H100 dearest, so it bounds worst cases.
# Ascend 910B at 8.00 is the cheapest per PFLOPS-hour (25.00, against the H100's 28.31).
DEFAULT_PRICES: Final = {
    "H100": "28.00",
    "H200": "32.00",
    "A800": "22.00",
    "L40S": "9.50",
    "ASCEND910B": "8.00",
}


def _create_or_patch(create: Any, patch: Any, name: str, body: dict[str, Any]) -> None:
    try:
        create(body)
    except ApiException as error:
        if error.status != 409:
            raise
        patch(name, body)


def install_api(api: client.ApiClient) -> None:
    """CRDs (as generated from the models), wait until Established; roles; system namespace."""
    crds = [yaml.safe_load(text) for text in generate().values()]
    extensions = client.ApiextensionsV1Api(api)
    for crd in crds:
        try:
            extensions.create_custom_resource_definition(crd)
        except ApiException as error:
            if error.status != 409:
                raise
            existing = extensions.read_custom_resource_definition(crd["metadata"]["name"])
            crd["metadata"]["resourceVersion"] = existing.metadata.resource_version
            extensions.replace_custom_resource_definition(crd["metadata"]["name"], crd)

    def established() -> bool:
        for crd in crds:
            found = extensions.read_custom_resource_definition(crd["metadata"]["name"])
            conditions = {c.type: c.status for c in found.status.conditions or []}
            if conditions.get("Established") != "True":
                return False
        return True

    wait_for(established, timeout=TIMEOUTS.api_ready, what="suanli's CRDs to be Established")
    rbac = client.RbacAuthorizationV1Api(api)
    for role in all_roles():
        _create_or_patch(
            rbac.create_cluster_role, rbac.patch_cluster_role, role["metadata"]["name"], role
        )
    try:
        client.CoreV1Api(api).create_namespace({"metadata": {"name": SYSTEM_NAMESPACE}})
    except ApiException as error:
        if error.status != 409:
            raise


def member_cluster(
    member: ClusterInfo, secret: str, prices: dict[str, str] | None = None
) -> dict[str, Any]:
    """The MemberCluster object for a local member, priced per GPU model it has."""
    table = prices or DEFAULT_PRICES
    return {
        "apiVersion": "suanli.io/v1alpha1",
        "kind": "MemberCluster",
        "metadata": {"name": member.name},
        "spec": {
            "region": member.region,
            "provider": "local",
            "kubeconfigSecretRef": {
                "name": secret,
                "namespace": SYSTEM_NAMESPACE,
                "key": "kubeconfig",
            },
            "prices": [
                {"gpuModel": model, "pricePerGPUHour": table[model]} for model in member.gpus
            ],
        },
    }


def set_telemetry_endpoints(api: client.ApiClient, endpoints: Mapping[str, list[str]]) -> None:
    """List each member's exporters in its MemberCluster (replacing what it listed)."""
    custom = client.CustomObjectsApi(api)
    for member, urls in endpoints.items():
        custom.patch_cluster_custom_object(
            GROUP, VERSION, MEMBERCLUSTERS, member, {"spec": {"telemetryEndpoints": urls}}
        )


def grant_hub_access(member: ClusterInfo, server: str | None = None) -> str:
    """Apply the hub's identity on ``member`` (as its admin) and return the hub's kubeconfig
    for it: the member's server, its CA and the identity's token (idempotent).

    ``server`` is the member's API server as the hub reaches it, when that is not the address
    this machine uses (in kind, the hub's pods reach a member by its node's name on the kind
    network, which this machine cannot resolve)."""
    spec = member_access.AccessSpec()
    with api_client(member.kubeconfig) as admin:
        member_access.apply(admin, member_access.manifest(spec))
        token, ca_pem = member_access.read_token(admin, spec, timeout=TIMEOUTS.api_ready)
        server = server or admin.configuration.host
    return member_access.hub_kubeconfig(server=server, ca_pem=ca_pem, token=token, name=member.name)


def kubeconfig_secret_name(member: str) -> str:
    # The name examples/1x-membercluster-*.yaml use, so applying an example and then joining
    # the real member leaves the example's MemberCluster pointing at a working kubeconfig.
    return f"{member}-kubeconfig"


def store_kubeconfig(api: client.ApiClient, member: str, kubeconfig: str) -> str:
    """Put ``kubeconfig`` in the member's kubeconfig Secret on the hub; return its name."""
    core = client.CoreV1Api(api)
    secret = kubeconfig_secret_name(member)
    _create_or_patch(
        lambda body: core.create_namespaced_secret(SYSTEM_NAMESPACE, body),
        lambda name, body: core.patch_namespaced_secret(name, SYSTEM_NAMESPACE, body),
        secret,
        {
            "metadata": {"name": secret, "namespace": SYSTEM_NAMESPACE},
            "data": {"kubeconfig": base64.b64encode(kubeconfig.encode()).decode()},
        },
    )
    return secret


def join_members(
    api: client.ApiClient,
    members: list[ClusterInfo],
    prices: dict[str, str] | None = None,
    *,
    servers: Mapping[str, str] | None = None,
) -> None:
    """For each member: the hub's identity on it, a Secret on the hub with the kubeconfig of
    that identity, and a MemberCluster (idempotent). ``servers``: members' API servers as the
    hub reaches them, by name, where that differs from this machine's address."""
    custom = client.CustomObjectsApi(api)
    for member in members:
        server = (servers or {}).get(member.name)
        secret = store_kubeconfig(api, member.name, grant_hub_access(member, server))
        _create_or_patch(
            lambda body: custom.create_cluster_custom_object(GROUP, VERSION, MEMBERCLUSTERS, body),
            lambda name, body: custom.patch_cluster_custom_object(
                GROUP, VERSION, MEMBERCLUSTERS, name, body
            ),
            member.name,
            member_cluster(member, secret, prices),
        )


def examples_dir() -> Path | None:
    """The repository's examples/, when running from a checkout."""
    candidate = Path(str(resources.files("suanli"))).parent.parent / "examples"
    return candidate if candidate.is_dir() else None


KINDS_BY_NAME: Final = {kind.info.kind: kind for kind in KINDS}


OPERATOR_WRITTEN_KINDS: Final = ("MemberCluster", "Secret", "UsageRecord", "VoucherStatement")
"""Kinds among the examples that ``apply_examples`` leaves out (MemberClusters: see there)."""


def apply_examples(api: client.ApiClient, directory: Path) -> list[str]:
    """Apply the examples a tenant and an admin would, except the MemberClusters.

    The example MemberClusters carry placeholder kubeconfigs; :func:`join_members` already
    created the real ones under the same names.
    """
    applied: list[str] = []
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    for path in sorted(directory.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            # Usage records and statements are the operator's alone to write: the examples
            # only show one.
            if not document or document.get("kind") in OPERATOR_WRITTEN_KINDS:
                continue
            metadata = document["metadata"]
            try:
                kind = KINDS_BY_NAME.get(document["kind"])
                if document["kind"] == "Namespace":
                    core.create_namespace(document)
                elif kind is not None and not kind.info.namespaced:
                    custom.create_cluster_custom_object(GROUP, VERSION, kind.info.plural, document)
                elif kind is not None:
                    custom.create_namespaced_custom_object(
                        GROUP, VERSION, metadata["namespace"], kind.info.plural, document
                    )
                else:
                    raise ValueError(f"{path.name}: examples hold no {document['kind']}")
            except ApiException as error:
                if error.status == 403 and document["kind"] == "ComputeJob":
                    # A job this federation cannot run (e.g. a GPU model no member has, with
                    # --members 1): admission refuses it as it would a tenant's; the rest apply.
                    refusal = api_message(error)
                    applied.append(f"{document['kind']}/{metadata['name']} (refused: {refusal})")
                    continue
                if error.status != 409:
                    raise
            applied.append(f"{document['kind']}/{metadata['name']}")
    return applied
