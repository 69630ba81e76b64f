"""The Debian packages the kind provider needs on the host, installed when they are missing.

kind's clusters run in Docker's engine (``docker.io``: suanli starts Debian's dockerd when no
engine answers), and the node image and the Python base image are laid out from Debian
packages by ``mmdebstrap``, since no image registry is reached. `suanli dev up --provider kind`
and the kind tests install both with apt-get when they run as root on Debian; elsewhere they
say what to install, and the kind tests are skipped with that sentence as the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from typing import Final

from suanli.devenv.docker_engine import dockerd_path
from suanli.errors import UserFacingError

Log = Callable[[str], None]

APT_TIMEOUT_SECONDS: Final = 900


def missing_kind_packages() -> list[str]:
    """The Debian packages of the kind provider that are not installed here."""
    missing = [] if dockerd_path() is not None else ["docker.io"]
    return missing + ([] if shutil.which("mmdebstrap") else ["mmdebstrap"])


def ensure_kind_packages(log: Log) -> None:
    """Install the missing packages with apt-get (as root, on Debian), or explain why not.

    Raises:
        UserFacingError: some are missing and this process cannot install them, or apt-get
            failed (its last lines are in the message).
    """
    missing = missing_kind_packages()
    if not missing:
        return
    command = f"apt-get install {' '.join(missing)}"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise UserFacingError(
            f"the kind provider needs {', '.join(missing)} (Debian packages), which are not "
            f"installed, and this user cannot install them: run `sudo {command}`"
        )
    log(f"installing {', '.join(missing)} with apt-get (a minute or two)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
    ):
        result = subprocess.run(
            step, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_SECONDS, check=False
        )
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-5:])
            raise UserFacingError(f"`{' '.join(step)}` failed:\n{tail}")
    log(f"installed {', '.join(missing)}")
