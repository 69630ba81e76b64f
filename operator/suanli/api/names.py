"""The names suanli puts on objects, defined once: labels, annotations, the finalizer, and the
namespace and Lease it runs in. The kinds' own labels (a programme's, a statement's) live with
their kind; everything here is read and written by more than one part.

Renaming one is an API change: objects already stored carry the old name.
"""

from __future__ import annotations

from typing import Final

from suanli.api.meta import LABEL_PREFIX

# --- on a ComputeJob, on the hub ---

FINALIZER: Final = f"{LABEL_PREFIX}finalizer"
"""Held by every ComputeJob until its remote workload is stopped and what it used is charged."""
HOLD_ANNOTATION: Final = f"{LABEL_PREFIX}hold"
"""The voucher hold a job was admitted with, stored with it at its create."""

# --- on what runs on a member, and on the hub's usage records ---

JOB_UID_LABEL: Final = f"{LABEL_PREFIX}job-uid"
"""The ComputeJob's uid: on its remote Job, pods, Service and copies, and on its usage records
(the dispatcher finds a pod's job by it; billing keys records by it)."""
JOB_NAMESPACE_LABEL: Final = f"{LABEL_PREFIX}job-namespace"
"""The ComputeJob's hub namespace, on its remote objects and the member namespace made for it."""
JOB_NAME_LABEL: Final = f"{LABEL_PREFIX}job-name"
"""The ComputeJob's name, on its remote objects (for people; uids are what code matches)."""
HUB_ANNOTATION: Final = f"{LABEL_PREFIX}computejob"
"""namespace/name of the ComputeJob a remote Job runs, for the member's admins."""
VOUCHER_LABEL: Final = f"{LABEL_PREFIX}voucher"
"""The voucher a usage record charged."""
COPY_LABEL: Final = f"{LABEL_PREFIX}tenant-data"
"""On a member's job-scoped copy of a tenant's Secret or ConfigMap."""
COPY_OF_ANNOTATION: Final = f"{LABEL_PREFIX}copy-of"
"""The original a copy was made from (kind/name)."""
CONTENT_HASH_ANNOTATION: Final = f"{LABEL_PREFIX}content-hash"
"""The digest of the original's content the copy holds."""

# --- the operator's own identity ---

SYSTEM_NAMESPACE: Final = "suanli-system"
"""Where suanli runs by default: its Deployment and Lease on the hub, its identity on members."""
LEASE_NAME: Final = "suanli-admission"
"""The Lease whose holder admits ComputeJobs and runs the controllers."""
LEADER_LABEL: Final = f"{LABEL_PREFIX}admission-leader"
"""On the operator pod that leads (the webhook Service selects it)."""
SETTLED_ANNOTATION: Final = f"{LABEL_PREFIX}holds-settled"
"""On the Lease: whether its last holder decided every hold before it let go."""
DESCRIPTION_ANNOTATION: Final = f"{LABEL_PREFIX}description"
"""What a rendered role is for, in a sentence (RBAC and member access)."""
