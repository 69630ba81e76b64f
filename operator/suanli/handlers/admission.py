"""Validating admission: a ComputeJob its voucher cannot pay for is refused at `kubectl apply`.

For a new ComputeJob the webhook validates the object, finds its voucher, prices the worst case,
checks every limit and commits the hold on the voucher's ledger before it answers; only then
may the API server store the job. The webhook configuration fails closed (failurePolicy Fail):
with the operator down, jobs are refused, never admitted unchecked. It is also persistent, so
Kopf leaves it in place when the operator stops. Dry-run requests are checked but reserve
nothing (the webhook declares sideEffects NoneOnDryRun).

A mutating step gives every new ComputeJob the operator's finalizer as it is stored (see
:func:`computejob_finalizer`). VoucherQuota and MemberCluster creates and updates get the
semantic checks their schemas cannot express. After admission, the parts of a ComputeJob's spec
that decide its cost or placement cannot change.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Final

import kopf

from suanli import metrics
from suanli.api.computejob import ComputeJob, validate_computejob
from suanli.api.kinds import validate_manifest
from suanli.api.membercluster import MemberCluster
from suanli.api.meta import API_VERSION, GROUP, VERSION
from suanli.api.reasons import VoucherConditionType
from suanli.api.validation import format_errors, parse
from suanli.handlers.computejob import FINALIZER
from suanli.handlers.references import reference_errors
from suanli.handlers.runtime import Runtime
from suanli.handlers.voucher_cache import ParsedVoucher, parse_voucher
from suanli.kube import NotFoundError
from suanli.vouchers.estimate import estimate_warning
from suanli.vouchers.limits import Refused, evaluate
from suanli.vouchers.pricing import offers_from_members

# The only spec field a tenant may change once the job is admitted: it reorders the queue and
# neither the cost nor the placement rules.
MUTABLE_SPEC_FIELDS: Final = frozenset({"priority"})
DENIED: Final = "AdmissionDenied"


def _deny(message: str, reason: str) -> kopf.AdmissionError:
    metrics.ADMISSION_DECISIONS.labels("refused", reason).inc()
    return kopf.AdmissionError(message, code=403)


def _object(body: kopf.Body, namespace: str | None) -> dict[str, Any]:
    """The admitted object as a plain dict, with the request's namespace filled in."""
    data = dict(body)
    metadata = dict(data.get("metadata") or {})
    if namespace and not metadata.get("namespace"):
        metadata["namespace"] = namespace
    data["metadata"] = metadata
    return data


def _check_schema_rules(data: dict[str, Any]) -> None:
    errors = validate_manifest(data)
    if errors:
        raise _deny(format_errors(errors), "Invalid")


def _valid_computejob(data: dict[str, Any]) -> ComputeJob:
    """The job as a model, parsed once, or a denial naming every field that is wrong."""
    if data.get("apiVersion") != API_VERSION or data.get("kind") != "ComputeJob":
        _check_schema_rules(data)  # says what is wrong with them
    job, errors = parse(ComputeJob, data)
    if job is not None:
        errors = validate_computejob(job)
    if errors or job is None:
        raise _deny(format_errors(errors), "Invalid")
    if not job.metadata.uid:
        # The API server fills the uid before validating admission; without it a hold could
        # not be told apart from that of another job of the same name.
        raise _deny("metadata.uid: the API server sent no uid to hold the job under", "Invalid")
    return job


@kopf.on.validate(
    GROUP,
    VERSION,
    "computejobs",
    id="computejob-admission",
    operations=["CREATE"],
    persistent=True,
    side_effects=True,
)
async def computejob_create(
    body: kopf.Body,
    dryrun: bool,
    memo: kopf.Memo,
    namespace: str | None,
    warnings: list[str],
    **_: Any,
) -> None:
    started = time.monotonic()
    runtime: Runtime = memo.runtime
    job = _valid_computejob(_object(body, namespace))
    if missing := await reference_errors(runtime.hub, job):  # training jobs (issue 19)
        raise _deny(format_errors(missing), "Invalid")
    found = await _find_voucher(runtime, job)
    voucher, ledger, voucher_body = found.voucher, found.ledger, found.body
    members = [MemberCluster.model_validate(m) for m in runtime.members.values()]
    now = datetime.now(UTC)
    decision = evaluate(job, voucher, offers_from_members(members), ledger, now)
    if dryrun:  # the cost before submit (issue 19); warnings go out with a denial too
        offers = offers_from_members(members)
        warnings.append(estimate_warning(job, voucher, offers, ledger, decision))
    if isinstance(decision, Refused):
        await _record_denial(runtime, voucher_body, job, decision.message)
        raise _deny(decision.message, decision.reason)
    if dryrun:
        metrics.ADMISSION_DECISIONS.labels("admitted-dry-run", "").inc()
        return
    writer = runtime.ledger_writer(voucher.metadata.namespace or "", voucher.metadata.name or "")
    committed = await writer.reserve(decision.request)
    if not committed.admitted:
        # Another request took what this one needed between our read and the commit.
        await _record_denial(runtime, voucher_body, job, committed.message)
        raise _deny(committed.message, committed.reason or "Refused")
    metrics.ADMISSION_DECISIONS.labels("admitted", "").inc()
    metrics.ADMISSION_SECONDS.observe(time.monotonic() - started)


