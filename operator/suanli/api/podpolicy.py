"""What a ComputeJob's pod template may contain: the one policy, checked at the hub.

The levels follow the Kubernetes Pod Security Standards. Every job must meet ``baseline``; a
member may require ``restricted`` (MemberCluster ``spec.podSecurityLevel``), and a job is only
placed where its template meets the member's level.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class PodSecurityLevel(StrEnum):
    """A Pod Security Standards level a member enforces; ordered from least to most strict."""

    BASELINE = "baseline"
    RESTRICTED = "restricted"

    @property
    def strictness(self) -> int:
        return _STRICTNESS[self]


_STRICTNESS: Final = {PodSecurityLevel.BASELINE: 1, PodSecurityLevel.RESTRICTED: 2}

DEFAULT_POD_SECURITY_LEVEL: Final = PodSecurityLevel.BASELINE


def level_errors(template: object, level: PodSecurityLevel) -> list[object]:
    """Placeholder until the policy lands (replaced by the policy branch)."""
    return []
