"""``suanli crds``: write the CRDs generated from the API models, or check that they match.

``suanli crds`` (re)writes one file per kind under ``crds/``; ``suanli crds --check`` writes
nothing and exits 1 with a unified diff when ``crds/`` is not what the models generate (the same
comparison the unit tests make); ``suanli crds --stdout`` prints them as one YAML stream.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from suanli.api.crdgen import HEADER, generate, generate_stream
from suanli.errors import UserFacingError

DEFAULT_DIR = Path("crds")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``crds`` sub-command."""
    parser = subparsers.add_parser(
        "crds",
        help="write the CRDs generated from the API models to crds/",
        description="Generate the CustomResourceDefinitions from the pydantic models in "
        "suanli.api: one file per kind. Run it from the repository root after changing a "
        "model, and commit the result.",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_DIR,
        help="directory of the CRD files (default: crds, relative to the current directory)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 and print a diff if the directory is out of date",
    )
    mode.add_argument(
        "--stdout",
        action="store_true",
        help="print all CRDs as one YAML stream instead of writing files",
    )
    parser.set_defaults(handler=run_crds)


def run_crds(args: argparse.Namespace) -> int:
    """Handler of ``suanli crds``."""
    if args.stdout:
        sys.stdout.write(generate_stream())
        return 0
    directory: Path = args.dir
    if args.check:
        return check(directory)
    write(directory)
    return 0


def write(directory: Path) -> list[Path]:
    """Write every CRD into ``directory``; delete generated files no kind produces any more."""
    directory.mkdir(parents=True, exist_ok=True)
    expected = generate()
    for stale in _stale_files(directory, expected):
        if stale.read_text(encoding="utf-8").startswith(HEADER):
            stale.unlink()
            print(f"removed {stale}")
    written: list[Path] = []
    for name, content in expected.items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            path.write_text(content, encoding="utf-8")
            print(f"wrote {path}")
        written.append(path)
    return written


def check(directory: Path) -> int:
    """Compare ``directory`` with a fresh generation; print a diff and return 1 if they differ."""
    if not directory.is_dir():
        raise UserFacingError(
            f"{directory} is not a directory; run from the repository root or pass --dir"
        )
    expected = generate()
    differences = 0
    for name, content in expected.items():
        path = directory / name
        actual = path.read_text(encoding="utf-8") if path.exists() else ""
        if actual != content:
            differences += 1
            sys.stdout.writelines(
                difflib.unified_diff(
                    actual.splitlines(keepends=True),
                    content.splitlines(keepends=True),
                    fromfile=str(path),
                    tofile=f"{path} (generated)",
                )
            )
    for stale in _stale_files(directory, expected):
        differences += 1
        print(f"{stale}: no kind generates this file any more; delete it")
    if differences:
        print(
            f"suanli: {directory} is out of date with the API models; run `suanli crds`",
            file=sys.stderr,
        )
        return 1
    print(f"{directory} is up to date")
    return 0


def _stale_files(directory: Path, expected: dict[str, str]) -> list[Path]:
    return sorted(
        path for path in directory.glob("*.yaml") if path.is_file() and path.name not in expected
    )
