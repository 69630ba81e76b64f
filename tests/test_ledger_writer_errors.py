"""Failed voucher status writes are counted (suanli_voucher_ledger_write_errors_total), so an
alert can wake someone, and retried until they land; a voucher that was deleted is not a
failure."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from suanli import metrics
from suanli.handlers.ledger_writer import MAX_CONFLICTS, LedgerWriter
from suanli.handlers.voucher_cache import VoucherCache
from suanli.kube import ConflictError, NotFoundError
from suanli.vouchers.book import VoucherBook
from suanli.vouchers.ledger import VoucherGoneError

VOUCHER = {
    "apiVersion": "suanli.io/v1alpha1",
    "kind": "VoucherQuota",
    "metadata": {"name": "budget", "namespace": "tenant-a", "resourceVersion": "1"},
    "spec": {"amount": "100.00", "currency": "CNY", "validUntil": "2030-01-01T00:00:00Z"},
}


class ConflictingHub:
    """A hub where someone else wrote the voucher first, ``conflicts`` times (or it is gone)."""

    def __init__(self, *, conflicts: int = 0, gone: bool = False) -> None:
        self.conflicts = conflicts
        self.gone = gone
        self.written: list[dict[str, Any]] = []

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        if self.gone:
            raise NotFoundError("voucherquotas budget not found")
        return VOUCHER

    async def replace_status(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.conflicts:
            self.conflicts -= 1
            raise ConflictError("the object has been modified")
        self.written.append(body)
        return {**body, "metadata": {**body["metadata"], "resourceVersion": "2"}}


def errors() -> float:
    value: float = metrics.LEDGER_WRITE_ERRORS.labels("tenant-a", "budget")._value.get()
    return value


def writer(hub: ConflictingHub) -> LedgerWriter:
    return LedgerWriter(hub, VoucherCache(), VoucherBook(), "tenant-a", "budget")  # type: ignore[arg-type]


def test_a_write_that_does_not_land_is_counted_and_tried_again_until_it_does() -> None:
    hub = ConflictingHub(conflicts=MAX_CONFLICTS)  # the first write gives up, the second lands
    before = errors()
    asyncio.run(writer(hub).refresh())
    assert errors() == before + 1
    assert len(hub.written) == 1 and hub.written[0]["status"]["remaining"] == "100.00"


def test_a_deleted_voucher_is_not_a_write_failure() -> None:
    before = errors()
    with pytest.raises(VoucherGoneError):
        asyncio.run(writer(ConflictingHub(gone=True)).refresh())
    assert errors() == before
