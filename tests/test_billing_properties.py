"""The whole life of a charge, with crashes, duplicates and re-created names, as a state machine.

Hypothesis plays a federation against one voucher: tenants create jobs (sometimes under a name a
live job holds, so the create fails after admission reserved), attempts end and are billed
(usage record first, then the ledger, with a crash possible between the two), jobs finish and
are deleted, every billing event may be delivered again, the operator crashes (all that is not
in the voucher's status is lost) and the recount runs. The billing code under test is the real
one: :mod:`suanli.vouchers.usage`, :mod:`suanli.vouchers.ledger`, :mod:`suanli.vouchers.recount`.

After every step: reserved + spent never exceeds amount + credit line, no attempt is charged
twice (a uid's charges are exactly its charged attempts' records), and spent never exceeds
the sum of the usage records. After a recount: spent equals the sum of the usage records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from suanli.api.common import ZERO
from suanli.api.computejob import ComputeJob
from suanli.vouchers.ledger import (
    Ledger,
    NotReservedError,
    ReservationRefusedError,
    ReservationRequest,
    VoucherTerms,
)
from suanli.vouchers.recount import RecordedCharge, recount
from suanli.vouchers.usage import AttemptFacts, attempt_usages, record_name

T0 = datetime(2026, 3, 1, tzinfo=UTC)
GRACE = timedelta(minutes=5)
PRICE = Decimal("36.00")
NAMES = ("train", "eval", "sweep")
GPUS = 2


@dataclass
class Job:
    uid: str
    name: str
    hold: Decimal
    attempts: list[AttemptFacts] = field(default_factory=list)
    ended: bool = False  # the job's status records how it ended


class Federation(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger(VoucherTerms("team-a/v", "CNY", Decimal("300.00"), Decimal("50.00")))
        self.jobs: dict[str, Job] = {}  # uid -> the job, while it is stored
        self.records: dict[str, RecordedCharge] = {}  # name -> the stored usage record
        self.now = T0
        self.serial = 0
        self.deliveries: list[tuple[str, tuple[RecordedCharge, ...], bool]] = []
        self.billed: tuple[RecordedCharge, ...] = ()

    # --- the world --------------------------------------------------------------------------

    def _status(self, job: Job) -> dict[str, str]:
        if job.ended:
            charged = sum((r.amount for r in self.records.values() if r.uid == job.uid), ZERO)
            return {"voucher": "v", "reservation": "0.00", "chargedCost": f"{charged:.2f}"}
        return {"voucher": "v", "reservation": f"{job.hold:.2f}", "estimatedCost": f"{job.hold}"}

    def _stored_jobs(self) -> list[ComputeJob]:
        return [
            ComputeJob.model_validate(
                {
                    "metadata": {
                        "name": job.name,
                        "namespace": "team-a",
                        "uid": job.uid,
                        "creationTimestamp": T0.isoformat(),
                    },
                    "spec": {
                        "gpusPerReplica": GPUS,
                        "maxRuntime": "1h",
                        "template": {"spec": {"containers": [{"name": "m", "image": "x"}]}},
                    },
                    "status": {"totalGPUs": GPUS, **self._status(job)},
                }
            )
            for job in self.jobs.values()
        ]

    def _bill(self, job: Job, *, close: bool, crash: bool) -> None:
        """Usage records first (durable, idempotent by name), then the ledger."""
        charged: list[RecordedCharge] = []
        for usage in attempt_usages(job.attempts, gpus=GPUS, hold=job.hold):
            name = record_name(job.name, job.uid, usage.facts.number)
            stored = self.records.setdefault(
                name,
                RecordedCharge(job.uid, usage.facts.number, usage.amount, usage.metered, "v", name),
            )
            charged.append(stored)
        self.billed = tuple(charged)
        if not crash:
            self._apply(job.uid, charged, close)

    def _apply(
        self, uid: str, charged: list[RecordedCharge] | tuple[RecordedCharge, ...], close: bool
    ) -> None:
        ledger = self.ledger
        for record in charged:
            try:
                ledger = ledger.charge(uid, record.attempt, record.amount, metered=record.metered)
            except NotReservedError:
                continue
        self.ledger = ledger.close(uid) if close else ledger

    # --- rules -------------------------------------------------------------------------------

    @rule(name=st.sampled_from(NAMES), hours=st.integers(1, 3))
    def create(self, name: str, hours: int) -> None:
        self.serial += 1
        uid = f"uid-{self.serial}"
        hold = PRICE * GPUS * hours
        request = ReservationRequest(uid, f"team-a/{name}", hold, GPUS, self.now)
        try:
            self.ledger = self.ledger.reserve(request)
        except ReservationRefusedError:
            return
        if any(job.name == name for job in self.jobs.values()):
            return  # AlreadyExists: admitted and reserved, never stored
        self.jobs[uid] = Job(uid, name, hold)

    @precondition(lambda self: any(not j.ended for j in self.jobs.values()))
    @rule(data=st.data(), minutes=st.integers(0, 200), crash=st.booleans())
    def attempt_ends(self, data: st.DataObject, minutes: int, crash: bool) -> None:
        job = data.draw(st.sampled_from(sorted(j.uid for j in self.jobs.values() if not j.ended)))
        running = self.jobs[job]
        if len(running.attempts) >= 3:
            return
        start = self.now
        self.now += timedelta(minutes=minutes)
        running.attempts.append(
            AttemptFacts(
                len(running.attempts) + 1, "member-a", "H100", PRICE, start, self.now, "MemberLost"
            )
        )
        self._bill(running, close=False, crash=crash)

    @precondition(lambda self: any(not j.ended for j in self.jobs.values()))
    @rule(data=st.data(), crash_status=st.booleans(), crash_ledger=st.booleans())
    def finish(self, data: st.DataObject, crash_status: bool, crash_ledger: bool) -> None:
        # The follow-up's order: records, then the job's status says it ended (after that no
        # attempt can start), then the ledger charges and closes. A crash before the status
        # write leaves the job running as far as anyone knows; one after it leaves the close
        # to a retry or the recount.
        uid = data.draw(st.sampled_from(sorted(j.uid for j in self.jobs.values() if not j.ended)))
        job = self.jobs[uid]
        self._bill(job, close=True, crash=True)
        if crash_status:
            return
        job.ended = True
        if not crash_ledger:
            self._apply(uid, self.billed, close=True)

    @precondition(lambda self: bool(self.jobs))
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        # The finalizer: bill what ran, close and fold; only then is the job gone.
        uid = data.draw(st.sampled_from(sorted(self.jobs)))
        job = self.jobs.pop(uid)
        self._bill(job, close=True, crash=False)
        self.ledger = self.ledger.fold(uid)

    @precondition(lambda self: bool(self.deliveries))
    @rule(data=st.data())
    def deliver_again(self, data: st.DataObject) -> None:
        uid, charged, close = data.draw(st.sampled_from(self.deliveries))
        self._apply(uid, charged, close)

    @rule()
    def crash(self) -> None:
        # Only the voucher's status survives a restart.
        self.ledger = Ledger.from_dict(self.ledger.terms, self.ledger.to_dict())

    @rule(later=st.booleans())
    def run_recount(self, later: bool) -> None:
        if later:
            self.now += GRACE
        result = recount(
            self.ledger,
            self._stored_jobs(),
            list(self.records.values()),
            now=self.now,
            grace=GRACE,
        )
        self.ledger = result.ledger
        if later:
            # Every hold is past its grace: everything recorded has been charged.
            assert self.ledger.spent == self._recorded()

    # --- invariants --------------------------------------------------------------------------

    def _recorded(self) -> Decimal:
        return sum((r.amount for r in self.records.values()), ZERO)

    @invariant()
    def never_over_the_ceiling(self) -> None:
        assert self.ledger.committed <= self.ledger.terms.ceiling

    @invariant()
    def never_charged_twice(self) -> None:
        assert self.ledger.spent <= self._recorded()
        by_attempt = {(r.uid, r.attempt): r.amount for r in self.records.values()}
        for uid, entry in self.ledger.entries.items():
            assert entry.charged == sum(
                (by_attempt[(uid, attempt)] for attempt in entry.attempts), ZERO
            )
            assert entry.charged <= entry.hold

    def teardown(self) -> None:
        result = recount(
            self.ledger,
            self._stored_jobs(),
            list(self.records.values()),
            now=self.now + GRACE,
            grace=GRACE,
        )
        # Holds of stored jobs still running stay; everything recorded is in spent.
        assert result.ledger.spent == self._recorded()


Federation.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_the_life_of_a_charge = Federation.TestCase