@kopf.on.mutate(
    GROUP,
    VERSION,
    "computejobs",
    id="computejob-finalizer",
    operations=["CREATE"],
    persistent=True,
    ignore_failures=True,
)
async def computejob_finalizer(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    """A new ComputeJob is stored with the operator's finalizer already on it.

    Otherwise the operator adds it once the job is stored: one more write per job, through the
    webhooks again, and a round trip before the job can be dispatched. This step fails open
    (failurePolicy Ignore): it only saves that write, and the operator still adds the finalizer
    to any job stored without it. The validating webhook, which fails closed, runs after it.
    """
    finalizers = list((body.get("metadata") or {}).get("finalizers") or [])
    if FINALIZER not in finalizers:
        patch.metadata["finalizers"] = [*finalizers, FINALIZER]


async def _find_voucher(runtime: Runtime, job: ComputeJob) -> ParsedVoucher:
    namespace = job.metadata.namespace or ""
    reference = job.spec.voucher_ref
    if reference is not None:
        cached = runtime.vouchers.get(namespace, reference.name)
        if cached is not None:
            return cached
        try:
            # Created a moment ago and not yet seen by the watch, perhaps.
            body = await runtime.hub.get("voucherquotas", namespace, reference.name)
            runtime.vouchers.put(body)
            return parse_voucher(body)
        except NotFoundError:
            raise _deny(
                f"spec.voucherRef: VoucherQuota {reference.name!r} does not exist in namespace "
                f"{namespace!r}; a job can only use a voucher of its own namespace "
                f"(kubectl -n {namespace} get voucherquotas)",
                "VoucherNotFound",
            ) from None
    active = [
        parsed for parsed in runtime.vouchers.in_namespace(namespace) if _is_active(parsed.body)
    ]
    if len(active) == 1:
        return active[0]
    names = ", ".join(sorted(p.voucher.metadata.name or "" for p in active)) or "none"
    raise _deny(
        f"spec.voucherRef: not set, and namespace {namespace!r} has {len(active)} active "
        f"VoucherQuotas ({names}); name one in spec.voucherRef",
        "VoucherNotFound",
    )


def _is_active(voucher: dict[str, Any]) -> bool:
    conditions = (voucher.get("status") or {}).get("conditions") or []
    for condition in conditions:
        if condition.get("type") == VoucherConditionType.ACTIVE:
            return bool(condition.get("status") == "True")
    return True  # not yet reconciled: judged by its limits at admission


async def _record_denial(
    runtime: Runtime, voucher: dict[str, Any], job: ComputeJob, message: str
) -> None:
    # The job is never stored, so the Event goes on the voucher the tenant can read.
    await runtime.hub.event(
        voucher,
        reason=DENIED,
        message=f"ComputeJob {job.metadata.name} refused: {message}",
        warning=True,
    )


@kopf.on.validate(
    GROUP,
    VERSION,
    "computejobs",
    id="computejob-immutable",
    operations=["UPDATE"],
    persistent=True,
)
async def computejob_update(body: kopf.Body, namespace: str | None, **kwargs: Any) -> None:
    data = _object(body, namespace)
    old = kwargs.get("old") or {}
    previous = dict(old.get("spec") or {})
    current = dict(data.get("spec") or {})
    if previous and previous == current:
        # Metadata only: the operator's own finalizer and annotation patches, a tenant's labels.
        # The spec was checked when the job was admitted; the API server checks metadata.
        return
    _check_schema_rules(data)
    changed = sorted(
        key
        for key in set(previous) | set(current)
        if key not in MUTABLE_SPEC_FIELDS and previous.get(key) != current.get(key)
    )
    if changed and previous:
        fields = ", ".join(f"spec.{key}" for key in changed)
        raise _deny(
            f"{fields}: cannot change after admission (the job was priced and placed with it); "
            "only spec.priority may change. Delete the job and create a new one instead.",
            "Immutable",
        )


@kopf.on.validate(
    GROUP,
    VERSION,
    "voucherquotas",
    id="voucherquota-validation",
    operations=["CREATE", "UPDATE"],
    persistent=True,
)
async def voucherquota_validate(body: kopf.Body, namespace: str | None, **_: Any) -> None:
    _check_schema_rules(_object(body, namespace))


@kopf.on.validate(
    GROUP,
    VERSION,
    "memberclusters",
    id="membercluster-validation",
    operations=["CREATE", "UPDATE"],
    persistent=True,
)
async def membercluster_validate(body: kopf.Body, **_: Any) -> None:
    _check_schema_rules(_object(body, None))
