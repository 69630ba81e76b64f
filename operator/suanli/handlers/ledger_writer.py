"""Every change to a voucher's ledger goes through one writer per voucher, in batches.

Concurrent admissions against one voucher would each read the status, reserve, and write it
back with a resourceVersion precondition; all but one would conflict, re-read and retry, and a
burst of N requests would cost O(N^2) writes. Kubernetes' ResourceQuota admission avoids that
self-inflicted contention by queueing a quota's requests in the process and committing them
together; this writer does the same: requests that arrive while a commit is in flight wait in
a queue and are decided together against the freshest ledger, with one status write.

Across processes (operator replicas) the resourceVersion precondition still guards every
write: a conflict re-reads the voucher and decides the same batch again, which is safe because
reserving the same job for the same amount twice is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from suanli import metrics
from suanli.api.common import Condition, ConditionStatus, set_condition
from suanli.api.voucherquota import VoucherQuota
from suanli.handlers.voucher_cache import VoucherCache, parse_voucher
from suanli.kube import ConflictError, Hub, NotFoundError
from suanli.vouchers.batch import BatchDecision, commit_batch
from suanli.vouchers.conditions import voucher_conditions
from suanli.vouchers.ledger import Ledger, ReservationRequest

logger = logging.getLogger(__name__)

PLURAL: Final = "voucherquotas"
MAX_ATTEMPTS: Final = 20

LedgerChange = Callable[[Ledger], Ledger]


class VoucherGoneError(Exception):
    """The voucher was deleted while a change waited to be written."""


@dataclass
class _Item:
    request: ReservationRequest | None
    change: LedgerChange | None
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(frozen=True)
class Committed:
    """What a commit wrote, for Events and metrics."""

    voucher: VoucherQuota
    ledger: Ledger
    changed_conditions: list[Condition]


class LedgerWriter:
    """Serialises and batches the ledger changes of one voucher (see the module docstring)."""

    def __init__(
        self,
        hub: Hub,
        cache: VoucherCache,
        namespace: str,
        name: str,
        on_commit: Callable[[Committed], None] | None = None,
    ) -> None:
        self._hub = hub
        self._cache = cache
        self._namespace = namespace
        self._name = name
        self._queue: list[_Item] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._on_commit = on_commit

    async def reserve(self, request: ReservationRequest) -> BatchDecision:
        """Commit a hold (or refuse it against the freshest ledger)."""
        result: BatchDecision = await self._submit(_Item(request=request, change=None))
        return result

    async def change(self, change: LedgerChange) -> Ledger:
        """Apply ``change`` to the freshest ledger and write it; returns the new ledger."""
        result: Ledger = await self._submit(_Item(request=None, change=change))
        return result

    async def refresh(self) -> Ledger:
        """Rewrite the status summary and conditions (no ledger change); e.g. on expiry."""
        return await self.change(lambda ledger: ledger)

    async def _submit(self, item: _Item) -> Any:
        self._queue.append(item)
        self._wakeup.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name=f"ledger {self._name}")
        return await item.future

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            self._wakeup.clear()
            try:
                await self._commit(batch)
            except Exception as error:
                if not isinstance(error, VoucherGoneError):  # a deleted voucher is no failure
                    metrics.LEDGER_WRITE_ERRORS.labels(self._namespace, self._name).inc()
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)

    async def _commit(self, batch: list[_Item]) -> None:
        # The first attempt trusts the cached voucher (fed by the watch and by our own writes);
        # if it is stale the write conflicts, and the retry reads it fresh.
        parsed = self._cache.get(self._namespace, self._name)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if parsed is None:
                parsed = parse_voucher(await self._read())
            body, voucher = parsed.body, parsed.voucher
            status = body.get("status") or {}
            ledger, results = _decide(batch, parsed.ledger)
            new_status, changed = _status_with(voucher, status, ledger, datetime.now(UTC))
            if new_status != status:
                try:
                    written = await self._hub.replace_status(PLURAL, {**body, "status": new_status})
                except ConflictError:
                    logger.debug("voucher %s changed under us (attempt %d)", self._name, attempt)
                    parsed = None
                    continue
                self._cache.put(written)
                if self._on_commit is not None:
                    self._on_commit(Committed(voucher, ledger, changed))
            _resolve(results)
            return
        raise RuntimeError(
            f"voucher {self._namespace}/{self._name} kept changing: gave up after "
            f"{MAX_ATTEMPTS} attempts to write its ledger"
        )

    async def _read(self) -> dict[str, Any]:
        try:
            body = await self._hub.get(PLURAL, self._namespace, self._name)
        except NotFoundError as error:
            self._cache.forget(self._namespace, self._name)
            raise VoucherGoneError(f"voucher {self._namespace}/{self._name}: {error}") from error
        self._cache.put(body)
        return body


def _decide(batch: list[_Item], ledger: Ledger) -> tuple[Ledger, list[tuple[_Item, Any]]]:
    """Apply the batch in arrival order; each item's outcome is kept for its waiter."""
    results: list[tuple[_Item, Any]] = []
    for item in batch:
        if item.request is not None:
            outcome = commit_batch(ledger, [item.request])
            ledger = outcome.ledger
            results.append((item, outcome.decisions[0]))
        elif item.change is not None:
            try:
                ledger = item.change(ledger)
                results.append((item, ledger))
            except Exception as error:  # the caller gets its own error
                results.append((item, error))
    return ledger, results


def _resolve(results: list[tuple[_Item, Any]]) -> None:
    for item, result in results:
        if item.future.done():
            continue
        if isinstance(result, Exception):
            item.future.set_exception(result)
        else:
            item.future.set_result(result)


def _status_with(
    voucher: VoucherQuota, status: dict[str, Any], ledger: Ledger, now: datetime
) -> tuple[dict[str, Any], list[Condition]]:
    """The voucher's status with ``ledger``, its balances and conditions; unchanged if equal."""
    # A shallow copy is enough: every key this sets is replaced whole, never changed in place,
    # and a deep copy of a ledger of thousands of entries on every commit was most of its cost.
    new_status = dict(status)
    new_status.update(ledger.status_summary())
    new_status["ledger"] = ledger.to_dict()
    new_status["observedGeneration"] = voucher.metadata.generation
    conditions = [Condition.model_validate(c) for c in status.get("conditions", [])]
    before = {c.type: (c.status, c.reason) for c in conditions}
    changed: list[Condition] = []
    for state in voucher_conditions(voucher, ledger, now):
        set_condition(
            conditions,
            state.type,
            state.status,
            state.reason,
            state.message,
            now=now,
            observed_generation=voucher.metadata.generation,
        )
        # A new balance in the message is not news; a new status or reason is (an Event).
        if before.get(state.type) != (state.status, state.reason):
            changed.append(next(c for c in conditions if c.type == state.type))
    new_status["conditions"] = [
        c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions
    ]
    return new_status, changed


__all__ = ["Committed", "ConditionStatus", "LedgerWriter", "VoucherGoneError"]
