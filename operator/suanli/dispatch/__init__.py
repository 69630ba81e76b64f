"""Dispatch: where a ComputeJob runs, from the live GPU capacity of the member clusters.

Pure decision code: no Kubernetes I/O, no kopf. Handlers translate watch events and API objects
into the records of :mod:`~suanli.dispatch.models`, feed them to the index and act on what the
policy and the queue return.

* :mod:`~suanli.api.gpu_models` and :mod:`~suanli.api.catalogue` (in the API package, as
  admission and status read them too): node labels to the short model names jobs use
  (``H100``, ``ASCEND910B``), and what each model computes.
* :mod:`~suanli.dispatch.models`: the input records (:class:`ClusterInfo`,
  :class:`VoucherTerms`, :class:`JobRequest`, :class:`NodeInfo`, :class:`PodInfo`) and their
  constructors from the API models.
* :mod:`~suanli.dispatch.kube`: member Nodes and Pods (plain dicts) to records.
* :mod:`~suanli.dispatch.capacity`: :class:`CapacityIndex`, free GPUs per cluster, model and
  node from Kubernetes' view, telemetry and the assume cache, updated per event.
* :mod:`~suanli.dispatch.policy`: :func:`decide`, filters, scoring, the per-node allocation and
  a reason for every cluster not chosen.
* :mod:`~suanli.dispatch.queue`: :class:`PendingQueue`, priority, fair share across tenants and
  bounded backfill.

The intended flow, all inside one asyncio event loop (see the concurrency note in
:mod:`~suanli.dispatch.capacity`)::

    decision = decide(job, index)                 # no await between these two lines
    if decision.choice:
        index.assume(job.key, decision.choice.cluster, decision.choice.gpus_by_node)
        record decision.choice in the job's status, then create the remote workload
        (on failure: index.forget(job.key), queue.push(job))
    else:
        queue.push(job); write decision.reason and decision.summary to the job's condition
    # whenever capacity frees (pod finished, node added, telemetry shows GPUs idle):
    result = await queue.drain_async(index, held=gpus_held_per_namespace)
    # then, for each of result.placed, as above from "record"
"""

from suanli.api.gpu_models import (
    MODEL_LABEL,
    PRODUCT_LABEL,
    GpuProduct,
    canonical_model,
    normalize_gpu_model,
    parse_gpu_product,
    product_of_labels,
)
from suanli.dispatch.capacity import (
    Assumption,
    BusyRule,
    CapacityIndex,
    ModelCapacity,
    NodeCapacity,
    OverPlacementError,
)
from suanli.dispatch.kube import node_from_k8s, pod_from_k8s
from suanli.dispatch.models import ClusterInfo, JobRequest, NodeInfo, PodInfo, VoucherTerms
from suanli.dispatch.policy import (
    Choice,
    ClusterReason,
    Decision,
    NodeAllocation,
    Rejection,
    decide,
)
from suanli.dispatch.queue import DrainResult, PendingQueue, Placed

__all__ = [
    "MODEL_LABEL",
    "PRODUCT_LABEL",
    "Assumption",
    "BusyRule",
    "CapacityIndex",
    "Choice",
    "ClusterInfo",
    "ClusterReason",
    "Decision",
    "DrainResult",
    "GpuProduct",
    "JobRequest",
    "ModelCapacity",
    "NodeAllocation",
    "NodeCapacity",
    "NodeInfo",
    "OverPlacementError",
    "PendingQueue",
    "Placed",
    "PodInfo",
    "Rejection",
    "VoucherTerms",
    "canonical_model",
    "decide",
    "node_from_k8s",
    "normalize_gpu_model",
    "parse_gpu_product",
    "pod_from_k8s",
    "product_of_labels",
]
