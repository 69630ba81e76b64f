"""A kind node image assembled locally, without an image registry.

``kind build node-image`` cannot work offline (it pulls etcd, CoreDNS, pause, kindnetd and the
storage images from registries, and Debian's containerd 1.6 lacks a ``ctr`` command it calls),
so this module does what its builder does, minus the pulls:

1. **Base**: a Debian root filesystem (systemd, containerd, runc, the CNI plugins, iptables...)
   plus kind's own base-image files (entrypoint, systemd units, containerd configuration), taken
   from the pinned kind module in the Go module cache, and a ``cri-base.json`` generated from
   containerd's default OCI spec, as kind's base image has.
2. **Component images** kubeadm expects, at the exact references ``kubeadm config images list``
   names: the control plane and etcd from the toolchain's binaries on a minimal layer,
   kube-proxy on a Debian layer with iptables (it doubles as local-path's helper image), CoreDNS
   and local-path-provisioner from their Go modules, and pause compiled from ``pause.c``.
3. **Node**: a container of the base gets kubelet, kubeadm and kubectl, ``/kind/version``, the
   CNI and storage manifests (see ``addons.py``) and, imported into its containerd (namespace
   ``k8s.io``), every component image; it is committed with kind's entrypoint.

The node image's tag is a digest of everything that goes into it, so a warm run checks one tag
and builds nothing. kind's node layout (``/kind/*``, image references) is internal to kind: the
kind version is pinned in the toolchain, and this recipe must be tested on every upgrade.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final

import yaml

from suanli.devenv.docker_engine import DockerEngine, run_command
from suanli.devenv.kindnode import addons
from suanli.devenv.kindnode.debian import chroot, debian_image, recipe_key
from suanli.devenv.toolchain import (
    COREDNS,
    ETCD,
    KIND_VERSION,
    KUBERNETES,
    KUBERNETES_NODE,
    KUBERNETES_VERSION,
    LOCAL_PATH_PROVISIONER,
)
from suanli.errors import UserFacingError

Log = Callable[[str], None]

NODE_REPOSITORY: Final = "suanli.local/kind-node"
BASE_REPOSITORY: Final = "suanli.local/kind-base"
LOCAL_PATH_IMAGE: Final = f"suanli.local/local-path-provisioner:{LOCAL_PATH_PROVISIONER.version}"

# kind's base image's package list (its images/base/Dockerfile), from Debian bookworm, plus the
# container runtime and CNI plugins kind's image builds from source: Debian ships them.
BASE_PACKAGES: Final = (
    "systemd",
    "containerd",
    "runc",
    "containernetworking-plugins",
    "conntrack",
    "iptables",
    "nftables",
    "iproute2",
    "ethtool",
    "util-linux",
    "mount",
    "kmod",
    "libseccomp2",
    "pigz",
    "fuse-overlayfs",
    "e2fsprogs",
    "bash",
    "ca-certificates",
    "curl",
    "jq",
    "procps",
    "socat",
)
# kube-proxy programs iptables; the same layer serves local-path's helper pods (sh, mkdir, rm).
KUBE_PROXY_PACKAGES: Final = ("iptables", "nftables", "conntrack", "ipset", "kmod", "iproute2")

BUILD_TIMEOUT_SECONDS: Final = 600.0


@dataclass(frozen=True)
class NodeBinaries:
    """Everything built with Go that goes into the node image."""

    kubelet: Path
    kubeadm: Path
    kubectl: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kube_proxy: Path
    etcd: Path
    coredns: Path
    local_path_provisioner: Path

    @classmethod
    def from_toolchain(cls) -> NodeBinaries:
        return cls(
            kubelet=KUBERNETES_NODE.path("kubelet"),
            kubeadm=KUBERNETES_NODE.path("kubeadm"),
            kubectl=KUBERNETES.path("kubectl"),
            kube_apiserver=KUBERNETES.path("kube-apiserver"),
            kube_controller_manager=KUBERNETES.path("kube-controller-manager"),
            kube_scheduler=KUBERNETES.path("kube-scheduler"),
            kube_proxy=KUBERNETES_NODE.path("kube-proxy"),
            etcd=ETCD.path("etcd"),
            coredns=COREDNS.path("coredns"),
            local_path_provisioner=LOCAL_PATH_PROVISIONER.path("local-path-provisioner"),
        )

    def digest(self) -> str:
        """Of the binaries' recipes and sizes: cheap, and it changes when any is rebuilt."""
        parts = {
            name: (str(path), path.stat().st_size, path.stat().st_mtime_ns)
            for name, path in sorted(vars(self).items())
        }
        return recipe_key(parts)


