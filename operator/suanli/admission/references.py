"""Admission's check of the tenant data a ComputeJob's template names (I/O around pure rules).

The rules are :mod:`suanli.api.references`'s: every required Secret and ConfigMap must exist in
the job's namespace on the hub (and a Secret be of a type that is copied), and no ``envFrom``
source may hold keys that, prefixed, set a device-selecting variable. This reads each named
object once (:func:`~suanli.controller.tenant_data.read_sources`, as a dispatch does) within a
deadline well inside the webhook's timeout, so a job whose pods could never start on a member,
or would start with devices it does not pay for, is refused at ``kubectl apply`` with the field
named. The template's names were checked (valid, at most 64 distinct) by
``validate_computejob`` before any read is made.
"""

from __future__ import annotations

import asyncio

from suanli.api.computejob import ComputeJob
from suanli.api.references import (
    DataKind,
    data_errors,
    data_keys,
    device_env_errors,
    template_references,
)
from suanli.api.validation import FieldError
from suanli.controller.ports import TenantDataReader
from suanli.controller.tenant_data import read_sources


class ReferenceReadTimeoutError(Exception):
    """The referenced objects could not all be read within the deadline."""


async def reference_errors(
    hub: TenantDataReader, job: ComputeJob, *, deadline_seconds: float
) -> list[FieldError]:
    """Field errors for the template's references that cannot, or may not, be copied.

    Raises:
        ReferenceReadTimeoutError: the reads took longer than ``deadline_seconds``.
    """
    references = template_references(job.spec.template)
    if not references:
        return []
    try:
        async with asyncio.timeout(deadline_seconds):
            sources = await read_sources(hub, job.metadata.namespace or "", references)
    except TimeoutError:
        distinct = len({(r.kind, r.name) for r in references})
        raise ReferenceReadTimeoutError(
            f"reading the {distinct} Secrets and ConfigMaps the template names took longer "
            f"than {deadline_seconds:.0f}s; try again"
        ) from None
    found = {
        key: str(body.get("type") or "Opaque") if key[0] is DataKind.SECRET else ""
        for key, body in sources.items()
    }
    data = {key: data_keys(key[0], body) for key, body in sources.items()}
    return data_errors(references, found) + device_env_errors(references, data)
