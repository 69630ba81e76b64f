"""The kind provider's Debian packages: what is missing, and what is said when this process
cannot install it (the kind tests are skipped with that sentence)."""

from __future__ import annotations

from pathlib import Path

import pytest

from suanli.devenv import host_packages
from suanli.errors import UserFacingError


@pytest.fixture
def bare_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no mmdebstrap, no apt-get
    monkeypatch.setattr(host_packages, "dockerd_path", lambda: None)


def test_both_packages_are_missing_on_a_bare_host(bare_host: None) -> None:
    assert host_packages.missing_kind_packages() == ["docker.io", "mmdebstrap"]


def test_a_host_that_cannot_install_them_is_told_what_to_run(
    bare_host: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(host_packages.os, "geteuid", lambda: 1000)
    said: list[str] = []
    with pytest.raises(UserFacingError, match=r"run `sudo apt-get install docker.io mmdebstrap`"):
        host_packages.ensure_kind_packages(said.append)
    assert said == []  # nothing was tried


def test_nothing_is_installed_when_nothing_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool = tmp_path / "mmdebstrap"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(host_packages, "dockerd_path", lambda: "/usr/sbin/dockerd")
    said: list[str] = []
    host_packages.ensure_kind_packages(said.append)
    assert said == []
