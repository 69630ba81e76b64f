"""Which metrics a PromQL expression reads, and which ones a /metrics page offers.

Enough of PromQL for the expressions suanli ships (selectors, functions, aggregations with
``by``/``without``, binary operators): the tests use it to prove that every name the dashboard
and the alerts use is one the operator (or the hub's API server) really exports.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, Protocol

_STRINGS: Final = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')
_BRACES: Final = re.compile(r"\{[^}]*\}")
_RANGES: Final = re.compile(r"\[[^\]]*\]")
_GROUPING: Final = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
_IDENTIFIER: Final = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS: Final = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf", "nan"}
)


def metric_names(expression: str) -> set[str]:
    """The metric names ``expression`` selects (function and aggregation names left out)."""
    text = _STRINGS.sub('""', expression)
    text = _BRACES.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names: set[str] = set()
    for found in _IDENTIFIER.finditer(text):
        name = found.group()
        following = text[found.end() :].lstrip()
        if following.startswith("(") or name.lower() in _KEYWORDS:
            continue  # a function or aggregation, or an operator word
        if text[found.start() - 1 : found.start()].isdigit():
            continue  # a duration's unit (5m) or an exponent
        names.add(name)
    return names


class Family(Protocol):
    """A metric family as prometheus-client's registry and text parser both give it."""

    name: str
    type: str


_SAMPLE_SUFFIXES: Final = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
}


def exported_names(families: Iterable[Family]) -> set[str]:
    """Every series name the families expose, with counters' and histograms' suffixes."""
    names: set[str] = set()
    for family in families:
        names.add(family.name)
        names.update(family.name + suffix for suffix in _SAMPLE_SUFFIXES.get(family.type, ()))
    return names
