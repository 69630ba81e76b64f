"""The generated CRDs: no drift from the models, structural schemas, kubectl surface, command."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel, Field

from suanli.api import commands
from suanli.api.crdgen import HEADER, SchemaError, crd, generate, structural_schema
from suanli.api.kinds import KINDS, Kind, kind_named
from suanli.api.meta import CATEGORY, GROUP, VERSION
from suanli.errors import UserFacingError

CRDS = Path(__file__).parent.parent / "crds"

# --- drift --------------------------------------------------------------------------------------


def test_checked_in_crds_match_the_models() -> None:
    expected = generate()
    on_disk = {path.name: path.read_text(encoding="utf-8") for path in CRDS.glob("*.yaml")}
    assert sorted(on_disk) == sorted(expected), "run `suanli crds` to regenerate crds/"
    for name, content in expected.items():
        assert on_disk[name] == content, f"crds/{name} is stale: run `suanli crds`"


def test_generation_is_deterministic() -> None:
    assert generate() == generate()


def test_files_carry_the_generated_header() -> None:
    for content in generate().values():
        assert content.startswith(HEADER)
        assert "do not edit" in HEADER


# --- the suanli crds command --------------------------------------------------------------------


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["crds", *argv])
    result: int = args.handler(args)
    return result


def test_check_passes_on_the_repository() -> None:
    assert run(["--check", "--dir", str(CRDS)]) == 0


def test_write_then_check(tmp_path: Path) -> None:
    target = tmp_path / "crds"
    assert run(["--dir", str(target)]) == 0
    assert sorted(path.name for path in target.iterdir()) == sorted(generate())
    assert run(["--check", "--dir", str(target)]) == 0


def test_check_prints_a_diff_and_fails_on_drift(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(["--dir", str(tmp_path)])
    victim = tmp_path / "suanli.io_computejobs.yaml"
    victim.write_text(victim.read_text().replace("maximum: 64", "maximum: 65"))
    (tmp_path / "suanli.io_memberclusters.yaml").unlink()
    capsys.readouterr()
    assert run(["--check", "--dir", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "-                maximum: 65" in out
    assert "+                maximum: 64" in out
    assert "+kind: CustomResourceDefinition" in out  # the missing file, in full
    assert "suanli crds" in err
    # Writing repairs it.
    assert run(["--dir", str(tmp_path)]) == 0
    assert run(["--check", "--dir", str(tmp_path)]) == 0


def test_check_reports_stale_files_and_write_removes_generated_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(["--dir", str(tmp_path)])
    stale = tmp_path / "suanli.io_oldkinds.yaml"
    stale.write_text(HEADER + "kind: CustomResourceDefinition\n")
    hand_written = tmp_path / "notes.yaml"
    hand_written.write_text("not: generated\n")
    assert run(["--check", "--dir", str(tmp_path)]) == 1
    assert "suanli.io_oldkinds.yaml" in capsys.readouterr().out
    run(["--dir", str(tmp_path)])
    assert not stale.exists()
    assert hand_written.exists()  # only files carrying our header are removed


def test_stdout_prints_every_crd(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--stdout"]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [doc["spec"]["names"]["kind"] for doc in documents] == [k.info.kind for k in KINDS]


def test_check_of_a_missing_directory_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(UserFacingError, match="--dir"):
        run(["--check", "--dir", str(tmp_path / "nowhere")])


# --- names, scope, subresources, columns --------------------------------------------------------


def kind_ids(kind: Kind[Any]) -> str:
    return kind.info.kind


@pytest.mark.parametrize("kind", KINDS, ids=kind_ids)
def test_names_scope_and_status_subresource(kind: Kind[Any]) -> None:
    document = crd(kind)
    spec = document["spec"]
    assert document["metadata"]["name"] == f"{spec['names']['plural']}.{GROUP}"
    assert spec["group"] == GROUP
    assert spec["names"]["categories"] == [CATEGORY]
    (version,) = spec["versions"]
    assert version["name"] == VERSION
    assert version["served"] and version["storage"]
    # Kinds with a status keep it apart from the spec; immutable records have none.
    expected = {"status": {}} if kind.info.status_subresource else None
    assert version.get("subresources") == expected


def test_usage_records_are_immutable_by_schema() -> None:
    kind = kind_named("UsageRecord")
    assert kind is not None
    (version,) = crd(kind)["spec"]["versions"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["x-kubernetes-validations"] == [
        {
            "rule": "self == oldSelf",
            "message": "usage records are immutable: they are the record of what was charged",
        }
    ]


def test_short_names_and_scopes() -> None:
    summary = {
        kind.info.kind: (kind.info.short_names, kind.info.scope, kind.info.plural) for kind in KINDS
    }
    assert summary == {
        "ComputeJob": (("cjob",), "Namespaced", "computejobs"),
        "VoucherQuota": (("vq",), "Namespaced", "voucherquotas"),
        "MemberCluster": (("mc",), "Cluster", "memberclusters"),
        "UsageRecord": (("usage",), "Namespaced", "usagerecords"),
        "VoucherProgram": (("vp",), "Cluster", "voucherprograms"),
        "VoucherStatement": (("vst",), "Cluster", "voucherstatements"),
    }


# Short names of the built-in resources of Kubernetes 1.34 (`kubectl api-resources`). kubectl
# resolves a short name to the built-in one when both claim it, so ours must differ.
BUILTIN_SHORT_NAMES = {
    "cj", "cm", "crd", "crds", "cs", "csr", "deploy", "ds", "ep", "ev", "hpa", "ing", "ip",
    "limits", "netpol", "no", "ns", "pc", "pdb", "po", "pv", "pvc", "quota", "rc", "rs", "sa",
    "sc", "sts", "svc", "vac",
}  # fmt: skip


def test_short_names_do_not_shadow_builtin_ones() -> None:
    for kind in KINDS:
        assert not set(kind.info.short_names) & BUILTIN_SHORT_NAMES, kind.info.kind


def test_default_printer_columns() -> None:
    columns = {
        kind.info.kind: [column.name for column in kind.info.printer_columns if not column.priority]
        for kind in KINDS
    }
    assert columns == {
        "ComputeJob": ["Phase", "GPUs", "Cluster", "Cost", "Age"],
        "VoucherQuota": ["Amount", "Spent", "Reserved", "Remaining", "Expires", "Age"],
        "MemberCluster": ["Ready", "Region", "Free", "Total", "FreePFLOPS", "PFLOPS", "Age"],
        "UsageRecord": [
            "Job",
            "Attempt",
            "Cluster",
            "Model",
            "GPU-Seconds",
            "Amount",
            "Voucher",
            "Age",
        ],
        "VoucherProgram": ["Pool", "Committed", "Spent", "Left", "Companies", "Active", "Age"],
        "VoucherStatement": [
            "Program",
            "Month",
            "For",
            "Party",
            "Subsidy",
            "Payable",
            "Records",
            "Phase",
            "Age",
        ],
    }


def _schema_at(schema: dict[str, Any], json_path: str) -> dict[str, Any] | None:
    """The schema node a printer column's JSONPath reads; conditions filters read the list."""
    node: dict[str, Any] | None = schema
    for part in json_path.lstrip(".").split("."):
        name = re.sub(r"\[.*\]$", "", part)
        if node is None:
            return None
        if name == "metadata":
            return {"type": "object"}
        node = node.get("properties", {}).get(name)
        if node is not None and part != name:
            node = node["items"]
    return node


