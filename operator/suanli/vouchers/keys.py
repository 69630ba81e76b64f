"""How jobs and vouchers are named for people: ``namespace/name``.

The ledger keys a job's entry by its uid (see :mod:`suanli.vouchers.ledger`): a job re-created
under the same name is another job, and a create refused as AlreadyExists must never touch the
entry of the job that holds the name. ``namespace/name`` is what messages, usage records and
the ledger's ``job`` field show, and what a format-1 ledger keyed entries by.
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
