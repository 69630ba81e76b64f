"""Admission's check of the tenant data a ComputeJob's template names (I/O around a pure rule).

The rule is :func:`suanli.api.references.data_errors`; this reads, from the job's namespace on
the hub, whether each named Secret and ConfigMap exists (and a Secret's type), so a job whose
pods could never start on a member is refused at ``kubectl apply`` with the field named.
"""

from __future__ import annotations

import asyncio

from suanli.api.computejob import ComputeJob
from suanli.api.references import DataKind, data_errors, template_references
from suanli.api.validation import FieldError
from suanli.controller.ports import TenantDataReader
from suanli.kube import NotFoundError


async def reference_errors(hub: TenantDataReader, job: ComputeJob) -> list[FieldError]:
    """Field errors for the template's references that cannot be copied to a member."""
    references = template_references(job.spec.template)
    if not references:
        return []
    namespace = job.metadata.namespace or ""
    keys = sorted({(r.kind, r.name) for r in references})

    async def kind_of(kind: DataKind, name: str) -> str | None:
        try:
            found = await hub.core_get(kind.plural, namespace, name)
        except NotFoundError:
            return None
        return str(found.get("type") or "Opaque") if kind is DataKind.SECRET else ""

    types = await asyncio.gather(*(kind_of(kind, name) for kind, name in keys))
    found = {key: kind for key, kind in zip(keys, types, strict=True) if kind is not None}
    return data_errors(references, found)
