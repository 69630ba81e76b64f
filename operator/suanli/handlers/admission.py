"""Admission: a ComputeJob its voucher cannot pay for is refused at `kubectl apply`.

For a new ComputeJob, the mutating step quotes the job's hold (voucher, worst case, GPUs) into
its annotation (:mod:`suanli.vouchers.holds`) and gives it the operator's finalizer. The
validating step then validates the object, finds its voucher, prices the worst case again,
checks every limit against the voucher's ledger in memory (:mod:`suanli.vouchers.book`) and,
when the job is covered and carries exactly that quote, takes the hold there before it
answers: no API write on the way. The annotation is stored with the job in the API server's
own write, so a stored job proves its hold; the voucher's status follows behind.

Only the admission leader admits (see :mod:`suanli.leadership`); a replica that does not lead,
or is still taking over, refuses with a message to retry. The webhook configuration fails
closed (failurePolicy Fail): with the operator down, jobs are refused, never admitted unchecked.
It is also persistent, so Kopf leaves it in place when the operator stops. Dry-run requests
are checked but hold nothing (the webhook declares sideEffects NoneOnDryRun).

VoucherQuota, MemberCluster and VoucherProgram creates and updates get the semantic checks
their schemas cannot express. After admission, the parts of a ComputeJob's spec that decide
its cost or placement, and its hold annotation, cannot change.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import kopf

from suanli import metrics
from suanli.admission.decide import AdmissionRequest, AdmissionState, Denied, decide
from suanli.admission.programme import program_quote
from suanli.admission.references import ReferenceReadTimeoutError, reference_errors
from suanli.api.computejob import ComputeJob, validate_computejob
from suanli.api.kinds import (
    COMPUTEJOBS,
    MEMBERCLUSTERS,
    VOUCHERPROGRAMS,
    VOUCHERQUOTAS,
    validate_manifest,
)
from suanli.api.meta import API_VERSION, GROUP, VERSION
from suanli.api.names import FINALIZER, HOLD_ANNOTATION
from suanli.api.reasons import VoucherConditionType
from suanli.api.termination import grace_warnings
from suanli.api.validation import format_errors, parse
from suanli.handlers.runtime import Runtime
from suanli.handlers.voucher_cache import ParsedVoucher, parse_voucher
from suanli.kube import NotFoundError
from suanli.vouchers.holds import QuotedHold
from suanli.vouchers.ledger import VoucherGoneError
from suanli.vouchers.limits import Allowed, quote

# The only spec field a tenant may change once the job is admitted: it reorders the queue and
# neither the cost nor the placement rules.
MUTABLE_SPEC_FIELDS: Final = frozenset({"priority"})
DENIED: Final = "AdmissionDenied"


def _deny(message: str, reason: str, code: int = 403) -> kopf.AdmissionError:
    metrics.ADMISSION_DECISIONS.labels("refused", reason).inc()
    return kopf.AdmissionError(message, code=code)


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
    COMPUTEJOBS,
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
    if not runtime.gate.is_open:
        raise _deny(runtime.gate.refusal, "NotLeader", code=503)
    job = _valid_computejob(_object(body, namespace))
    await _check_references(runtime, job)
    warnings.extend(grace_warnings(job.spec.template, runtime.options.termination_grace_seconds))
    found = await _find_voucher(runtime, job)
    if isinstance(found, str):
        raise _deny(found, "VoucherNotFound")
    voucher, voucher_body = found.voucher, found.body
    key = (voucher.metadata.namespace or "", voucher.metadata.name or "")
    try:
        await runtime.ledger_writer(*key).load()
    except VoucherGoneError:
        raise _deny(_missing_voucher(*key), "VoucherNotFound") from None
    now = datetime.now(UTC)
    request = AdmissionRequest(
        job=job,
        voucher=voucher,
        offers=runtime.price_offers(),
        members=runtime.member_models(),
        now=now,
        deadline=now + timedelta(seconds=runtime.options.webhook_timeout),
        dry_run=dryrun,
    )
    state = AdmissionState(runtime.gate, runtime.book, runtime.programs, runtime.program_specs)
    decision = decide(request, state)
    warnings.extend(decision.warnings)
    if isinstance(decision, Denied):
        if decision.on_voucher:
            await _record_denial(runtime, voucher_body, job, decision.message)
        raise _deny(decision.message, decision.reason, code=decision.code)
    metrics.ADMISSION_DECISIONS.labels(
        "admitted-dry-run" if decision.dry_run else "admitted", ""
    ).inc()
    if not decision.dry_run:
        metrics.ADMISSION_SECONDS.observe(time.monotonic() - started)


async def _check_references(runtime: Runtime, job: ComputeJob) -> None:
    """Deny a job whose referenced Secrets and ConfigMaps are missing, not copyable, or would
    set a device-selecting variable; read within a third of the webhook's timeout."""
    try:
        refused = await reference_errors(
            runtime.hub, job, deadline_seconds=runtime.options.webhook_timeout / 3
        )
    except ReferenceReadTimeoutError as error:
        raise _deny(str(error), "ReferencesUnread", code=503) from None
    if refused:
        raise _deny(format_errors(refused), "Invalid")


