"""Copies of a tenant's Secrets and ConfigMaps on a member, under job-scoped names.

A template names Secrets and ConfigMaps of the tenant's hub namespace
(:mod:`suanli.api.references`). The member's namespace for the tenant holds all its jobs, so
each job gets its own copies, named ``<remote Job name>-<original name>`` (bounded), and its
template is rewritten to those names: two jobs of a tenant never share, or race on, a copy,
and deleting one job's copies (by its uid label) cannot touch another's.

A copy carries only the data (and a Secret's type, one of
:data:`~suanli.api.references.COPYABLE_SECRET_TYPES`): none of the original's labels,
annotations or owner references, which mean something on the hub only. Its annotation
:data:`CONTENT_HASH_ANNOTATION` is a digest of what it holds, so the sync can tell whether the
original changed without reading the copy back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from suanli.api.names import CONTENT_HASH_ANNOTATION, COPY_LABEL, COPY_OF_ANNOTATION
from suanli.api.references import COPYABLE_SECRET_TYPES, DataKind
from suanli.members.workload import copy_name


def content(kind: DataKind, source: Mapping[str, Any]) -> dict[str, Any]:
    """What of ``source`` (a Secret or ConfigMap as the hub's API serves it) is copied."""
    if kind is DataKind.SECRET:
        kept = {"type": source.get("type") or "Opaque", "data": dict(source.get("data") or {})}
        if kept["type"] not in COPYABLE_SECRET_TYPES:
            raise ValueError(
                f"Secret {source.get('metadata', {}).get('name')!r} is of type {kept['type']}, "
                "which is not copied to members"
            )
        return kept
    return {
        "data": dict(source.get("data") or {}),
        "binaryData": dict(source.get("binaryData") or {}),
    }


def content_hash(kind: DataKind, source: Mapping[str, Any]) -> str:
    text = json.dumps(content(kind, source), sort_keys=True)
    return hashlib.sha256(f"{kind}/{text}".encode()).hexdigest()[:32]


def data_copy(
    kind: DataKind,
    source: Mapping[str, Any],
    *,
    job_name: str,
    namespace: str,
    labels: Mapping[str, str],
) -> dict[str, Any]:
    """The copy of ``source`` (read from the job's hub namespace) in the member ``namespace``."""
    name = str((source.get("metadata") or {}).get("name") or "")
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": str(kind),
        "metadata": {
            "name": copy_name(job_name, name),
            "namespace": namespace,
            "labels": {**labels, COPY_LABEL: "true"},
            "annotations": {
                COPY_OF_ANNOTATION: name,
                CONTENT_HASH_ANNOTATION: content_hash(kind, source),
            },
        },
    }
    body.update({key: value for key, value in content(kind, source).items() if value})
    if kind is DataKind.SECRET:
        body["type"] = content(kind, source)["type"]
    return body
