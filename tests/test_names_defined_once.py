"""Every name suanli puts on objects is defined once, in the API package: labels and
annotations under suanli.io/ (suanli.api.names and each kind's module) and each kind's plural
(suanli.api.kinds). A second definition elsewhere drifts silently; this finds one."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "operator" / "suanli"
PLURALS = re.compile(
    r'"(computejobs|voucherquotas|memberclusters|usagerecords|voucherprograms|voucherstatements)"'
)
OUR_NAME = re.compile(r'"suanli\.io/[a-z]')


def _code_lines() -> list[tuple[str, int, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith(("api/", "devenv/")):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.lstrip().startswith("#"):
                found.append((relative, number, line))
    return found


def test_no_label_or_annotation_is_spelled_outside_the_api() -> None:
    spelled = [f"{f}:{n}: {line.strip()}" for f, n, line in _code_lines() if OUR_NAME.search(line)]
    assert spelled == []


def test_no_plural_is_spelled_outside_the_api() -> None:
    spelled = [f"{f}:{n}: {line.strip()}" for f, n, line in _code_lines() if PLURALS.search(line)]
    assert spelled == []