@pytest.mark.parametrize("kind", KINDS, ids=kind_ids)
def test_printer_columns_read_fields_that_exist(kind: Kind[Any]) -> None:
    (version,) = crd(kind)["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    for column in version["additionalPrinterColumns"]:
        path = column["jsonPath"]
        if path.startswith(".status.conditions["):
            assert re.fullmatch(r'\.status\.conditions\[\?\(@\.type=="\w+"\)\]\.status', path)
        node = _schema_at(schema, re.sub(r"\[\?\(.*\)\]", "[]", path))
        assert node is not None, f"{kind.info.kind} column {column['name']}: {path}"
        if column["type"] == "integer":
            assert node.get("type") == "integer", column


# --- structural schemas -------------------------------------------------------------------------


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


SCHEMAS = {kind.info.kind: structural_schema(kind.model) for kind in KINDS}
NODES = [(name, path, node) for name, schema in SCHEMAS.items() for path, node in walk(schema)]


def test_every_node_has_a_type_or_is_explicitly_free_form() -> None:
    for kind, path, node in NODES:
        assert (
            "type" in node
            or node.get("x-kubernetes-preserve-unknown-fields")
            or node.get("x-kubernetes-int-or-string")
        ), f"{kind}{path} has no type"


def test_no_references_or_unions() -> None:
    for kind, path, node in NODES:
        for keyword in ("$ref", "$defs", "allOf", "oneOf", "not", "const", "title"):
            assert keyword not in node, f"{kind}{path} has {keyword}"
        if "anyOf" in node:
            # The one union Kubernetes allows: int-or-string, branches carrying only a type.
            assert node.get("x-kubernetes-int-or-string") is True, f"{kind}{path}"
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], f"{kind}{path}"
            assert "type" not in node


