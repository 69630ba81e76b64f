"""The package's import contracts (pyproject.toml, ``[tool.importlinter]``) hold: layers that
import one way, no cycles, pure cores without Kubernetes or network I/O, no production import
of the dev environment. CI runs ``lint-imports`` too; this keeps the test command honest."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_import_contract_is_kept() -> None:
    linter = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert linter is not None, "lint-imports is missing: pip install -e '.[dev]'"
    result = subprocess.run(
        [linter, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
