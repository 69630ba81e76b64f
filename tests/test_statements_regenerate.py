"""The leader's statements pass against an in-memory hub: it writes a statement only when its
figures or status changed, and a month it cannot write is counted and tried again."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from suanli import metrics
from suanli.handlers.statements import regenerate, regenerate_marked
from suanli.vouchers.statement_objects import DirtyMonths
from suanli.vouchers.usage import AttemptFacts, JobFacts, attempt_usages, usage_record

MARCH = datetime(2026, 3, 10, tzinfo=UTC)


def programme_record(job: str, company: str, center: str, share: str) -> dict[str, Any]:
    """A stored usage record of programme city, as the operator writes it (labels included)."""
    facts = AttemptFacts(
        1, center, "H100", Decimal("36.00"), MARCH, MARCH + timedelta(hours=1), "Succeeded"
    )
    (usage,) = attempt_usages([facts], gpus=1, hold=Decimal("100.00"))
    split = {
        "name": "city",
        "company": company,
        "rule": "half",
        "programShare": share,
        "companyShare": str(Decimal("36.00") - Decimal(share)),
    }
    return usage_record(JobFacts(f"ns-{company}", job, f"uid-{job}", "v", "CNY"), usage, split)


class MemoryHub:
    """The few Hub calls the statements pass makes, over dictionaries; counts the writes."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, dict[str, Any]]] = {}
        self.writes: list[tuple[str, str]] = []
        self.failing = False

    def add(self, plural: str, body: dict[str, Any]) -> None:
        self.objects.setdefault(plural, {})[body["metadata"]["name"]] = copy.deepcopy(body)

    async def list(
        self, plural: str, namespace: str | None = None, *, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        if self.failing:
            raise ConnectionError("the API server is not answering")
        wanted = dict(term.split("=") for term in (label_selector or "").split(",") if term)
        return [
            copy.deepcopy(body)
            for body in self.objects.get(plural, {}).values()
            if wanted.items() <= body["metadata"].get("labels", {}).items()
        ]

    async def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        self.writes.append(("create", body["metadata"]["name"]))
        stored = {key: value for key, value in copy.deepcopy(body).items() if key != "status"}
        self.add(plural, stored)
        return copy.deepcopy(stored)

    async def merge_patch(
        self, plural: str, namespace: str | None, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        self.writes.append(("spec", name))
        body = self.objects[plural][name]
        body["metadata"]["labels"] = patch["metadata"]["labels"]
        body["spec"] = copy.deepcopy(patch["spec"])
        return copy.deepcopy(body)

    async def patch_status(
        self, plural: str, namespace: str | None, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        self.writes.append(("status", name))
        self.objects[plural][name]["status"] = copy.deepcopy(patch["status"])
        return copy.deepcopy(self.objects[plural][name])


def test_statements_are_written_once_and_again_only_where_a_record_changed_them() -> None:
    hub = MemoryHub()
    hub.add("usagerecords", programme_record("a", "acme", "east", "18.00"))
    hub.add("usagerecords", programme_record("b", "bolt", "west", "18.00"))

    async def passes() -> None:
        assert await regenerate(hub, "city", "2026-03", MARCH) == 8  # 4 creates, 4 statuses
        assert sorted(hub.objects["voucherstatements"]) == [
            "city-2026-03-center-east",
            "city-2026-03-center-west",
            "city-2026-03-company-acme",
            "city-2026-03-company-bolt",
        ]
        assert await regenerate(hub, "city", "2026-03", MARCH + timedelta(days=1)) == 0
        hub.add("usagerecords", programme_record("c", "acme", "east", "10.00"))
        hub.writes.clear()
        assert await regenerate(hub, "city", "2026-03", MARCH + timedelta(days=2)) == 4
        assert sorted(hub.writes) == [
            ("spec", "city-2026-03-center-east"),
            ("spec", "city-2026-03-company-acme"),
            ("status", "city-2026-03-center-east"),
            ("status", "city-2026-03-company-acme"),
        ]

    asyncio.run(passes())
    east = hub.objects["voucherstatements"]["city-2026-03-center-east"]
    assert east["spec"]["totals"]["claim"] == "28.00"
    assert (east["status"]["revision"], east["status"]["phase"]) == (2, "Open")


def test_a_month_that_cannot_be_written_is_counted_and_tried_again() -> None:
    hub = MemoryHub()
    hub.add("usagerecords", programme_record("a", "acme", "east", "18.00"))
    runtime = SimpleNamespace(hub=hub, statements=DirtyMonths())
    runtime.statements.mark("city", "2026-03")
    errors = metrics.BACKGROUND_TASK_ERRORS.labels("statements")
    before = errors._value.get()
    closing: dict[tuple[str, str], datetime] = {}

    hub.failing = True
    asyncio.run(regenerate_marked(runtime, closing, MARCH))  # type: ignore[arg-type]
    assert errors._value.get() == before + 1
    assert runtime.statements.pairs == {("city", "2026-03")}
    assert "voucherstatements" not in hub.objects

    hub.failing = False
    asyncio.run(regenerate_marked(runtime, closing, MARCH))  # type: ignore[arg-type]
    assert len(hub.objects["voucherstatements"]) == 2
    assert runtime.statements.pairs == set()
    # Written while Open: visited again once it closes, with nothing marked, to close it.
    closes = datetime(2026, 4, 2, tzinfo=UTC)
    assert closing == {("city", "2026-03"): closes}
    asyncio.run(regenerate_marked(runtime, closing, closes))  # type: ignore[arg-type]
    assert {s["status"]["phase"] for s in hub.objects["voucherstatements"].values()} == {"Closed"}
    assert closing == {}
