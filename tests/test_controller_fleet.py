"""How the fleet connects members: refused kubeconfigs, rotations, a check that survives.

The hub is a fake that serves Secrets from a dict; the links are real MemberLinks pointed at a
closed port (they start, and fail to reach anything, which these tests do not need).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import yaml

from suanli import metrics
from suanli.api.reasons import MemberReason
from suanli.controller.dispatcher import utc_now
from suanli.controller.fleet import MemberFleet
from suanli.controller.ports import Obj
from suanli.dispatch.capacity import CapacityIndex
from suanli.options import OperatorOptions

NAME = "member-x"


def kubeconfig(user: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "m", "cluster": {"server": "https://127.0.0.1:1"}}],
            "users": [{"name": "hub", "user": user}],
            "contexts": [{"name": "m", "context": {"cluster": "m", "user": "hub"}}],
            "current-context": "m",
        }
    )


@dataclass
class FakeHub:
    secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    failing: bool = False

    async def secret(self, namespace: str, name: str) -> dict[str, str]:
        if self.failing:
            raise ConnectionError("the hub does not answer")
        return dict(self.secrets[(namespace, name)])

    async def event(
        self, regarding: Mapping[str, Any], *, reason: str, message: str, warning: bool = False
    ) -> None:
        self.events.append({"regarding": regarding, "reason": reason, "message": message})


@dataclass
class Listener:
    """What the fleet reports, counted; these tests look at the fleet itself."""

    kicks: int = 0

    def kick(self) -> None:
        self.kicks += 1

    def jobs_synced(self, cluster: str, remotes: list[Obj]) -> None:
        pass

    def job_event(self, cluster: str, kind: str, remote: Obj) -> None:
        pass

    def pod_unschedulable(self, job: str) -> None:
        pass

    async def member_lost(self, cluster: str, since: datetime) -> None:
        pass


def member() -> dict[str, Any]:
    return {
        "apiVersion": "suanli.io/v1alpha1",
        "kind": "MemberCluster",
        "metadata": {"name": NAME, "uid": "u-1", "generation": 1},
        "spec": {
            "region": "test",
            "provider": "local",
            "kubeconfigSecretRef": {"name": "x", "namespace": "ns", "key": "kubeconfig"},
            "prices": [{"gpuModel": "H100", "pricePerGPUHour": "1.00"}],
        },
    }


def run(test: Any, **options: Any) -> None:
    async def main() -> None:
        hub = FakeHub()
        tasks: set[asyncio.Task[Any]] = set()

        def spawn(coroutine: Coroutine[Any, Any, Any]) -> None:
            tasks.add(asyncio.get_running_loop().create_task(coroutine))

        fleet = MemberFleet(
            index=CapacityIndex(),
            secrets=hub,
            events=hub,
            options=OperatorOptions(**options),
            listener=Listener(),
            spawn=spawn,
            clock=utc_now,
        )
        try:
            await test(fleet, hub)
        finally:
            await fleet.stop()
            for task in tasks:
                task.cancel()

    asyncio.run(main())


EXEC_USER = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "/bin/sh"}}


def test_an_exec_kubeconfig_leaves_the_member_unconnected_with_a_reason() -> None:
    async def test(fleet: MemberFleet, hub: FakeHub) -> None:
        hub.secrets[("ns", "x")] = {"kubeconfig": kubeconfig(EXEC_USER)}
        await fleet.member_upsert(member())
        assert NAME not in fleet.links
        problem = fleet.connection_problem(NAME)
        assert problem is not None
        reason, message = problem
        assert reason == MemberReason.KUBECONFIG_REFUSED
        assert 'user "hub"' in message and "Secret ns/x (key kubeconfig)" in message
        assert fleet.reachable[NAME] is False

        # Fixed in the Secret: the periodic check connects it.
        hub.secrets[("ns", "x")] = {"kubeconfig": kubeconfig({"token": "a"})}
        await fleet.check_kubeconfig(NAME)
        assert NAME in fleet.links
        assert fleet.connection_problem(NAME) is None
        assert hub.events == []  # a first connection is no rotation

    run(test)


def test_the_flag_lets_a_plugin_through() -> None:
    async def test(fleet: MemberFleet, hub: FakeHub) -> None:
        # A command that exits 1: the client then fails to get a token, but it was allowed.
        user = {"exec": {**EXEC_USER["exec"], "command": "false"}}
        hub.secrets[("ns", "x")] = {"kubeconfig": kubeconfig(user)}
        await fleet.member_upsert(member())
        problem = fleet.connection_problem(NAME)
        assert problem is None or problem[0] != MemberReason.KUBECONFIG_REFUSED

    run(test, allow_kubeconfig_exec=True)


def test_a_missing_secret_is_reported_and_tried_again() -> None:
    async def test(fleet: MemberFleet, hub: FakeHub) -> None:
        await fleet.member_upsert(member())
        problem = fleet.connection_problem(NAME)
        assert problem is not None and problem[0] == MemberReason.KUBECONFIG_SECRET_NOT_FOUND
        hub.secrets[("ns", "x")] = {"kubeconfig": kubeconfig({"token": "a"})}
        await fleet.check_kubeconfig(NAME)
        assert NAME in fleet.links

    run(test)


def test_a_rotated_kubeconfig_replaces_the_link_once() -> None:
    async def test(fleet: MemberFleet, hub: FakeHub) -> None:
        hub.secrets[("ns", "x")] = {"kubeconfig": kubeconfig({"token": "old"})}
        await fleet.member_upsert(member())
        first = fleet.links[NAME]
        await fleet.check_kubeconfig(NAME)
        assert fleet.links[NAME] is first  # unchanged: left alone

        reloads = metrics.MEMBER_KUBECONFIG_RELOADS.labels(NAME)._value.get()
        hub.secrets[("ns", "x")] = {"kubeconfig": kubeconfig({"token": "new"})}
        await fleet.check_kubeconfig(NAME)
        assert fleet.links[NAME] is not first
        assert metrics.MEMBER_KUBECONFIG_RELOADS.labels(NAME)._value.get() == reloads + 1
        (event,) = hub.events
        assert event["reason"] == MemberReason.KUBECONFIG_RELOADED
        assert event["regarding"]["metadata"]["name"] == NAME

    run(test)


def test_the_check_survives_failures_and_counts_them() -> None:
    async def test(fleet: MemberFleet, hub: FakeHub) -> None:
        hub.secrets[("ns", "x")] = {"kubeconfig": kubeconfig({"token": "a"})}
        await fleet.member_upsert(member())
        hub.failing = True
        errors = metrics.MEMBER_KUBECONFIG_CHECK_ERRORS.labels(NAME)
        before = errors._value.get()
        for _ in range(3):  # one round per interval, as the kubeconfig-check loop runs it
            await fleet.check_kubeconfigs()
        assert errors._value.get() == before + 3
        assert NAME in fleet.links  # a hub hiccup does not cut a working member
        assert NAME in fleet.check_failures
        hub.failing = False
        await fleet.check_kubeconfigs()
        assert NAME not in fleet.check_failures

    run(test)
