"""Every manifest in examples/ is accepted by the CRD schemas and by the models.

The examples are what people copy, so they are held to the same checks as a real request:
the checked-in CRD's openAPIV3Schema (with jsonschema, as the API server would apply it) and
the kind's model plus ``validate_<kind>`` (as the admission webhook will). Namespaces and
Secrets are Kubernetes' own kinds and are skipped, by kind only. The examples must also fit
together: jobs name the voucher and members that the examples define.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from suanli.api.common import parse_duration
from suanli.api.crdgen import file_name
from suanli.api.kinds import KINDS, kind_named
from suanli.api.validation import format_errors

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"
CRDS = ROOT / "crds"
KUBERNETES_KINDS = {"Namespace", "Secret"}


class KubectlLoader(yaml.SafeLoader):
    """Loads YAML the way kubectl sends it: times stay strings."""


KubectlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_documents() -> list[tuple[str, dict[str, Any]]]:
    documents: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        for index, document in enumerate(yaml.load_all(text, Loader=KubectlLoader)):
            if document is not None:
                documents.append((f"{path.name}#{index}", document))
    return documents


DOCUMENTS = load_documents()
OURS = [(ident, doc) for ident, doc in DOCUMENTS if doc.get("kind") not in KUBERNETES_KINDS]


def crd_schema(kind_name: str) -> dict[str, Any]:
    kind = kind_named(kind_name)
    assert kind is not None, f"{kind_name} is not a suanli kind"
    crd = yaml.safe_load((CRDS / file_name(kind.info)).read_text(encoding="utf-8"))
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in DOCUMENTS if doc.get("kind") == kind]


def test_examples_exist_for_every_kind() -> None:
    assert {doc["kind"] for _, doc in OURS} == {kind.info.kind for kind in KINDS}
    assert (EXAMPLES / "00-tenant-namespace.yaml").exists()


@pytest.mark.parametrize(("ident", "document"), OURS, ids=[ident for ident, _ in OURS])
def test_example_matches_the_crd_schema(ident: str, document: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(
        crd_schema(document["kind"]), format_checker=jsonschema.FormatChecker()
    )
    problems = [
        f"{'.'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]
    assert problems == []


@pytest.mark.parametrize(("ident", "document"), OURS, ids=[ident for ident, _ in OURS])
def test_example_passes_the_models_and_validators(ident: str, document: dict[str, Any]) -> None:
    kind = kind_named(document["kind"])
    assert kind is not None
    errors = kind.validate(document)
    assert errors == [], format_errors(errors)


@pytest.mark.parametrize(("ident", "document"), OURS, ids=[ident for ident, _ in OURS])
def test_example_scope(ident: str, document: dict[str, Any]) -> None:
    kind = kind_named(document["kind"])
    assert kind is not None
    assert ("namespace" in document["metadata"]) == kind.info.namespaced


def test_every_example_file_explains_itself() -> None:
    for path in sorted(EXAMPLES.glob("*.yaml")):
        assert path.read_text(encoding="utf-8").startswith("#"), (
            f"{path.name}: start with a comment"
        )


def test_examples_refer_to_each_other_consistently() -> None:
    namespaces = {doc["metadata"]["name"] for doc in of_kind("Namespace")}
    secrets = {
        (doc["metadata"]["namespace"], doc["metadata"]["name"]): doc for doc in of_kind("Secret")
    }
    members = {doc["metadata"]["name"]: doc for doc in of_kind("MemberCluster")}
    vouchers = {
        (doc["metadata"]["namespace"], doc["metadata"]["name"]): doc
        for doc in of_kind("VoucherQuota")
    }
    offered = {
        price["gpuModel"]: member["spec"]["region"]
        for member in members.values()
        for price in member["spec"]["prices"]
    }
    for member in members.values():
        ref = member["spec"]["kubeconfigSecretRef"]
        secret = secrets[(ref["namespace"], ref["name"])]
        assert ref.get("key", "kubeconfig") in secret["stringData"]
    for namespace, _ in vouchers:
        assert namespace in namespaces
    for voucher in vouchers.values():
        assert set(voucher["spec"].get("allowedClusters", [])) <= set(members)
        assert set(voucher["spec"].get("allowedGPUModels", [])) <= set(offered)
    for job in of_kind("ComputeJob"):
        spec = job["spec"]
        voucher = vouchers[(job["metadata"]["namespace"], spec["voucherRef"]["name"])]
        limits = voucher["spec"]["limits"]
        gpus = spec.get("replicas", 1) * spec.get("gpusPerReplica", 1)
        assert gpus <= limits["maxGPUsPerJob"], job["metadata"]["name"]
        assert parse_duration(spec["maxRuntime"]) <= parse_duration(limits["maxRuntime"])
        assert set(spec.get("gpuModels", [])) <= set(offered)
        placement = spec.get("placement", {})
        assert set(placement.get("clusters", [])) <= set(members)
        assert set(placement.get("regions", [])) <= {m["spec"]["region"] for m in members.values()}
        annotations = spec["template"]["metadata"]["annotations"]
        parse_duration(annotations["suanli.io/run-duration"])


def test_gang_example_costs_what_its_comment_says() -> None:
    (gang,) = [doc for doc in of_kind("ComputeJob") if doc["metadata"]["name"] == "llm-finetune"]
    spec = gang["spec"]
    assert (spec["replicas"], spec["gpusPerReplica"], spec["gpuModels"]) == (4, 8, ["H100"])
    prices = [
        Decimal(str(price["pricePerGPUHour"]))
        for member in of_kind("MemberCluster")
        for price in member["spec"]["prices"]
        if price["gpuModel"] == "H100"
    ]
    hours = Decimal(parse_duration(spec["maxRuntime"])) / 3600
    worst_case = 4 * 8 * hours * max(prices)
    assert f"{worst_case:.2f} CNY" in (EXAMPLES / "31-computejob-gang.yaml").read_text()
