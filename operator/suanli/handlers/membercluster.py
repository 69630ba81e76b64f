"""MemberCluster handlers on the hub: keep the operator's view of members current.

Admission prices jobs from the members' price lists, so the operator holds every MemberCluster
in memory, primed at start-up (before the webhook serves) and kept current by the watch.
"""

from __future__ import annotations

from typing import Any

import kopf

from suanli.api.meta import GROUP, VERSION
from suanli.handlers.runtime import Runtime


@kopf.on.startup()
async def membercluster_prime(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo.runtime
    for member in await runtime.hub.list("memberclusters"):
        runtime.members[member["metadata"]["name"]] = member


@kopf.on.event(GROUP, VERSION, "memberclusters")
async def membercluster_event(
    type: str | None, body: kopf.Body, name: str, memo: kopf.Memo, **_: Any
) -> None:
    runtime: Runtime = memo.runtime
    if type == "DELETED":
        runtime.members.pop(name, None)
    else:
        runtime.members[name] = dict(body)
