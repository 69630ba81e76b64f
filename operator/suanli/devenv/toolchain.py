"""Build the control-plane binaries the local federation runs, from their Go modules.

No container image or release download can be reached from the machines this project is built
on, so etcd, the Kubernetes control plane, kwok and helm are compiled from the Go module proxy
with the machine's Go. Each component is built once per version into a cache directory outside
the clone (``$SUANLI_CACHE_DIR`` or ``~/.cache/suanli``); a stamp file next to the binaries
records the recipe they were built with, so a changed version or flag rebuilds and an unchanged
one is reused in milliseconds. Go's own build cache makes a rebuild after a recipe change cheap.

Kubernetes and etcd are built through the wrapper modules in ``toolchain/<name>/`` (checked in
with their go.sum): both upstream modules use relative ``replace`` directives that make
``go install module@version`` refuse them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Final

from suanli.errors import UserFacingError

KUBERNETES_VERSION: Final = "v1.34.4"
ETCD_VERSION: Final = "v3.6.16"
KWOK_VERSION: Final = "v0.8.0"
HELM_VERSION: Final = "v3.22.0"
# Prometheus tags its Go module v0.<major*100+minor>.<patch>: v0.316.0 is Prometheus 3.16.0.
PROMTOOL_VERSION: Final = "v0.316.0"
# The kind provider's parts (see suanli.devenv.kindnode): kind itself, and the cluster add-ons
# kubeadm and kind expect in a node image, at the versions kubeadm v1.34 asks for.
KIND_VERSION: Final = "v0.33.0"
COREDNS_VERSION: Final = "v1.12.1"
LOCAL_PATH_PROVISIONER_VERSION: Final = "v0.0.30"
Log = Callable[[str], None]

# The oldest Go that builds every module above (their go.mod `go` lines).
MINIMUM_GO: Final = (1, 26)

# A fixed date keeps the stamped binaries reproducible; the version is what tools check.
_BUILD_DATE: Final = "1970-01-01T00:00:00Z"


def cache_root() -> Path:
    """Where built artefacts live: ``$SUANLI_CACHE_DIR`` or ``~/.cache/suanli``."""
    configured = os.environ.get("SUANLI_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "suanli"


@dataclass(frozen=True)
class Component:
    """One Go build: which packages, from which module, stamped how."""

    name: str
    version: str
    binaries: Mapping[str, str]  # output file name -> Go package path
    wrapper_module: str | None = None  # directory under toolchain/, or None for `go install`
    ldflags: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def directory(self) -> Path:
        return cache_root() / "toolchain" / f"{self.name}-{self.version}"

    def path(self, binary: str) -> Path:
        return self.directory / binary

    def recipe_digest(self) -> str:
        """A digest of everything that decides the output, so a changed recipe rebuilds."""
        recipe = {
            "binaries": dict(self.binaries),
            "ldflags": self.ldflags,
            "tags": self.tags,
            "env": dict(self.env),
            "module": _wrapper_module_text(self.wrapper_module) if self.wrapper_module else "",
        }
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def _kubernetes_ldflags(version: str) -> tuple[str, ...]:
    major, minor = version.removeprefix("v").split(".")[:2]
    flags: list[str] = []
    # Unstamped binaries report v0.0.0, which kwokctl and Helm's kubeVersion checks misread.
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {package}.gitVersion={version}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
            f"-X {package}.buildDate={_BUILD_DATE}",
        ]
    return tuple(flags)


KUBERNETES: Final = Component(
    name="kubernetes",
    version=KUBERNETES_VERSION,
    binaries={
        "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
        "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
        "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
        "kubectl": "k8s.io/kubernetes/cmd/kubectl",
    },
    wrapper_module="kubernetes",
    ldflags=_kubernetes_ldflags(KUBERNETES_VERSION),
    tags=("selinux", "notest"),
)

ETCD: Final = Component(
    name="etcd",
    version=ETCD_VERSION,
    binaries={"etcd": "go.etcd.io/etcd/server/v3"},
    wrapper_module="etcd",
)

KWOK: Final = Component(
    name="kwok",
    version=KWOK_VERSION,
    binaries={"kwok": "sigs.k8s.io/kwok/cmd/kwok", "kwokctl": "sigs.k8s.io/kwok/cmd/kwokctl"},
    ldflags=(
        f"-X sigs.k8s.io/kwok/pkg/consts.Version={KWOK_VERSION.removeprefix('v')}",
        # kwokctl picks per-version flags for the control plane from this default.
        f"-X sigs.k8s.io/kwok/pkg/consts.KubeVersion={KUBERNETES_VERSION.removeprefix('v')}",
    ),
)

HELM: Final = Component(
    name="helm",
    version=HELM_VERSION,
    binaries={"helm": "helm.sh/helm/v3/cmd/helm"},
    ldflags=(f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",),
)

# promtool checks and unit-tests the chart's alert rules (tests/test_alerts.py).
PROMTOOL: Final = Component(
    name="promtool",
    version=PROMTOOL_VERSION,
    binaries={"promtool": "github.com/prometheus/prometheus/cmd/promtool"},
    ldflags=("-X github.com/prometheus/common/version.Version=3.16.0",),
)

# What a process-based federation runs (`suanli dev up`); helm installs the chart in kind.
FEDERATION_COMPONENTS: Final = (ETCD, KUBERNETES, KWOK)
# What only the tests use: helm renders the chart, promtool checks the alert rules.
TEST_COMPONENTS: Final = (HELM, PROMTOOL)
COMPONENTS: Final = FEDERATION_COMPONENTS + TEST_COMPONENTS

# Only the kind provider needs these; the process-based federation never builds them.
KUBERNETES_NODE: Final = Component(
    name="kubernetes-node",
    version=KUBERNETES_VERSION,
    binaries={
        "kubelet": "k8s.io/kubernetes/cmd/kubelet",
        "kubeadm": "k8s.io/kubernetes/cmd/kubeadm",
        "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
    },
    wrapper_module="kubernetes-node",
    ldflags=_kubernetes_ldflags(KUBERNETES_VERSION),
    tags=("selinux", "notest"),
)

KIND: Final = Component(
    name="kind",
    version=KIND_VERSION,
    binaries={"kind": "sigs.k8s.io/kind"},
)

COREDNS: Final = Component(
    name="coredns",
    version=COREDNS_VERSION,
    binaries={"coredns": "github.com/coredns/coredns"},
)

LOCAL_PATH_PROVISIONER: Final = Component(
    name="local-path-provisioner",
    version=LOCAL_PATH_PROVISIONER_VERSION,
    binaries={"local-path-provisioner": "github.com/rancher/local-path-provisioner"},
)

KIND_COMPONENTS: Final = (KUBERNETES_NODE, KIND, COREDNS, LOCAL_PATH_PROVISIONER, HELM)


@dataclass(frozen=True)
class Toolchain:
    """Paths of the built binaries, as the federation harness needs them."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    kwok: Path
    kwokctl: Path
    helm: Path
    promtool: Path

    @property
    def bin_dirs(self) -> list[Path]:
        """Directories to put first on PATH (kwokctl looks kubectl up there)."""
        return sorted({path.parent for path in vars(self).values()})


