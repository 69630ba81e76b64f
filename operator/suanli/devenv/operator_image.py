"""suanli's own image, built from the repository's Dockerfile, for the kind provider.

The image is what a cluster admin deploys with the Helm chart; in a kind federation the chart
runs it as the operator's pod on the hub and as the exporter's DaemonSet on the members. Its
Python base comes from Debian packages (``kindnode/debian.py``) unless public images are
allowed (``SUANLI_KIND_IMAGES=public``, then the Dockerfile's default ``python`` image); its
wheels come from PyPI. The tag is a digest of the build context, so an unchanged checkout is
not rebuilt, and Docker's layer cache keeps the dependency layer across source changes.

For the exporter a second, test-only image adds the stand-in ``libnvidia-ml.so.1`` and a state
file naming a few GPUs (``fakenvml``): the chart's DaemonSet then runs the real exporter code
against it on the kind node.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Final

from suanli import __version__
from suanli.devenv.docker_engine import DockerEngine
from suanli.devenv.fakenvml import SONAME, STATE_ENV, FakeNvmlState, build_library, sample_gpus
from suanli.devenv.fakenvml import write_state as write_nvml_state
from suanli.devenv.kindnode.debian import debian_image, recipe_key
from suanli.devenv.providers import public_images
from suanli.errors import UserFacingError

Log = Callable[[str], None]

REPOSITORY: Final = "suanli.local/suanli"
EXPORTER_REPOSITORY: Final = "suanli.local/suanli-fakenvml"
PUBLIC_PYTHON: Final = "python:3.11-slim-bookworm"
PYTHON_PACKAGES: Final = ("python3", "python3-venv", "ca-certificates")
BUILD_TIMEOUT_SECONDS: Final = 900.0
FAKE_GPUS: Final = 2
HOST_CA_BUNDLE: Final = Path("/etc/ssl/certs/ca-certificates.crt")


def repository_root() -> Path:
    """The checkout the package runs from (the image builds from its Dockerfile)."""
    root = Path(str(resources.files("suanli"))).parent.parent
    if not (root / "Dockerfile").is_file():
        raise UserFacingError(f"no Dockerfile at {root}: build suanli's image from a checkout")
    return root


def _context_digest(root: Path) -> str:
    """Of every file the build reads (see .dockerignore): Dockerfile, metadata, source."""
    digest = hashlib.sha256()
    files = [root / "Dockerfile", root / "pyproject.toml", root / "README.md"]
    files += sorted(
        path
        for path in (root / "operator").rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and not any(part.endswith(".egg-info") for part in path.parts)
        and path.suffix != ".pyc"
    )
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def python_base(engine: DockerEngine, log: Log) -> str:
    """The Python base image: Debian's python3, or the public image where allowed.

    The local base trusts the certificate authorities this machine trusts (its
    ``/etc/ssl/certs/ca-certificates.crt``), and tells pip to use them: where PyPI is reached
    through a TLS-inspecting proxy, as on this project's machines, pip in the build would
    otherwise refuse the proxy's certificate. The image is local; nothing of it is published.
    """
    if public_images():
        return PUBLIC_PYTHON
    bundle = HOST_CA_BUNDLE.read_bytes() if HOST_CA_BUNDLE.is_file() else b""

    def trust_host_authorities(root: Path) -> None:
        if bundle:
            (root / HOST_CA_BUNDLE.relative_to("/")).write_bytes(bundle)

    return debian_image(
        engine,
        "suanli.local/python",
        PYTHON_PACKAGES,
        recipe=recipe_key("python3-venv", hashlib.sha256(bundle).hexdigest()),
        customize=trust_host_authorities,
        changes=(f"ENV PIP_CERT={HOST_CA_BUNDLE} SSL_CERT_FILE={HOST_CA_BUNDLE}",),
        log=log,
    )


def ensure_operator_image(engine: DockerEngine, log: Log) -> str:
    """suanli's image for this checkout, built when missing; its reference."""
    root = repository_root()
    base = python_base(engine, log)
    tag = f"{REPOSITORY}:{__version__}-{_context_digest(root)}"
    if engine.image_exists(tag):
        log(f"operator image {tag}: cached")
        return tag
    started = time.monotonic()
    log(f"operator image {tag}: building from {root / 'Dockerfile'} (wheels from PyPI)")
    engine.run(
        "build",
        "--network",
        "host",  # pip reaches PyPI the way this machine does
        "--build-arg",
        f"PYTHON_IMAGE={base}",
        "-t",
        tag,
        str(root),
        what=f"docker build {tag}",
        timeout=BUILD_TIMEOUT_SECONDS,
    )
    log(f"operator image {tag}: built in {time.monotonic() - started:.0f}s")
    return tag


def ensure_exporter_image(engine: DockerEngine, operator_image: str, log: Log) -> str:
    """The operator image plus the stand-in NVML library and a state of ``FAKE_GPUS`` GPUs."""
    library = build_library()
    dockerfile = (
        f"FROM {operator_image}\n"
        f"COPY {SONAME} state.json /opt/fakenvml/\n"
        f"ENV LD_LIBRARY_PATH=/opt/fakenvml {STATE_ENV}=/opt/fakenvml/state.json\n"
    )
    key = recipe_key(dockerfile, hashlib.sha256(library.read_bytes()).hexdigest(), FAKE_GPUS)
    tag = f"{EXPORTER_REPOSITORY}:{__version__}-{key}"
    if engine.image_exists(tag):
        log(f"exporter image {tag}: cached")
        return tag
    with tempfile.TemporaryDirectory(prefix="suanli-exporter-") as scratch:
        context = Path(scratch)
        shutil.copy2(library, context / SONAME)
        write_nvml_state(context / "state.json", FakeNvmlState(gpus=sample_gpus(FAKE_GPUS)))
        # COPY keeps the modes, and the exporter runs as an unprivileged user.
        (context / SONAME).chmod(0o755)
        (context / "state.json").chmod(0o644)
        (context / "Dockerfile").write_text(dockerfile)
        engine.run("build", "-q", "-t", tag, str(context), what=f"docker build {tag}", timeout=300)
    log(f"exporter image {tag}: built (stand-in libnvidia-ml, {FAKE_GPUS} GPUs)")
    return tag
