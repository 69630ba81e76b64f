"""The federation layout: defaults, YAML configs and their errors."""

from pathlib import Path

import pytest

from suanli.devenv.topology import default_federation, load_federation, node_name
from suanli.errors import UserFacingError


def test_default_federation_has_the_documented_members() -> None:
    spec = default_federation()
    assert [m.name for m in spec.members] == ["member-a", "member-b", "member-c"]
    assert spec.members[0].gpu_capacity == {"H100": 32}
    assert spec.members[1].gpu_capacity == {"A800": 16, "L40S": 8}
    assert spec.members[2].gpu_capacity == {"ASCEND910B": 16}
    assert spec.hub.node_pools == ()


def test_ascend_nodes_are_labelled_and_advertised_as_ascends_device_plugin_does() -> None:
    from suanli.devenv.manifests import gpu_nodes  # noqa: PLC0415
    from suanli.dispatch.kube import node_from_k8s  # noqa: PLC0415

    ascend = default_federation().members[2]
    nodes = gpu_nodes(ascend)
    assert len(nodes) == 2
    labels = nodes[0]["metadata"]["labels"]
    assert labels["accelerator"] == "huawei-Ascend910"
    assert labels["node.kubernetes.io/npu.chip.name"] == "910B3"
    assert "nvidia.com/gpu" not in nodes[0]["status"]["allocatable"]
    info = node_from_k8s({**nodes[0], "status": {**nodes[0]["status"], "conditions": []}})
    assert (info.model, info.resource, info.allocatable) == (
        "ASCEND910B",
        "huawei.com/Ascend910",
        8,
    )


def test_member_count_outside_the_built_in_layout_is_refused_with_the_limit() -> None:
    with pytest.raises(UserFacingError, match="between 1 and 3"):
        default_federation(4)


def test_config_file_is_loaded(tmp_path: Path) -> None:
    path = tmp_path / "fed.yaml"
    path.write_text(
        """
members:
  - name: east
    region: shanghai-east
    node_pools:
      - name: big
        count: 3
        gpus_per_node: 8
        gpu: {name: H100, product: NVIDIA-H100-80GB-HBM3, memory_mib: 81559}
"""
    )
    spec = load_federation(path)
    assert spec.members[0].gpu_capacity == {"H100": 24}
    assert node_name(spec.members[0], spec.members[0].node_pools[0], 2) == "east-big-2"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("members: []", "members"),
        ("members: [{name: Bad_Name}]", "members.0.name"),
        (
            "members: [{name: a, node_pools: [{name: p, count: 1, gpus_per_node: 17, "
            "gpu: {name: X, product: X, memory_mib: 1}}]}]",
            "members.0.node_pools.0.gpus_per_node",
        ),
        ("members: [{name: a}, {name: a}]", "members"),
        ("members: [{name: a, colour: red}]", "members.0.colour"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, body: str, field: str) -> None:
    path = tmp_path / "fed.yaml"
    path.write_text(body)
    with pytest.raises(UserFacingError) as error:
        load_federation(path)
    assert f"{field}:" in str(error.value)
    assert str(path) in str(error.value)


def test_the_example_layout_is_the_default_one() -> None:
    example = Path(__file__).parent.parent / "examples" / "dev" / "federation.yaml"
    assert load_federation(example).members == default_federation(2).members