def toolchain_paths() -> Toolchain:
    """Where each binary is once built (it may not exist yet)."""
    return Toolchain(
        etcd=ETCD.path("etcd"),
        kube_apiserver=KUBERNETES.path("kube-apiserver"),
        kube_controller_manager=KUBERNETES.path("kube-controller-manager"),
        kube_scheduler=KUBERNETES.path("kube-scheduler"),
        kubectl=KUBERNETES.path("kubectl"),
        kwok=KWOK.path("kwok"),
        kwokctl=KWOK.path("kwokctl"),
        helm=HELM.path("helm"),
        promtool=PROMTOOL.path("promtool"),
    )


def ensure_toolchain(
    log: Log | None = None, *, kind: bool = False, tests: bool = False
) -> Toolchain:
    """Build whatever is missing or stale, reuse the rest; return the binaries' paths.

    Args:
        log: Where progress lines go (stderr by default).
        kind: Also build what the kind provider needs (:data:`KIND_COMPONENTS`).
        tests: Also build what only the tests use (:data:`TEST_COMPONENTS`).

    Raises:
        UserFacingError: Go is missing or too old, or a module cannot be downloaded or built.
    """
    wanted = FEDERATION_COMPONENTS + (KIND_COMPONENTS if kind else ())
    wanted += TEST_COMPONENTS if tests else ()
    ensure_built(*_distinct(wanted), log=log)
    return toolchain_paths()


def _distinct(components: tuple[Component, ...]) -> tuple[Component, ...]:
    """Each component once, in order (helm is both the tests' and the kind provider's)."""
    by_name = {component.name: component for component in reversed(components)}
    return tuple(c for c in components if by_name.pop(c.name, None) is not None)


