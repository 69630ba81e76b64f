"""GPU nodes and kwok stages built for the local federation."""

from suanli.devenv.manifests import GPU_RESOURCE, RUN_DURATION_ANNOTATION, gpu_nodes, kwok_stages
from suanli.devenv.topology import default_federation


def test_nodes_carry_gpu_capacity_and_feature_discovery_labels() -> None:
    member_b = default_federation().members[1]
    nodes = gpu_nodes(member_b)
    assert [n["metadata"]["name"] for n in nodes] == [
        "member-b-a800-0",
        "member-b-a800-1",
        "member-b-l40s-0",
        "member-b-l40s-1",
    ]
    l40s = nodes[2]
    assert l40s["status"]["allocatable"][GPU_RESOURCE] == "4"
    assert l40s["status"]["capacity"][GPU_RESOURCE] == "4"
    labels = l40s["metadata"]["labels"]
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-L40S"
    assert labels["nvidia.com/gpu.count"] == "4"
    assert labels["nvidia.com/gpu.memory"] == "46068"
    assert labels["topology.kubernetes.io/region"] == member_b.region


def test_stages_replace_every_default_kwok_needs() -> None:
    stages = {s["metadata"]["name"]: s["spec"] for s in kwok_stages()}
    kinds = {name: spec["resourceRef"]["kind"] for name, spec in stages.items()}
    # Node initialisation and pod deletion must be present: a config with any Stage drops
    # kwok's built-in ones, and without these nodes never get Ready and pods never go away.
    assert kinds["node-initialize"] == "Node"
    assert kinds["pod-delete"] == "Pod"
    assert stages["pod-delete"]["next"] == {"delete": True}


def test_run_duration_annotation_drives_the_completion_delay() -> None:
    stages = {s["metadata"]["name"]: s["spec"] for s in kwok_stages()}
    timed = stages["pod-complete-after-run-duration"]
    expression = f'.metadata.annotations["{RUN_DURATION_ANNOTATION}"]'
    assert timed["delay"]["durationFrom"] == {"expressionFrom": expression}
    assert {"key": expression, "operator": "Exists"} in timed["selector"]["matchExpressions"]
    # Without the annotation, Job pods complete at once, and only Job pods.
    untimed = stages["pod-complete-job"]["selector"]["matchExpressions"]
    assert {"key": expression, "operator": "DoesNotExist"} in untimed
    assert "phase: Succeeded" in timed["next"]["statusTemplate"]
