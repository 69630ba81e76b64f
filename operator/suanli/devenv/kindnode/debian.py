"""Container base images made from Debian packages, since no image registry can be reached.

``mmdebstrap --variant=minbase`` lays out a Debian root filesystem from the apt repositories
(which are reachable), a ``customize`` callback adds files to it, and ``docker import`` turns
the directory into an image. Each image is tagged with a key over everything that decides its
content (suite, packages, the caller's recipe key), so an unchanged recipe is never rebuilt: a
warm run only asks Docker whether the tag exists.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from suanli.devenv.docker_engine import DockerEngine, run_command
from suanli.errors import UserFacingError

Log = Callable[[str], None]
Customize = Callable[[Path], None]

SUITE: Final = "bookworm"
MIRRORS: Final = (
    f"deb http://deb.debian.org/debian {SUITE} main",
    f"deb http://deb.debian.org/debian {SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {SUITE}-security main",
)
MMDEBSTRAP_TIMEOUT_SECONDS: Final = 900.0


def recipe_key(*parts: object) -> str:
    """A short digest of a recipe, for image tags."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def debian_image(
    engine: DockerEngine,
    repository: str,
    packages: Sequence[str],
    *,
    recipe: str,
    customize: Customize | None = None,
    changes: Sequence[str] = (),
    log: Log,
) -> str:
    """A Debian image with ``packages``, customized, tagged by its recipe; built when missing.

    Args:
        engine: The engine to import into.
        repository: Image repository, e.g. ``suanli.local/kind-base``.
        packages: Debian packages on top of minbase.
        recipe: The caller's key for what ``customize`` does (changing it rebuilds).
        customize: Called with the root filesystem's directory before it is imported.
        changes: Dockerfile instructions for ``docker import --change``.
        log: Progress lines.
    """
    tag = f"{repository}:{SUITE}-{recipe_key(SUITE, MIRRORS, sorted(packages), recipe, changes)}"
    if engine.image_exists(tag):
        log(f"{tag}: cached")
        return tag
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise UserFacingError(
            "building images from Debian packages needs mmdebstrap: `apt-get install mmdebstrap`"
        )
    started = time.monotonic()
    log(f"{tag}: debootstrapping {len(packages)} packages from Debian (about a minute)")
    with tempfile.TemporaryDirectory(prefix="suanli-rootfs-") as scratch:
        root = Path(scratch) / "root"
        run_command(
            [
                mmdebstrap,
                "--variant=minbase",
                "--mode=root",
                "--quiet",
                f"--include={','.join(packages)}",
                # Leave out documentation and the apt lists: they only make the image bigger.
                "--dpkgopt=path-exclude=/usr/share/doc/*",
                "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/locale/*",
                "--customize-hook=rm -rf $1/var/lib/apt/lists/*",
                SUITE,
                str(root),
                *MIRRORS,
            ],
            env=engine.env,
            what=f"mmdebstrap for {repository}",
            timeout=MMDEBSTRAP_TIMEOUT_SECONDS,
        )
        if customize is not None:
            customize(root)
        archive = Path(scratch) / "rootfs.tar"
        run_command(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(archive), "."],
            env=engine.env,
            what=f"packing the root filesystem of {repository}",
            timeout=600,
        )
        arguments = ["import"]
        for change in changes:
            arguments += ["--change", change]
        engine.run(*arguments, str(archive), tag, what=f"docker import {tag}", timeout=600)
    log(f"{tag}: built in {time.monotonic() - started:.0f}s")
    return tag


def chroot(root: Path, *command: str, what: str) -> bytes:
    """Run a command inside a root filesystem (as root); its standard output."""
    result = subprocess.run(
        ["chroot", str(root), *command], capture_output=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise UserFacingError(f"{what} failed: {result.stderr.decode(errors='replace')[-2000:]}")
    return result.stdout