def test_no_additional_properties_beside_properties() -> None:
    for kind, path, node in NODES:
        assert not ("properties" in node and "additionalProperties" in node), f"{kind}{path}"
        assert node.get("additionalProperties") is not False, f"{kind}{path}"


def test_unknown_fields_are_preserved_only_in_the_pod_template() -> None:
    preserved = [
        (kind, path) for kind, path, node in NODES if "x-kubernetes-preserve-unknown-fields" in node
    ]
    assert preserved == [("ComputeJob", ".spec.template")]
    (template,) = [node for kind, path, node in NODES if path == ".spec.template"]
    assert template["type"] == "object"
    assert "template" in SCHEMAS["ComputeJob"]["properties"]["spec"]["required"]


def test_metadata_is_left_to_the_api_server() -> None:
    for schema in SCHEMAS.values():
        assert schema["properties"]["metadata"] == {"type": "object"}
        assert schema["required"] == ["spec"]


def test_every_field_is_described() -> None:
    for kind, path, node in NODES:
        if path in ("", ".metadata") or path.endswith("[]"):
            continue
        assert node.get("description"), f"{kind}{path} has no description"


def test_limits_are_declared() -> None:
    for kind, path, node in NODES:
        if path.startswith(".spec.template") or path in ("", ".metadata", ".apiVersion", ".kind"):
            continue
        if node.get("type") == "array":
            assert "maxItems" in node, f"{kind}{path} has no maxItems"
        if node.get("type") == "string" and "enum" not in node and "format" not in node:
            assert "maxLength" in node, f"{kind}{path} has no maxLength"


def test_patterns_are_portable_regular_expressions() -> None:
    # The API server evaluates patterns with Go's RE2: no lookaround, no backreferences.
    for kind, path, node in NODES:
        if "pattern" in node:
            pattern = node["pattern"]
            re.compile(pattern)
            assert "(?" not in pattern, f"{kind}{path}"
            assert not re.search(r"\\[1-9]", pattern), f"{kind}{path}"
            assert pattern.startswith("^") and pattern.endswith("$"), f"{kind}{path}"


def test_defaults_satisfy_their_own_schema() -> None:
    # The API server refuses a CRD whose defaults do not validate.
    for _, _, node in NODES:
        if "default" in node:
            rest = {key: value for key, value in node.items() if key != "default"}
            jsonschema.Draft7Validator(rest).validate(node["default"])


def test_list_map_keys_are_required() -> None:
    for kind, path, node in NODES:
        if node.get("x-kubernetes-list-type") == "map":
            items = node["items"]
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in items.get("required", []) or "default" in items["properties"][key], (
                    f"{kind}{path}: map key {key} must be required"
                )
        if node.get("x-kubernetes-list-type") == "set":
            assert node["items"]["type"] in ("string", "integer"), f"{kind}{path}"


def test_money_is_int_or_string_with_two_decimals() -> None:
    amount = SCHEMAS["VoucherQuota"]["properties"]["spec"]["properties"]["amount"]
    validator = jsonschema.Draft7Validator(amount)
    for good in (50000, "50000", "50000.00", "0.5"):
        assert validator.is_valid(good), good
    for bad in (12.5, "12.345", "-1", -1, "1,000", True, None):
        assert not validator.is_valid(bad), bad


# --- the generator refuses what Kubernetes would refuse ------------------------------------------


def test_generator_refuses_unions() -> None:
    class Union(BaseModel):
        """A model Kubernetes cannot describe."""

        value: int | str = Field(description="value is either")

    with pytest.raises(SchemaError, match="union"):
        structural_schema(Union)


def test_generator_refuses_untyped_fields() -> None:
    class Untyped(BaseModel):
        """A model with a free-form field that does not say so."""

        value: Any = Field(description="value is anything")

    with pytest.raises(SchemaError, match="no type"):
        structural_schema(Untyped)
