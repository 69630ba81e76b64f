"""The toolchain binaries only tests use (helm, promtool), built on first use.

`suanli dev up` builds what the federation runs and no more; a test that needs one of these
builds it the first time (minutes, cold; cached in ~/.cache/suanli afterwards), with its
progress on the terminal, not in pytest's captured output. Without Go that is an error that
says so, never a skip: a suite that passes by skipping its chart tests proves nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

from suanli.devenv.toolchain import Component, ensure_built


def _say(message: str) -> None:
    print(f"[tests: toolchain] {message}", file=sys.__stderr__, flush=True)


def built(component: Component, binary: str) -> Path:
    """The path of ``component``'s ``binary``, built first if missing or stale."""
    ensure_built(component, log=_say)
    return component.path(binary)
