"""The kind provider's decisions that need no Docker: detection, the runc wrapper, configuration
and the values the charts are installed with."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from suanli.devenv import docker_engine, kind_install, providers
from suanli.devenv.kindnode import addons
from suanli.devenv.toolchain import toolchain_paths

ROOT = Path(__file__).resolve().parent.parent
ALL_CAPS = "000001ffffffffff"
WITHOUT_SYS_RESOURCE = "000001fffeffffff"  # bit 24 cleared, as on this project's machines


def _status(tmp_path: Path, bounding: str) -> Path:
    path = tmp_path / "status"
    path.write_text(f"Name:\tx\nCapInh:\t0\nCapBnd:\t{bounding}\nCapAmb:\t0\n")
    return path


def test_a_missing_capability_is_detected_from_the_bounding_set(tmp_path: Path) -> None:
    cap = docker_engine.CAP_SYS_RESOURCE
    assert docker_engine.lacks_capability(cap, _status(tmp_path, WITHOUT_SYS_RESOURCE))
    assert not docker_engine.lacks_capability(cap, _status(tmp_path, ALL_CAPS))


def test_kind_patches_containerd_only_where_the_capability_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    provider = providers.KindProvider(toolchain_paths(), tmp_path)
    monkeypatch.setattr(providers, "lacks_capability", lambda _cap: False)
    plain = provider.cluster_config("fed-hub")
    assert "containerdConfigPatches" not in plain
    assert plain["nodes"] == [{"role": "control-plane", "labels": {providers.NODE_LABEL: "true"}}]
    monkeypatch.setattr(providers, "lacks_capability", lambda _cap: True)
    patched = provider.cluster_config("fed-hub")
    assert "restrict_oom_score_adj = true" in patched["containerdConfigPatches"][0]


def _wrapper(tmp_path: Path) -> tuple[Path, Path]:
    """The runc wrapper, pointed at a fake runc that records its arguments."""
    record = tmp_path / "argv.json"
    fake_runc = tmp_path / "runc"
    fake_runc.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"json.dump(sys.argv[1:], open({str(record)!r}, 'w'))\n"
    )
    fake_runc.chmod(0o755)
    source = (ROOT / "operator/suanli/devenv/kindnode/runc-drop-caps").read_text()
    wrapper = tmp_path / "runc-drop-caps"
    wrapper.write_text(
        source.replace("@PYTHON@", sys.executable).replace("@REAL_RUNC@", str(fake_runc))
    )
    wrapper.chmod(0o755)
    return wrapper, record


def test_the_runc_wrapper_drops_the_missing_capability_and_runs_runc(tmp_path: Path) -> None:
    wrapper, record = _wrapper(tmp_path)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    caps = ["CAP_CHOWN", "CAP_SYS_RESOURCE", "CAP_SYS_ADMIN"]
    spec = {"process": {"capabilities": {kind: caps for kind in ("bounding", "effective")}}}
    (bundle / "config.json").write_text(json.dumps(spec))
    process = tmp_path / "process.json"
    process.write_text(json.dumps({"capabilities": {"permitted": caps}, "args": ["sh"]}))

    args = ["--root", "/run/x", "create", "--bundle", str(bundle), "c1"]
    subprocess.run([str(wrapper), *args], check=True, env=dict(os.environ))
    assert json.loads(record.read_text()) == args
    written = json.loads((bundle / "config.json").read_text())
    for names in written["process"]["capabilities"].values():
        assert names == ["CAP_CHOWN", "CAP_SYS_ADMIN"]

    subprocess.run([str(wrapper), "exec", "--process", str(process), "c1"], check=True)
    assert json.loads(process.read_text())["capabilities"]["permitted"] == [
        "CAP_CHOWN",
        "CAP_SYS_ADMIN",
    ]
    # Other calls pass straight through.
    subprocess.run([str(wrapper), "state", "c1"], check=True)
    assert json.loads(record.read_text()) == ["state", "c1"]


def test_the_node_cni_configuration_is_a_bridge_on_the_pod_subnet() -> None:
    config = json.loads(addons.cni_config())
    bridge = config["plugins"][0]
    assert bridge["type"] == "bridge" and bridge["isGateway"] and bridge["hairpinMode"]
    assert bridge["ipam"]["ranges"] == [[{"subnet": addons.POD_SUBNET}]]
    assert [m["kind"] for m in addons.cni_manifest()] == ["ConfigMap"]


def test_the_storage_manifest_is_local_path_with_the_default_class() -> None:
    manifest = addons.storage_manifest("lp:1", "helper:1")
    kinds = {m["kind"]: m for m in manifest}
    assert kinds["StorageClass"]["metadata"]["annotations"] == {
        "storageclass.kubernetes.io/is-default-class": "true"
    }
    container = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "lp:1" and "helper:1" in container["command"]
    helper = json.loads(kinds["ConfigMap"]["data"]["helperPod.yaml"])
    assert helper["spec"]["containers"][0]["image"] == "helper:1"


def _schema(chart: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(
        (ROOT / "charts" / chart / "values.schema.json").read_text()
    )
    return loaded


def _defaults(chart: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "charts" / chart / "values.yaml").read_text())
    return loaded


def _merged(chart: str, values: dict[str, Any]) -> dict[str, Any]:
    return {**_defaults(chart), **values}


def test_the_kind_install_values_satisfy_the_charts_schemas() -> None:
    images = kind_install.Images(
        operator="suanli.local/suanli:0.1.0-abc", exporter="suanli.local/suanli-fakenvml:0.1.0-d"
    )
    hub = kind_install.hub_values(images, operator={"recountInterval": 7})
    assert hub["image"] == {
        "repository": "suanli.local/suanli",
        "tag": "0.1.0-abc",
        "pullPolicy": "Never",
    }
    assert hub["operator"] == {"recountInterval": 7, "holdGrace": 10}
    jsonschema.validate(_merged("suanli", hub), _schema("suanli"))
    exporter = kind_install.exporter_values(images)
    # helm merges maps and drops keys set to null: only the kind node's label is left.
    merged = _merged("suanli-exporter", exporter)
    merged["nodeSelector"] = {
        key: value
        for key, value in {
            **_defaults("suanli-exporter")["nodeSelector"],
            **exporter["nodeSelector"],
        }.items()
        if value is not None
    }
    assert merged["nodeSelector"] == {providers.NODE_LABEL: "true"}
    jsonschema.validate(merged, _schema("suanli-exporter"))


def test_public_images_are_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUANLI_KIND_IMAGES", raising=False)
    assert not providers.public_images()
    monkeypatch.setenv("SUANLI_KIND_IMAGES", "public")
    assert providers.public_images()