def _recipe_files() -> str:
    """This package's own source: a change to the recipe makes a new tag."""
    package = resources.files("suanli.devenv.kindnode")
    names = ("images.py", "addons.py", "debian.py", "pause.c")
    return hashlib.sha256(
        b"".join(package.joinpath(name).read_bytes() for name in names)
    ).hexdigest()[:12]


def kind_module_dir() -> Path:
    """The pinned kind module's source (for its base-image files), from the Go module cache."""
    go = shutil.which("go")
    if go is None:
        raise UserFacingError("Go is needed to fetch kind's module (its node-image files)")
    result = run_command(
        [go, "mod", "download", "-json", f"sigs.k8s.io/kind@{KIND_VERSION}"],
        env={**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"},
        what=f"go mod download sigs.k8s.io/kind@{KIND_VERSION}",
        timeout=300,
    )
    return Path(json.loads(result.stdout)["Dir"])


def kubeadm_images(kubeadm: Path) -> dict[str, str]:
    """The image references kubeadm uses for this version, by short name (etcd, pause, ...)."""
    result = run_command(
        [str(kubeadm), "config", "images", "list", "--kubernetes-version", KUBERNETES_VERSION],
        env=dict(os.environ),
        what="kubeadm config images list",
        timeout=60,
    )
    references = result.stdout.decode().split()
    return {ref.rsplit("/", 1)[-1].split(":", 1)[0]: ref for ref in references}


def ensure_node_image(engine: DockerEngine, log: Log) -> str:
    """The node image for this toolchain, built when its tag is missing; its reference."""
    binaries = NodeBinaries.from_toolchain()
    missing = [str(path) for path in vars(binaries).values() if not path.is_file()]
    if missing:
        raise UserFacingError(
            "the kind node image needs binaries that are not built: "
            + ", ".join(missing)
            + "; run `suanli dev toolchain --kind`"
        )
    tag = f"{NODE_REPOSITORY}:{KUBERNETES_VERSION}-" + recipe_key(
        binaries.digest(), _recipe_files(), KIND_VERSION
    )
    if engine.image_exists(tag):
        log(f"kind node image {tag}: cached")
        return tag
    started = time.monotonic()
    log(f"kind node image {tag}: building (first time only; a few minutes)")
    references = kubeadm_images(binaries.kubeadm)
    base = _base_image(engine, references["pause"], log)
    components = _component_images(engine, binaries, references, log)
    _assemble_node(
        engine,
        base,
        binaries=binaries,
        references=references,
        components=components,
        tag=tag,
        log=log,
    )
    log(f"kind node image {tag}: built in {time.monotonic() - started:.0f}s")
    return tag


# --- 1. the base ---------------------------------------------------------------------------------


def _base_image(engine: DockerEngine, pause: str, log: Log) -> str:
    kind_files = kind_module_dir() / "images" / "base" / "files"

    def customize(root: Path) -> None:
        _install_kind_files(kind_files, root, pause)
        _prepare_systemd(root)
        # containerd's default OCI spec, as kind's base image generates it: kind's
        # product-uuid hook added, rlimits removed (the node's own limits apply).
        spec = json.loads(chroot(root, "ctr", "oci", "spec", what="ctr oci spec"))
        hooks = spec.setdefault("hooks", {}).setdefault("createContainer", [])
        hooks.append({"path": "/kind/bin/mount-product-files.sh"})
        spec["process"].pop("rlimits", None)
        (root / "etc/containerd/cri-base.json").write_text(json.dumps(spec, indent=2))
        # kind's units and scripts look for these where kind's image builds them.
        (root / "usr/local/bin/containerd").symlink_to("/usr/bin/containerd")
        cni_bin = root / "opt/cni/bin"
        cni_bin.mkdir(parents=True, exist_ok=True)
        for plugin in (root / "usr/lib/cni").iterdir():
            shutil.copy2(plugin, cni_bin / plugin.name)
        net_d = root / addons.CNI_CONFIG_PATH.lstrip("/")
        net_d.parent.mkdir(parents=True, exist_ok=True)
        net_d.write_text(addons.cni_config())
        (root / "etc/kubernetes/manifests").mkdir(parents=True, exist_ok=True)
        unit = root / "etc/systemd/system" / SERVICE_GUARD_UNIT
        unit.write_text(_service_guard_unit())
        chroot(root, "systemctl", "enable", SERVICE_GUARD_UNIT, what="enabling the guard")

    return debian_image(
        engine,
        BASE_REPOSITORY,
        BASE_PACKAGES,
        # The base changes only with these functions, not with the rest of this module.
        recipe=recipe_key(
            KIND_VERSION,
            pause,
            addons.cni_config(),
            _service_guard_unit(),
            *(inspect.getsource(f) for f in (_base_image, _install_kind_files, _prepare_systemd)),
        ),
        customize=customize,
        changes=("ENV container=docker",),
        log=log,
    )


SERVICE_GUARD_UNIT: Final = "suanli-service-guard.service"
# kind's default Service subnet (networking.serviceSubnet).
SERVICE_SUBNET: Final = "10.96.0.0/16"


def _service_guard_unit() -> str:
    """A unit that keeps untranslated Service traffic from leaving the node.

    Until kube-proxy has programmed a Service, a pod's packet to its ClusterIP is routed like
    any other, out of the node and the machine, to an address nobody here owns (on this
    project's machines a TLS-inspecting gateway answered it). A REJECT in FORWARD for the
    Service subnet stops that: kube-proxy rewrites the destination before FORWARD, so only
    packets that no Service rule translated yet hit it, and their senders retry.
    """
    return (
        "[Unit]\n"
        "Description=Reject Service traffic that kube-proxy has not translated yet\n"
        "Before=containerd.service kubelet.service\n"
        "[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=yes\n"
        f"ExecStart=/usr/sbin/iptables -I FORWARD -d {SERVICE_SUBNET} -j REJECT\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def _install_kind_files(kind_files: Path, root: Path, pause: str) -> None:
    """kind's base-image files, as its Dockerfile lays them out, with two local settings."""
    for source in kind_files.rglob("*"):
        relative = source.relative_to(kind_files)
        if source.is_dir() or relative.parts[0] == "LICENSES":
            continue
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        executable = relative.parts[:2] in (("usr", "local"), ("kind", "bin"))
        target.chmod(0o755 if executable else 0o644)
    config = root / "etc/containerd/config.toml"
    text = config.read_text()
    # The sandbox image kubeadm names for this version (kind pins its own release's).
    lines = [
        f'  sandbox_image = "{pause}"' if line.strip().startswith("sandbox_image") else line
        for line in text.splitlines()
    ]
    config.write_text("\n".join(lines) + "\n")


def _prepare_systemd(root: Path) -> None:
    """Trim systemd to what a node container needs, and enable kind's units (as kind does)."""
    removals = [
        "lib/systemd/system/sysinit.target.wants/systemd-tmpfiles-setup.service",
        "lib/systemd/system/multi-user.target.wants/*",
        "etc/systemd/system/*.wants/*",
        "lib/systemd/system/local-fs.target.wants/*",
        "lib/systemd/system/sockets.target.wants/*udev*",
        "lib/systemd/system/sockets.target.wants/*initctl*",
        "lib/systemd/system/basic.target.wants/*",
    ]
    for pattern in removals:
        for path in root.glob(pattern):
            path.unlink()
    with (root / "etc/systemd/journald.conf").open("a") as journald:
        journald.write("ReadKMsg=no\n")
    init = root / "sbin/init"
    if init.exists() or init.is_symlink():
        init.unlink()
    init.symlink_to("/lib/systemd/systemd")
    for unit in ("kubelet.service", "containerd.service", "undo-mount-hacks.service"):
        chroot(root, "systemctl", "enable", unit, what=f"systemctl enable {unit}")
    chroot(root, "systemctl", "mask", "systemd-binfmt.service", what="systemctl mask binfmt")


# --- 2. the component images ---------------------------------------------------------------------

_PASSWD: Final = (
    "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n"
)
_GROUP: Final = "root:x:0:\nnobody:x:65534:\n"


def _minimal_image(
    engine: DockerEngine, tag: str, files: Mapping[str, Path], entrypoint: list[str] | None
) -> None:
    """An image of a few files (static binaries), /etc/passwd, /tmp and CA certificates."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory, mode in (("etc", 0o755), ("tmp", 0o1777), ("etc/ssl/certs", 0o755)):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        for name, text in (("etc/passwd", _PASSWD), ("etc/group", _GROUP)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        certificates = Path("/etc/ssl/certs/ca-certificates.crt")
        if certificates.exists():
            tar.add(certificates, arcname="etc/ssl/certs/ca-certificates.crt")
        for name, path in files.items():
            info = tar.gettarinfo(str(path), arcname=name.lstrip("/"))
            info.mode, info.uid, info.gid, info.uname, info.gname = 0o755, 0, 0, "", ""
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    changes: list[str] = []
    if entrypoint is not None:
        changes = ["--change", f"ENTRYPOINT {json.dumps(entrypoint)}"]
    engine.run("import", *changes, "-", tag, what=f"docker import {tag}", stdin=buffer.getvalue())


def _component_images(
    engine: DockerEngine, binaries: NodeBinaries, references: dict[str, str], log: Log
) -> list[str]:
    log("component images: control plane, etcd, CoreDNS, pause, kube-proxy, local-path")
    for name, path in (
        ("kube-apiserver", binaries.kube_apiserver),
        ("kube-controller-manager", binaries.kube_controller_manager),
        ("kube-scheduler", binaries.kube_scheduler),
    ):
        # kubeadm's static pods run the command by name: PATH finds /usr/local/bin.
        _minimal_image(engine, references[name], {f"/usr/local/bin/{name}": path}, None)
    # The toolchain's etcd under the reference kubeadm asks for (its version is close enough:
    # the same 3.6 line Kubernetes 1.34 pins).
    _minimal_image(engine, references["etcd"], {"/usr/local/bin/etcd": binaries.etcd}, None)
    _minimal_image(engine, references["coredns"], {"/coredns": binaries.coredns}, ["/coredns"])
    with tempfile.TemporaryDirectory(prefix="suanli-pause-") as scratch:
        pause = Path(scratch) / "pause"
        source = Path(str(resources.files("suanli.devenv.kindnode").joinpath("pause.c")))
        run_command(
            ["gcc", "-static", "-Os", "-s", "-o", str(pause), str(source)],
            env=dict(os.environ),
            what="compiling pause",
            timeout=120,
        )
        _minimal_image(engine, references["pause"], {"/pause": pause}, ["/pause"])
    _minimal_image(
        engine,
        LOCAL_PATH_IMAGE,
        {"/usr/local/bin/local-path-provisioner": binaries.local_path_provisioner},
        None,
    )
    proxy_base = debian_image(
        engine,
        "suanli.local/kube-proxy-base",
        KUBE_PROXY_PACKAGES,
        recipe="kube-proxy",
        log=log,
    )
    _add_file_to_image(
        engine,
        proxy_base,
        binaries.kube_proxy,
        "/usr/local/bin/kube-proxy",
        references["kube-proxy"],
    )
    return [*references.values(), LOCAL_PATH_IMAGE]


def _add_file_to_image(
    engine: DockerEngine, base: str, source: Path, destination: str, tag: str
) -> None:
    with tempfile.TemporaryDirectory(prefix="suanli-build-") as context:
        shutil.copy2(source, Path(context) / source.name)
        (Path(context) / "Dockerfile").write_text(
            f"FROM {base}\nCOPY {source.name} {destination}\n"
        )
        engine.run(
            "build",
            "-q",
            "-t",
            tag,
            context,
            what=f"docker build {tag}",
            timeout=BUILD_TIMEOUT_SECONDS,
        )


# --- 3. the node ---------------------------------------------------------------------------------


def _assemble_node(
    engine: DockerEngine,
    base: str,
    *,
    binaries: NodeBinaries,
    references: dict[str, str],
    components: list[str],
    tag: str,
    log: Log,
) -> None:
    log("kind node: adding kubelet, kubeadm, kubectl and the component images")
    container = (
        engine.run(
            "run",
            "-d",
            "--privileged",
            "--entrypoint",
            "sleep",
            base,
            "infinity",
            what="starting the node-image build container",
        )
        .stdout.decode()
        .strip()
    )
    try:
        for binary, name in (
            (binaries.kubelet, "kubelet"),
            (binaries.kubeadm, "kubeadm"),
            (binaries.kubectl, "kubectl"),
        ):
            # Where kind's kubelet unit looks for it.
            engine.run("cp", str(binary), f"{container}:/usr/bin/{name}", what=f"copying {name}")
        storage = addons.storage_manifest(LOCAL_PATH_IMAGE, references["kube-proxy"])
        for path, text in (
            ("/kind/version", KUBERNETES_VERSION),
            ("/kind/manifests/default-cni.yaml", yaml.safe_dump_all(addons.cni_manifest())),
            ("/kind/manifests/default-storage.yaml", yaml.safe_dump_all(storage)),
        ):
            _write_in(engine, container, path, text)
        _import_images(engine, container, components, log)
        # kind starts nodes with this entrypoint; systemd stops on SIGRTMIN+3, which neither
        # `docker import` nor `docker commit` of Docker 20.10 accepts as a change: one tiny
        # build adds it.
        committed = f"{tag}-unsealed"
        engine.run(
            "commit",
            "--change",
            'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]',
            container,
            committed,
            what="committing the node image",
            timeout=BUILD_TIMEOUT_SECONDS,
        )
    finally:
        engine.run("rm", "-f", container, what="removing the build container", check=False)
    with tempfile.TemporaryDirectory(prefix="suanli-build-") as context:
        (Path(context) / "Dockerfile").write_text(f"FROM {committed}\nSTOPSIGNAL SIGRTMIN+3\n")
        engine.run(
            "build",
            "-q",
            "-t",
            tag,
            context,
            what=f"docker build {tag}",
            timeout=BUILD_TIMEOUT_SECONDS,
        )
    engine.run("rmi", committed, what="untagging the unsealed node image", check=False)


def _import_images(engine: DockerEngine, container: str, references: list[str], log: Log) -> None:
    """Import images into the node's containerd (namespace k8s.io), where the kubelet looks."""
    engine.run(
        "exec",
        "-d",
        container,
        "sh",
        "-c",
        "containerd > /var/log/build-containerd.log 2>&1",
        what="starting containerd in the build container",
    )
    deadline = time.monotonic() + 60
    while engine.run(
        "exec", container, "ctr", "version", what="ctr version", check=False
    ).returncode:
        if time.monotonic() > deadline:
            raise UserFacingError("containerd in the node-image build container did not start")
        time.sleep(0.5)
    with tempfile.TemporaryDirectory(prefix="suanli-images-") as scratch:
        archive = Path(scratch) / "images.tar"
        engine.run(
            "save",
            "-o",
            str(archive),
            *references,
            what="docker save",
            timeout=BUILD_TIMEOUT_SECONDS,
        )
        log(f"kind node: importing {len(references)} images ({archive.stat().st_size >> 20} MiB)")
        engine.run("cp", str(archive), f"{container}:/images.tar", what="copying the images")
    engine.run(
        "exec",
        container,
        "ctr",
        "--namespace=k8s.io",
        "images",
        "import",
        "--all-platforms",
        "--no-unpack",
        "/images.tar",
        what="importing the component images",
        timeout=BUILD_TIMEOUT_SECONDS,
    )
    listed = (
        engine.run(
            "exec",
            container,
            "ctr",
            "--namespace=k8s.io",
            "images",
            "list",
            "--quiet",
            what="listing the node's images",
        )
        .stdout.decode()
        .split()
    )
    absent = [ref for ref in references if ref not in listed and f"docker.io/{ref}" not in listed]
    if absent:
        raise UserFacingError(f"the node's containerd lacks images after the import: {absent}")
    engine.run(
        "exec",
        container,
        "sh",
        "-c",
        "rm -f /images.tar; pkill containerd; sleep 1",
        what="stopping containerd in the build container",
        check=False,
    )


def _write_in(engine: DockerEngine, container: str, path: str, text: str) -> None:
    engine.run(
        "exec",
        "-i",
        container,
        "sh",
        "-c",
        f"mkdir -p $(dirname {path}) && cat > {path}",
        what=f"writing {path}",
        stdin=text.encode(),
    )