@kopf.on.mutate(
    GROUP,
    VERSION,
    COMPUTEJOBS,
    id="computejob-defaults",
    operations=["CREATE"],
    persistent=True,
    ignore_failures=True,
)
async def computejob_defaults(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, namespace: str | None, **_: Any
) -> None:
    """A new ComputeJob is stored with the operator's finalizer and its quoted hold.

    The finalizer: otherwise the operator adds it once the job is stored, one more write per
    job. The hold (see :mod:`suanli.vouchers.holds`): the validating step admits the job only
    if it carries exactly the hold that step quotes; whatever a tenant wrote there is
    replaced, and a job that cannot be quoted gets none (the validating step then says why).
    This step fails open (failurePolicy Ignore): a job that passes it unchanged lacks the
    annotation, and the validating webhook, which fails closed, refuses it.
    """
    metadata = body.get("metadata") or {}
    finalizers = list(metadata.get("finalizers") or [])
    if FINALIZER not in finalizers:
        patch.metadata["finalizers"] = [*finalizers, FINALIZER]
    hold = await _quote(memo.runtime, _object(body, namespace))
    current = (metadata.get("annotations") or {}).get(HOLD_ANNOTATION)
    wanted = hold.annotation() if hold is not None else None
    if current != wanted:
        patch.metadata.setdefault("annotations", {})[HOLD_ANNOTATION] = wanted


async def _quote(runtime: Runtime, data: dict[str, Any]) -> QuotedHold | None:
    """The hold the job would take, or None when it cannot be quoted (refused later)."""
    job, errors = parse(ComputeJob, data)
    if job is None or errors:
        return None
    if not job.metadata.uid:
        # The API server gives the job its uid after the mutating webhooks; the quote does
        # not depend on it.
        job.metadata.uid = "quote"
    found = await _find_voucher(runtime, job)
    if isinstance(found, str):
        return None
    quoted = quote(job, found.voucher, runtime.price_offers(), datetime.now(UTC))
    if not isinstance(quoted, Allowed):
        return None
    program = program_quote(
        runtime.program_specs, found.voucher, quoted.worst_case, runtime.member_models()
    )
    return QuotedHold(
        found.voucher.metadata.name or "", quoted.request.amount, quoted.request.gpus, program
    )


async def _find_voucher(runtime: Runtime, job: ComputeJob) -> ParsedVoucher | str:
    """The voucher the job is paid from, or why there is none (a message naming the field)."""
    namespace = job.metadata.namespace or ""
    reference = job.spec.voucher_ref
    if reference is not None:
        cached = runtime.vouchers.get(namespace, reference.name)
        if cached is not None:
            return cached
        try:
            # Created a moment ago and not yet seen by the watch, perhaps.
            body = await runtime.hub.get(VOUCHERQUOTAS, namespace, reference.name)
        except NotFoundError:
            return _missing_voucher(namespace, reference.name)
        runtime.vouchers.put(body)
        return parse_voucher(body)
    active = [
        parsed for parsed in runtime.vouchers.in_namespace(namespace) if _is_active(parsed.body)
    ]
    if len(active) == 1:
        return active[0]
    names = ", ".join(sorted(p.voucher.metadata.name or "" for p in active)) or "none"
    return (
        f"spec.voucherRef: not set, and namespace {namespace!r} has {len(active)} active "
        f"VoucherQuotas ({names}); name one in spec.voucherRef"
    )


def _missing_voucher(namespace: str, name: str) -> str:
    return (
        f"spec.voucherRef: VoucherQuota {name!r} does not exist in namespace {namespace!r}; a "
        f"job can only use a voucher of its own namespace (kubectl -n {namespace} get "
        "voucherquotas)"
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
    COMPUTEJOBS,
    id="computejob-immutable",
    operations=["UPDATE"],
    persistent=True,
)
async def computejob_update(body: kopf.Body, namespace: str | None, **kwargs: Any) -> None:
    data = _object(body, namespace)
    old = kwargs.get("old") or {}
    held = ((old.get("metadata") or {}).get("annotations") or {}).get(HOLD_ANNOTATION)
    holds = ((data.get("metadata") or {}).get("annotations") or {}).get(HOLD_ANNOTATION)
    if held != holds:
        raise _deny(
            f"metadata.annotations[{HOLD_ANNOTATION}]: records what the job was admitted for "
            "and cannot change or be removed",
            "Immutable",
        )
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
    VOUCHERQUOTAS,
    id="voucherquota-validation",
    operations=["CREATE", "UPDATE"],
    persistent=True,
)
async def voucherquota_validate(body: kopf.Body, namespace: str | None, **_: Any) -> None:
    _check_schema_rules(_object(body, namespace))


@kopf.on.validate(
    GROUP,
    VERSION,
    MEMBERCLUSTERS,
    id="membercluster-validation",
    operations=["CREATE", "UPDATE"],
    persistent=True,
)
async def membercluster_validate(body: kopf.Body, **_: Any) -> None:
    _check_schema_rules(_object(body, None))


@kopf.on.validate(
    GROUP,
    VERSION,
    VOUCHERPROGRAMS,
    id="voucherprogram-validation",
    operations=["CREATE", "UPDATE"],
    persistent=True,
)
async def voucherprogram_validate(body: kopf.Body, **_: Any) -> None:
    """A programme's period must end after it starts, its pool be positive, its rules' names
    unique and their caps within the pool: refused at apply, naming the field."""
    _check_schema_rules(_object(body, None))
