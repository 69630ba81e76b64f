"""How long a job's pods may hold their devices: the whole life fits in ``maxRuntime``.

A pod keeps its GPUs until its containers have stopped, and Kubernetes lets them take
``terminationGracePeriodSeconds`` to stop after they are told to (a deletion, a deadline),
running ``preStop`` hooks meanwhile; a probe that fails may carry a grace of its own. A
template that asks for days of grace (or a ``sleep infinity`` preStop under it) would hold a
member's GPUs for days after the job was deleted or ran out of time. So on the member:

- every grace is bounded by the platform's (``suanli run --max-termination-grace``, 30 s by
  default, Kubernetes' own default) and by half the job's ``maxRuntime``: the pod's
  ``terminationGracePeriodSeconds`` is set to that bound, and each probe's grace is lowered to
  it. A preStop hook runs inside the grace, so it is bounded too;
- ``activeDeadlineSeconds`` is ``maxRuntime`` less that grace, so a job stopped at its deadline
  has its pods gone by ``maxRuntime``: the hold (``maxRuntime`` at the highest price) covers
  the whole life.

Admission warns when a template asks for more than the bound (:func:`grace_warnings`); the
template is clamped, not refused, since a longer grace is a wish, not a need. Pure.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from suanli.api.podpolicy import CONTAINER_KINDS
from suanli.api.validation import PathPart, join_path

DEFAULT_TERMINATION_GRACE_SECONDS: Final = 30
"""Kubernetes' default ``terminationGracePeriodSeconds``, and the platform's bound by default."""
GRACE_FIELD: Final = "terminationGracePeriodSeconds"
# Probes whose failure kills the container, and so may carry a grace of their own.
KILLING_PROBES: Final = ("livenessProbe", "startupProbe")
SPEC_PATH: Final[tuple[PathPart, ...]] = ("spec", "template", "spec")


@dataclass(frozen=True)
class PodLifetime:
    """The bounds a job's pods get on the member, in seconds."""

    grace: int
    """``terminationGracePeriodSeconds`` of every pod, and the most any probe may ask."""
    active_deadline: int
    """The remote Job's ``activeDeadlineSeconds``: ``maxRuntime`` less :attr:`grace`."""


def _obj(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _items(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _seconds(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def requested_graces(template: Mapping[str, Any]) -> Iterator[tuple[str, int]]:
    """(path, seconds) of every grace the template asks for: the pod's and its probes'."""
    spec = _obj(template.get("spec"))
    pod_grace = _seconds(spec.get(GRACE_FIELD))
    if pod_grace is not None:
        yield join_path((*SPEC_PATH, GRACE_FIELD)), pod_grace
    for kind in CONTAINER_KINDS:
        for index, container in enumerate(_items(spec.get(kind))):
            for probe in KILLING_PROBES:
                seconds = _seconds(_obj(_obj(container).get(probe)).get(GRACE_FIELD))
                if seconds is not None:
                    yield join_path((*SPEC_PATH, kind, index, probe, GRACE_FIELD)), seconds


def pod_lifetime(
    max_runtime_seconds: int, template: Mapping[str, Any], max_grace: int
) -> PodLifetime:
    """The grace and deadline of a job's pods (see the module notes)."""
    asked = _seconds(_obj(template.get("spec")).get(GRACE_FIELD))
    wanted = DEFAULT_TERMINATION_GRACE_SECONDS if asked is None else asked
    grace = max(0, min(wanted, max_grace, max_runtime_seconds // 2))
    return PodLifetime(grace=grace, active_deadline=max(1, max_runtime_seconds - grace))


def bound_graces(pod_spec: dict[str, Any], grace: int) -> None:
    """Set the pod's grace to ``grace`` and lower every probe's to it, in place."""
    pod_spec[GRACE_FIELD] = grace
    for kind in CONTAINER_KINDS:
        for container in _items(pod_spec.get(kind)):
            for probe in KILLING_PROBES:
                body = _obj(container).get(probe) if isinstance(container, dict) else None
                if isinstance(body, dict) and (_seconds(body.get(GRACE_FIELD)) or 0) > grace:
                    body[GRACE_FIELD] = grace


def grace_warnings(template: Mapping[str, Any], max_grace: int) -> list[str]:
    """A warning for each grace the template asks for above the platform's bound."""
    return [
        f"{path}: {seconds}s is above this platform's bound of {max_grace}s; the job's pods "
        f"get {max_grace}s to stop (and preStop hooks run within it)"
        for path, seconds in requested_graces(template)
        if seconds > max_grace
    ]
