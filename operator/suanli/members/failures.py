"""Why a job's pods failed, read from the pods a member's API serves.

A batch Job says only that it failed (``BackoffLimitExceeded``); the reason is on its pods: the
terminated state of a container (reason, exit code, the end of its termination message, OOM
kill) or, for a pod that never ran one, the pod's own reason and message (``Evicted``,
``DeadlineExceeded``). :func:`pod_failures` turns the pods of one job into
:class:`~suanli.api.computejob.PodFailure` records, the lowest replicas first, bounded in count
and in message length, for the ComputeJob's status and Event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from suanli.api.computejob import FAILURE_MESSAGE_MAX, MAX_FAILURES, PodFailure
from suanli.members.rendezvous import COMPLETION_INDEX_ANNOTATION


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _tail(text: object, limit: int = FAILURE_MESSAGE_MAX) -> str | None:
    """The end of ``text``: a stack trace's last lines say what went wrong."""
    if not isinstance(text, str) or not text.strip():
        return None
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-(limit - 3) :]


def _replica(pod: Mapping[str, Any]) -> int | None:
    index = _obj(_obj(pod.get("metadata")).get("annotations")).get(COMPLETION_INDEX_ANNOTATION)
    return int(index) if isinstance(index, str) and index.isdigit() else None


def _failed_container(status: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """The first container (init containers first) that terminated unsuccessfully."""
    for key in ("initContainerStatuses", "containerStatuses"):
        for entry in status.get(key) or []:
            container = _obj(entry)
            for state_key in ("state", "lastState"):
                terminated = _obj(_obj(container.get(state_key)).get("terminated"))
                if terminated and terminated.get("exitCode") not in (0, None):
                    return str(container.get("name") or ""), terminated
                if terminated.get("reason") == "OOMKilled":
                    return str(container.get("name") or ""), terminated
    return None


def pod_failure(pod: Mapping[str, Any], cluster: str) -> PodFailure | None:
    """Why ``pod`` failed, or None if it did not (it succeeded, or still runs cleanly)."""
    status = _obj(pod.get("status"))
    failed = _failed_container(status)
    if failed is None and status.get("phase") != "Failed":
        return None
    metadata = _obj(pod.get("metadata"))
    node = _obj(pod.get("spec")).get("nodeName")
    common: dict[str, Any] = {
        "replica": _replica(pod),
        "pod": str(metadata.get("name") or ""),
        "cluster": cluster,
        "node": node if isinstance(node, str) and node else None,
    }
    if failed is None:
        return PodFailure(
            **common,
            reason=_tail(status.get("reason"), 128) or "Failed",
            message=_tail(status.get("message")),
        )
    container, terminated = failed
    reason = _tail(terminated.get("reason"), 128)
    exit_code = terminated.get("exitCode")
    return PodFailure(
        **common,
        container=container or None,
        reason=reason,
        exit_code=exit_code if isinstance(exit_code, int) else None,
        oom_killed=reason == "OOMKilled",
        message=_tail(terminated.get("message")) or _tail(status.get("message")),
    )


def pod_failures(pods: Iterable[Mapping[str, Any]], cluster: str) -> list[PodFailure]:
    """The failures among ``pods`` (of one job on ``cluster``), lowest replica first, at most
    :data:`~suanli.api.computejob.MAX_FAILURES`."""
    found = [f for f in (pod_failure(pod, cluster) for pod in pods) if f is not None]
    found.sort(key=lambda f: (f.replica is None, f.replica or 0, f.pod))
    return found[:MAX_FAILURES]


def describe(failure: PodFailure) -> str:
    """One failure as a sentence for an Event or a condition."""
    where = f"pod {failure.pod}" + (f" on node {failure.node}" if failure.node else "")
    replica = f"replica {failure.replica} " if failure.replica is not None else ""
    what = f"container {failure.container} " if failure.container else ""
    if failure.exit_code is not None:
        what += f"exited with code {failure.exit_code}"
    else:
        what += "failed"
    if failure.reason:
        what += f" ({failure.reason})"
    if failure.oom_killed:
        what += ": out of memory, raise resources.limits.memory"
    text = f"{replica}({where} of {failure.cluster}): {what}"
    return f"{text}: {failure.message}" if failure.message else text
