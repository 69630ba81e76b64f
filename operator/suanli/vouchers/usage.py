"""What one finished attempt of a job costs, from facts the hub recorded, and its usage record.

A charge never depends on a member being reachable: when an attempt ends (its pods finished,
its member was lost, the job was deleted) the dispatcher writes the attempt's facts into the
ComputeJob's status (cluster, model, price, start and end). :func:`attempt_usages` turns those
facts into amounts, and :func:`usage_record` into the immutable UsageRecord that an auditor
reads and that the ledger charges (:meth:`~suanli.vouchers.ledger.Ledger.charge`).

The cap
    A job's hold is its worst case (all GPUs for all of ``maxRuntime`` at the highest price it
    could be placed at), and placement never picks a price above it. Several attempts (a member
    lost, a job withdrawn and placed again) can still meter more GPU time than one worst case.
    What is charged is capped so that a job's attempts together never take more than its hold:
    each attempt is charged ``min(metered, what is left of the hold)``, in attempt order, and
    its record keeps the metered amount beside the charged one, so the excess the platform
    carries is on record. Computed from the recorded facts alone, the amounts come out the same
    however often, and in whichever process, they are computed.

Names
    A record's name is derived from the job's uid and the attempt's number
    (:func:`record_name`), so creating it again after a crash finds the first one
    (AlreadyExists) instead of making a second: one record, and one charge, per attempt.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from suanli.api.common import ZERO, format_money, format_timestamp
from suanli.api.meta import API_VERSION
from suanli.api.names import JOB_UID_LABEL, VOUCHER_LABEL
from suanli.api.voucherprogram import COMPANY_LABEL, PROGRAM_LABEL
from suanli.api.voucherstatement import CENTER_LABEL, MONTH_LABEL
from suanli.vouchers.pricing import charge_for, gpu_seconds

_MAX_NAME: Final = 253
# A label value: at most 63 characters, alphanumeric at both ends, '-', '_' and '.' between.
_LABEL_VALUE: Final = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")


@dataclass(frozen=True, slots=True)
class AttemptFacts:
    """What the hub recorded of one attempt when it ended.

    Attributes:
        number: the attempt's number, 1-based, in the job's ``status.attempts`` order.
        cluster: the MemberCluster it ran on.
        gpu_model: the GPU model it was placed on.
        price_per_gpu_hour: the member's price for that model when it was placed.
        start: when its remote workload was created.
        end: when it ended, as recorded.
        reason: why it ended (Succeeded, Failed, MemberLost, Deleted, ...).
        provider: the member's provider, when recorded.
        region: the member's region, when recorded.
    """

    number: int
    cluster: str
    gpu_model: str
    price_per_gpu_hour: Decimal
    start: datetime
    end: datetime
    reason: str
    provider: str | None = None
    region: str | None = None


@dataclass(frozen=True, slots=True)
class AttemptUsage:
    """One attempt's GPU time and what it costs.

    Attributes:
        facts: the attempt as recorded.
        gpus: GPUs the job held.
        gpu_seconds: GPU time used (whole seconds x GPUs).
        metered: ``gpu_seconds`` at the attempt's price, rounded half up to the cent.
        amount: what is charged: ``metered``, capped at what is left of the hold.
    """

    facts: AttemptFacts
    gpus: int
    gpu_seconds: int
    metered: Decimal
    amount: Decimal

    @property
    def capped(self) -> bool:
        return self.amount < self.metered


def attempt_usages(
    attempts: Sequence[AttemptFacts], *, gpus: int, hold: Decimal
) -> list[AttemptUsage]:
    """Each ended attempt's usage, in attempt order, capped together at ``hold``.

    Args:
        attempts: the job's ended attempts, in order.
        gpus: the GPUs the job holds (replicas x gpusPerReplica).
        hold: the job's hold on its voucher.
    """
    usages: list[AttemptUsage] = []
    left = hold
    for facts in sorted(attempts, key=lambda attempt: attempt.number):
        used = gpu_seconds(facts.start, facts.end, gpus)
        metered = charge_for(used, facts.price_per_gpu_hour)
        amount = max(ZERO, min(metered, left))
        left -= amount
        usages.append(AttemptUsage(facts, gpus, used, metered, amount))
    return usages


def record_name(job_name: str, uid: str, attempt: int) -> str:
    """The usage record's name: the job's name, its uid and the attempt number.

    The uid makes it unique among every job that ever had that name; the name in front is for
    people. Bounded to a DNS subdomain (253), with a hash of the whole name when shortened.
    """
    name = f"{job_name}-{uid}-{attempt}".lower()
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: _MAX_NAME - 11].rstrip('-.')}-{digest}"


@dataclass(frozen=True, slots=True)
class JobFacts:
    """The job a record is for: who it is and which voucher pays."""

    namespace: str
    name: str
    uid: str
    voucher: str
    currency: str


USAGE_RECORD_KIND: Final = "UsageRecord"


def usage_record(
    job: JobFacts, usage: AttemptUsage, program: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The UsageRecord of one attempt, in the job's namespace, as the API server stores it;
    ``program`` is its split on a voucher programme (``spec.program``), if any.

    Labels let the recount and statements find a voucher's or a job's records with a label
    selector; the spec holds every fact an auditor needs without the job, which may be gone.
    """
    facts = usage.facts
    spec: dict[str, Any] = {
        "job": {"name": job.name, "uid": job.uid},
        "voucher": job.voucher,
        "attempt": facts.number,
        "cluster": facts.cluster,
        "gpuModel": facts.gpu_model,
        "gpus": usage.gpus,
        "startTime": format_timestamp(facts.start),
        "endTime": format_timestamp(facts.end),
        "endReason": facts.reason,
        "gpuSeconds": usage.gpu_seconds,
        "pricePerGPUHour": format_money(facts.price_per_gpu_hour),
        "currency": job.currency,
        "metered": format_money(usage.metered),
        "amount": format_money(usage.amount),
    }
    if facts.provider:
        spec["provider"] = facts.provider
    if facts.region:
        spec["region"] = facts.region
    labels = {
        JOB_UID_LABEL: job.uid,
        VOUCHER_LABEL: label_value(job.voucher),
        "app.kubernetes.io/managed-by": "suanli",
    }
    if program is not None:
        spec["program"] = program
        # So that a statement's records are one label selector away (kubectl get usagerecords
        # -A -l ...), and the operator lists one programme's month, not every record.
        labels |= {
            PROGRAM_LABEL: program["name"],
            MONTH_LABEL: month_of(facts.end),
            COMPANY_LABEL: label_value(program["company"]),
            CENTER_LABEL: facts.cluster,
        }
    return {
        "apiVersion": API_VERSION,
        "kind": USAGE_RECORD_KIND,
        "metadata": {
            "name": record_name(job.name, job.uid, facts.number),
            "namespace": job.namespace,
            "labels": labels,
        },
        "spec": spec,
    }


def month_of(moment: datetime) -> str:
    """The month, ``YYYY-MM`` in UTC, that a moment (a record's endTime) falls in."""
    return moment.astimezone(UTC).strftime("%Y-%m")


def label_value(value: str) -> str:
    """``value`` as a label value, the same way every time: as it is when it is one, else its
    label-safe characters, shortened to fit 63, with a hash of the whole so that two values
    never share one."""
    if _LABEL_VALUE.fullmatch(value):
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:10]
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", value)[:52].strip("-_.")
    return f"{safe}-{digest}" if safe else digest
