"""Every voucher's status, written behind the ledger the admission leader keeps in memory.

The ledgers live in the :class:`~suanli.vouchers.book.VoucherBook`; admission changes them with
no API write on its path, and charging, releases and the recount change them through
:meth:`LedgerWriter.change`. The voucher's status (balances, conditions, the ledger less its
pending holds) is a copy, written by one task per voucher: changes that arrive while a write
is in flight are coalesced into the next one, so a burst of admissions costs a handful of
writes, not one each. Kubernetes' ResourceQuota admission commits every admitted request before
it answers; suanli answers first because the job carries its own hold (see
:mod:`suanli.vouchers.holds`) and only one process, the leader, keeps the ledgers.

Each write is guarded by the voucher's resourceVersion: a conflict (an admin edited the spec)
re-reads the voucher and writes the book's ledger under the new terms. A write that fails
otherwise is retried with back-off, logged and counted; callers of :meth:`LedgerWriter.change`
wait until their change is written, as the charging path needs.
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
from suanli.api.kinds import VOUCHERQUOTAS
from suanli.api.voucherquota import VoucherQuota
from suanli.handlers.voucher_cache import ParsedVoucher, VoucherCache, parse_voucher
from suanli.kits.retry import delay_after
from suanli.kube import ConflictError, Hub, NotFoundError
from suanli.vouchers.book import VoucherBook
from suanli.vouchers.conditions import voucher_conditions
from suanli.vouchers.ledger import Ledger, VoucherGoneError, VoucherTerms

logger = logging.getLogger(__name__)

MAX_CONFLICTS: Final = 20

LedgerChange = Callable[[Ledger], Ledger]


@dataclass(frozen=True)
class Committed:
    """What a write recorded, for Events and metrics."""

    voucher: VoucherQuota
    ledger: Ledger
    changed_conditions: list[Condition]


@dataclass
class _Waiter:
    version: int
    future: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class LedgerWriter:
    """Writes one voucher's status behind its ledger in the book (see the module docstring)."""

    def __init__(
        self,
        hub: Hub,
        cache: VoucherCache,
        book: VoucherBook,
        namespace: str,
        name: str,
        *,
        on_commit: Callable[[Committed], None] | None = None,
    ) -> None:
        self._hub = hub
        self._cache = cache
        self._book = book
        self._namespace = namespace
        self._name = name
        self._key = (namespace, name)
        self._on_commit = on_commit
        self._wanted = 0  # changes asked to be written
        self._written = 0  # of those, written
        self._waiters: list[_Waiter] = []
        self._task: asyncio.Task[None] | None = None

    async def load(self) -> ParsedVoucher:
        """The voucher, with its ledger loaded into the book (read from the API the first
        time: the status as last written is where a leader starts from).

        Raises:
            VoucherGoneError: the voucher does not exist.
        """
        parsed = self._cache.get(self._namespace, self._name)
        if parsed is None or not self._book.knows(self._key):
            parsed = parse_voucher(await self._read())
            self._book.load(self._key, parsed.ledger)
        return parsed

    async def change(self, change: LedgerChange) -> Ledger:
        """Apply ``change`` to the voucher's ledger now, and return once it is written.

        An error ``change`` raises is the caller's, and leaves the ledger unchanged.

        Raises:
            VoucherGoneError: the voucher was deleted.
        """
        await self.load()
        ledger = self._book.change(self._key, change)
        await self.written(self.mark())
        return ledger

    async def refresh(self) -> Ledger:
        """Rewrite the status summary and conditions (no ledger change); e.g. on expiry."""
        return await self.change(lambda ledger: ledger)

    def mark(self) -> int:
        """Ask for the voucher's status to be written (behind, coalesced); returns the version
        to pass to :meth:`written` to wait for it."""
        self._wanted += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name=f"voucher status {self._name}")
        return self._wanted

    async def written(self, version: int) -> None:
        """Return once the write that includes ``version`` has landed.

        Raises:
            VoucherGoneError: the voucher was deleted first.
        """
        if self._written >= version:
            return
        waiter = _Waiter(version)
        self._waiters.append(waiter)
        await waiter.future

    @property
    def pending_writes(self) -> bool:
        """Whether a change waits to be written."""
        return self._written < self._wanted

    async def _drain(self) -> None:
        failures = 0
        while self._written < self._wanted:
            target = self._wanted
            try:
                await self._write()
            except VoucherGoneError as error:
                self._book.forget(self._key)
                self._written = self._wanted
                self._settle(error)
                return
            except Exception as error:
                metrics.BACKGROUND_TASK_ERRORS.labels("voucher-status").inc()
                metrics.LEDGER_WRITE_ERRORS.labels(self._namespace, self._name).inc()
                failures += 1
                delay = delay_after(failures)
                logger.warning(
                    "writing the status of voucher %s/%s failed (%s); again in %.1fs",
                    self._namespace,
                    self._name,
                    error,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            failures = 0
            self._written = target
            self._settle(None)

    def _settle(self, error: Exception | None) -> None:
        waiting = []
        for waiter in self._waiters:
            if waiter.future.done():
                continue
            if error is not None:
                waiter.future.set_exception(error)
            elif waiter.version <= self._written:
                waiter.future.set_result(None)
            else:
                waiting.append(waiter)
        self._waiters = waiting

    async def _write(self) -> None:
        # The first attempt trusts the cached voucher (fed by the watch and by our own writes);
        # if it is stale the write conflicts, and the retry reads it fresh.
        parsed = await self.load()
        for attempt in range(1, MAX_CONFLICTS + 1):
            body, voucher = parsed.body, parsed.voucher
            self._book.set_terms(self._key, VoucherTerms.from_voucher(voucher))
            ledger = self._book.durable(self._key)
            if ledger is None:  # forgotten meanwhile (deleted)
                raise VoucherGoneError(f"voucher {self._namespace}/{self._name} is gone")
            status = body.get("status") or {}
            new_status, changed = _status_with(voucher, status, ledger, datetime.now(UTC))
            if new_status == status:
                return
            try:
                written = await self._hub.replace_status(
                    VOUCHERQUOTAS, {**body, "status": new_status}
                )
            except ConflictError:
                logger.debug("voucher %s changed under us (attempt %d)", self._name, attempt)
                parsed = parse_voucher(await self._read())
                continue
            self._cache.put(written)
            if self._on_commit is not None:
                self._on_commit(Committed(voucher, ledger, changed))
            return
        raise RuntimeError(
            f"voucher {self._namespace}/{self._name} kept changing: gave up after "
            f"{MAX_CONFLICTS} attempts to write its status"
        )

    async def _read(self) -> dict[str, Any]:
        try:
            body = await self._hub.get(VOUCHERQUOTAS, self._namespace, self._name)
        except NotFoundError as error:
            self._cache.forget(self._namespace, self._name)
            raise VoucherGoneError(f"voucher {self._namespace}/{self._name}: {error}") from error
        self._cache.put(body)
        return body


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
