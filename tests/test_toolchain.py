"""The toolchain builder's decisions that need no Go build: caching keys and errors."""

from pathlib import Path

import pytest

from suanli.devenv import toolchain
from suanli.errors import UserFacingError


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SUANLI_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_outputs_are_cached_outside_the_clone_keyed_by_version(empty_cache: Path) -> None:
    paths = toolchain.toolchain_paths()
    assert paths.kube_apiserver == (
        empty_cache / "toolchain" / f"kubernetes-{toolchain.KUBERNETES_VERSION}" / "kube-apiserver"
    )
    assert paths.etcd.parent.name == f"etcd-{toolchain.ETCD_VERSION}"


def test_recipe_digest_changes_with_the_version() -> None:
    older = toolchain.Component(
        name="kwok", version="v0.7.0", binaries=toolchain.KWOK.binaries, ldflags=()
    )
    newer = toolchain.Component(
        name="kwok", version="v0.8.0", binaries=toolchain.KWOK.binaries, ldflags=("-X a=b",)
    )
    assert older.recipe_digest() != newer.recipe_digest()


def test_kubernetes_binaries_are_version_stamped() -> None:
    flags = " ".join(toolchain.KUBERNETES.ldflags)
    assert f"k8s.io/component-base/version.gitVersion={toolchain.KUBERNETES_VERSION}" in flags
    assert f"k8s.io/client-go/pkg/version.gitVersion={toolchain.KUBERNETES_VERSION}" in flags


def test_missing_go_is_a_clear_error(empty_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(empty_cache))  # nothing is cached, and no go on PATH
    with pytest.raises(UserFacingError, match="Go is not installed"):
        toolchain.ensure_toolchain(log=lambda _: None)


def test_unreachable_module_proxy_is_explained() -> None:
    message = toolchain._explain_go_failure(
        toolchain.HELM,
        "helm",
        "go: helm.sh/helm/v3@v3.22.0: Get https://proxy.golang.org/...: dial tcp: no such host",
    )
    assert "module proxy could not be reached" in message
    assert "helm" in message


def test_a_fully_built_component_is_reused(empty_cache: Path) -> None:
    component = toolchain.HELM
    component.directory.mkdir(parents=True)
    (component.directory / "helm").write_text("#!/bin/sh\n")
    toolchain._stamp_file(component).write_text(
        f'{{"recipe": "{component.recipe_digest()}", "version": "{component.version}"}}'
    )
    assert toolchain._is_current(component)
    (component.directory / "helm").unlink()
    assert not toolchain._is_current(component)


def _pretend_built(component: toolchain.Component) -> None:
    component.directory.mkdir(parents=True)
    for binary in component.binaries:
        (component.directory / binary).write_text("#!/bin/sh\n")
    toolchain._stamp_file(component).write_text(
        f'{{"recipe": "{component.recipe_digest()}", "version": "{component.version}"}}'
    )


def test_the_federation_builds_what_it_runs_and_the_tests_what_they_use(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for component in toolchain.FEDERATION_COMPONENTS:
        _pretend_built(component)
    monkeypatch.setenv("PATH", str(empty_cache))  # no go: any build would fail
    said: list[str] = []
    toolchain.ensure_toolchain(log=said.append)  # helm and promtool are not needed for it
    assert said == [f"toolchain cached in {empty_cache / 'toolchain'}"]
    with pytest.raises(UserFacingError, match="Go is not installed"):
        toolchain.ensure_toolchain(log=said.append, tests=True)  # promtool would be built