def ensure_built(*components: Component, log: Log | None = None) -> None:
    """Build those of ``components`` that are missing or stale (see :func:`ensure_toolchain`)."""
    say = log or _print_progress
    missing = [component for component in components if not _is_current(component)]
    if missing:
        go = _check_go()
        started = time.monotonic()
        for component in missing:
            _build(component, go, say)
        say(f"toolchain ready in {_seconds(time.monotonic() - started)}")
    else:
        say(f"toolchain cached in {cache_root() / 'toolchain'}")


def _print_progress(message: str) -> None:
    print(f"[suanli toolchain] {message}", file=sys.stderr, flush=True)


def _seconds(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{seconds:.1f}s"


def _stamp_file(component: Component) -> Path:
    return component.directory / ".suanli-build.json"


def _is_current(component: Component) -> bool:
    try:
        stamp = json.loads(_stamp_file(component).read_text())
    except (OSError, ValueError):
        return False
    return stamp.get("recipe") == component.recipe_digest() and all(
        component.path(binary).is_file() for binary in component.binaries
    )


def _check_go() -> Path:
    go = shutil.which("go")
    if go is None:
        raise UserFacingError(
            "Go is not installed or not on PATH. The control-plane binaries are built from their "
            f"Go modules; install Go {'.'.join(map(str, MINIMUM_GO))} or newer "
            "(e.g. `apt-get install golang` where Debian ships a recent enough one)."
        )
    output = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=False)
    found = re.match(r"go(\d+)\.(\d+)", output.stdout.strip())
    if found is None or (int(found[1]), int(found[2])) < MINIMUM_GO:
        raise UserFacingError(
            f"{go} reports {output.stdout.strip() or 'no version'}; the toolchain needs Go "
            f"{'.'.join(map(str, MINIMUM_GO))} or newer."
        )
    return Path(go)


def _wrapper_module_text(name: str) -> str:
    module_dir = resources.files("suanli.devenv").joinpath("toolchain", name)
    return "".join(module_dir.joinpath(f).read_text() for f in ("go.mod", "go.sum"))


def _wrapper_module_dir(name: str) -> Path:
    # Editable and wheel installs both ship the module files as real files on disk.
    return Path(str(resources.files("suanli.devenv").joinpath("toolchain", name)))


def _build(component: Component, go: Path, say: Log) -> None:
    component.directory.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "CGO_ENABLED": "0",
        # Never fetch another Go release behind the user's back; a too-old Go is reported.
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "-mod=readonly",
        **component.env,
    }
    flags = ["-trimpath", "-ldflags", " ".join(("-s", "-w", *component.ldflags))]
    if component.tags:
        flags += ["-tags", ",".join(component.tags)]
    for binary, package in component.binaries.items():
        started = time.monotonic()
        say(f"{component.name} {component.version}: building {binary} (cold builds take minutes)")
        output = component.path(binary)
        temporary = output.with_name(f".{binary}.partial")
        if component.wrapper_module:
            command = [str(go), "build", *flags, "-o", str(temporary), package]
            cwd: Path | None = _wrapper_module_dir(component.wrapper_module)
        else:
            # `go install module@version` builds outside any module; GOBIN picks the output.
            command = [str(go), "install", *flags, f"{package}@{component.version}"]
            env["GOBIN"] = str(component.directory / ".gobin")
            cwd = component.directory
        result = subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise UserFacingError(_explain_go_failure(component, binary, result.stderr))
        if not component.wrapper_module:
            built = component.directory / ".gobin" / Path(package).name
            built.replace(temporary)
        # Rename last so an interrupted build never leaves a half-written binary in place.
        temporary.replace(output)
        say(
            f"{component.name} {component.version}: {binary} built in "
            f"{_seconds(time.monotonic() - started)}"
        )
    _stamp_file(component).write_text(
        json.dumps({"recipe": component.recipe_digest(), "version": component.version})
    )


def _explain_go_failure(component: Component, binary: str, stderr: str) -> str:
    tail = "\n".join(stderr.strip().splitlines()[-15:])
    hint = ""
    unreachable = r"dial tcp|proxy\.golang\.org|no such host|connection refused|i/o timeout"
    if re.search(unreachable, stderr):
        hint = (
            "\nThe Go module proxy could not be reached: check GOPROXY "
            f"({os.environ.get('GOPROXY', 'default')}) and the network, then run again; "
            "what was already built is kept."
        )
    return f"building {binary} ({component.name} {component.version}) failed:\n{tail}{hint}"
