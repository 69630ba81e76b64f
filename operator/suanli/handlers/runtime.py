"""State shared by the operator's handlers for the life of the process (Kopf's memo)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

from suanli import metrics
from suanli.admission.gate import AdmissionGate
from suanli.api.common import DEFAULT_CURRENCY
from suanli.api.gpu_models import canonical_model
from suanli.api.membercluster import MemberCluster
from suanli.api.voucherprogram import VoucherProgram
from suanli.api.voucherquota import VoucherQuota
from suanli.controller.charging import RecordBilling
from suanli.controller.dispatcher import Dispatcher
from suanli.handlers.ledger_writer import Committed, LedgerWriter
from suanli.handlers.program_charges import ProgramCharges
from suanli.handlers.voucher_cache import VoucherCache
from suanli.kube import Hub
from suanli.leadership import LeaseElector, Takeover
from suanli.options import OperatorOptions
from suanli.vouchers.book import VoucherBook
from suanli.vouchers.pricing import PriceOffer, offers_from_members
from suanli.vouchers.programs import ProgramBook
from suanli.vouchers.statement_objects import DirtyMonths

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    """One per operator process; handlers reach it as ``memo.runtime``."""

    options: OperatorOptions
    hub: Hub
    # MemberCluster objects by name, as last seen by the watch (prices for admission).
    members: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Every VoucherQuota, as last seen by the watch or written by us.
    vouchers: VoucherCache = field(default_factory=VoucherCache)
    # Every voucher's ledger as this process keeps it while it leads (admission reads it).
    book: VoucherBook = field(default_factory=VoucherBook)
    writers: dict[tuple[str, str], LedgerWriter] = field(default_factory=dict)
    # Voucher programmes: their specs, their counters (kept beside the book, by the leader),
    # and the namespaces as last seen (company labels), to issue vouchers.
    program_specs: dict[str, VoucherProgram] = field(default_factory=dict)
    programs: ProgramBook = field(default_factory=ProgramBook)
    namespaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The programme months whose statements must be regenerated (records booked since).
    statements: DirtyMonths = field(default_factory=DirtyMonths)
    # Whether this process admits now; the Lease it leads by, and how it took it.
    gate: AdmissionGate = field(default_factory=AdmissionGate)
    elector: LeaseElector | None = None
    takeover: Takeover | None = None
    # The members and their price offers, parsed once per change of any member's spec.
    _offers: tuple[tuple[tuple[Any, ...], ...], list[MemberCluster], list[PriceOffer]] = (
        (),
        [],
        [],
    )
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    dispatcher: Dispatcher = field(init=False)

    def __post_init__(self) -> None:
        # A job's voucher hold closed or dropped: its programme hold goes with it.
        self.book.on_release = self.programs.release
        self.dispatcher = Dispatcher(
            options=self.options,
            hub=self.hub,
            billing=RecordBilling(
                self.hub,
                self.ledger_writer,
                self._currency,
                ProgramCharges(
                    self.vouchers, self.program_specs, self.member, self.programs, self.statements
                ),
            ),
            vouchers=self._voucher,
            spawn=self.spawn,
        )

    def _currency(self, namespace: str, name: str) -> str:
        voucher = self._voucher(namespace, name)
        return voucher.spec.currency if voucher is not None else DEFAULT_CURRENCY

    def _voucher(self, namespace: str, name: str) -> VoucherQuota | None:
        parsed = self.vouchers.get(namespace, name)
        return parsed.voucher if parsed is not None else None

    def member_models(self) -> list[MemberCluster]:
        """Every MemberCluster as a model, parsed once per change of any member's spec."""
        return self._parsed_members()[0]

    def price_offers(self) -> list[PriceOffer]:
        """Every member's price offers (admission prices each job's worst case with them),
        each with the devices its model has on the member's nodes, so a gang that could
        never fit there is not priced (nor admitted) for it."""
        installed = self.dispatcher.installed
        return [
            dataclasses.replace(
                offer, installed=installed(offer.cluster, canonical_model(offer.gpu_model))
            )
            for offer in self._parsed_members()[1]
        ]

    def member(self, name: str) -> MemberCluster | None:
        """One MemberCluster as a model, from the same parse as :meth:`member_models`."""
        return next((m for m in self.member_models() if m.metadata.name == name), None)

    def _parsed_members(self) -> tuple[list[MemberCluster], list[PriceOffer]]:
        # A new spec (prices, owner) or new labels (a programme's memberSelector) re-parses.
        versions = tuple(
            sorted(
                (
                    name,
                    (body.get("metadata") or {}).get("generation"),
                    tuple(sorted(((body.get("metadata") or {}).get("labels") or {}).items())),
                )
                for name, body in self.members.items()
            )
        )
        if versions != self._offers[0] or not versions:
            members = [MemberCluster.model_validate(m) for m in self.members.values()]
            self._offers = (versions, members, offers_from_members(members))
        return self._offers[1], self._offers[2]

    def ledger_writer(self, namespace: str, name: str) -> LedgerWriter:
        key = (namespace, name)
        writer = self.writers.get(key)
        if writer is None:
            writer = LedgerWriter(
                self.hub, self.vouchers, self.book, namespace, name, on_commit=self._committed
            )
            self.writers[key] = writer
        return writer

    def _committed(self, committed: Committed) -> None:
        voucher, ledger = committed.voucher, committed.ledger
        labels = {
            "namespace": voucher.metadata.namespace or "",
            "voucher": voucher.metadata.name or "",
            "currency": voucher.spec.currency,
        }
        metrics.VOUCHER_RESERVED.labels(**labels).set(float(ledger.reserved))
        metrics.VOUCHER_SPENT.labels(**labels).set(float(ledger.spent))
        metrics.VOUCHER_REMAINING.labels(**labels).set(float(ledger.remaining))
        metrics.LEDGER_WRITES.labels(labels["namespace"], labels["voucher"]).inc()
        for condition in committed.changed_conditions:
            self.spawn(
                self.hub.event(
                    voucher.model_dump(mode="json", by_alias=True),
                    reason=condition.reason,
                    message=f"{condition.type}={condition.status}: {condition.message}",
                    # Inactive, expired or exhausted is news the tenant must act on.
                    warning=(condition.type == "Active") != (condition.status == "True"),
                )
            )

    def spawn(self, coroutine: Any) -> None:
        """Run a fire-and-forget coroutine (an Event), keeping a reference until it ends."""

        def _finished(task: asyncio.Task[Any]) -> None:
            self.background.discard(task)
            if not task.cancelled() and task.exception() is not None:
                # Nobody awaits these tasks: a failure would otherwise vanish without a trace.
                logger.error("background task failed", exc_info=task.exception())

        task = asyncio.get_running_loop().create_task(coroutine)
        self.background.add(task)
        task.add_done_callback(_finished)
