"""How jobs and vouchers are named inside the ledger: ``namespace/name``.

A job is keyed by namespace and name rather than uid, on purpose. The validating webhook
reserves before the object is stored; when that create then fails and the tenant retries it,
the retry carries a new uid but the same name, so a name key makes the second reservation the
same reservation (idempotent) instead of a second hold that only the periodic recount would
release. Names are unique among live objects, which is all the ledger needs: the entry of a
deleted job is released or charged by its finalizer before the name can be reused.
"""

from __future__ import annotations

from suanli.api.computejob import ComputeJob
from suanli.api.voucherquota import VoucherQuota


def object_key(namespace: str | None, name: str | None) -> str:
    """``namespace/name``; an empty namespace or name is an error the caller must not make.

    Raises:
        ValueError: the namespace or the name is missing.
    """
    if not namespace or not name:
        raise ValueError(f"an object key needs a namespace and a name, got {namespace!r}/{name!r}")
    return f"{namespace}/{name}"


def job_key(job: ComputeJob) -> str:
    """The ledger key of a ComputeJob: ``namespace/name``."""
    return object_key(job.metadata.namespace, job.metadata.name)


def voucher_key(voucher: VoucherQuota) -> str:
    """The key a voucher is named by in messages and ledgers: ``namespace/name``."""
    return object_key(voucher.metadata.namespace, voucher.metadata.name)
