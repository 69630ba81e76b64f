"""Failed ledger commits are counted (suanli_voucher_ledger_write_errors_total), so an alert
can wake someone; a voucher that was deleted is not a failure."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from suanli import metrics
from suanli.handlers.ledger_writer import LedgerWriter, VoucherGoneError
from suanli.handlers.voucher_cache import VoucherCache
from suanli.kube import ConflictError, NotFoundError

VOUCHER = {
    "apiVersion": "suanli.io/v1alpha1",
    "kind": "VoucherQuota",
    "metadata": {"name": "budget", "namespace": "tenant-a", "resourceVersion": "1"},
    "spec": {"amount": "100.00", "currency": "CNY", "validUntil": "2030-01-01T00:00:00Z"},
}


class ConflictingHub:
    """A hub where someone else always wrote the voucher first (or it is gone)."""

    def __init__(self, *, gone: bool = False) -> None:
        self.gone = gone

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        if self.gone:
            raise NotFoundError("voucherquotas budget not found")
        return VOUCHER

    async def replace_status(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        raise ConflictError("the object has been modified")


def errors() -> float:
    value: float = metrics.LEDGER_WRITE_ERRORS.labels("tenant-a", "budget")._value.get()
    return value


def test_a_commit_that_never_lands_is_counted() -> None:
    writer = LedgerWriter(ConflictingHub(), VoucherCache(), "tenant-a", "budget")  # type: ignore[arg-type]
    before = errors()
    with pytest.raises(RuntimeError, match="kept changing"):
        asyncio.run(writer.refresh())
    assert errors() == before + 1


def test_a_deleted_voucher_is_not_a_write_failure() -> None:
    writer = LedgerWriter(ConflictingHub(gone=True), VoucherCache(), "tenant-a", "budget")  # type: ignore[arg-type]
    before = errors()
    with pytest.raises(VoucherGoneError):
        asyncio.run(writer.refresh())
    assert errors() == before
