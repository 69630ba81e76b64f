"""How the pods of a gang find each other on a member: a headless Service and launcher variables.

A gang (more than one replica) runs as an Indexed batch Job, whose controller names each pod's
host ``<job name>-<completion index>``. Giving the pods a ``subdomain`` that is the name of a
headless Service selecting them makes the member's DNS answer
``<job name>-<index>.<service>.<namespace>.svc`` with that pod's address, so replica 0 is a fixed
rendezvous address known before any pod exists. The Service publishes addresses of pods that
are not ready yet: a launcher waits at the rendezvous for all replicas, and none of them is
ready before it returns.

Every container of the pod gets the variables torchrun-style launchers read (names the
tenant's template sets itself are left as the tenant set them):

=====================  ===================================================================
``MASTER_ADDR``        replica 0's name, above
``MASTER_PORT``        :data:`RENDEZVOUS_PORT`
``NNODES``             the number of replicas
``NODE_RANK``          the pod's completion index, 0 to replicas - 1
``NPROC_PER_NODE``     GPUs per replica (one process per device)
``WORLD_SIZE``         replicas x GPUs per replica: the processes of the whole job
``PET_*``              ``PET_MASTER_ADDR``, ``PET_MASTER_PORT``, ``PET_NNODES``,
                       ``PET_NODE_RANK``, ``PET_NPROC_PER_NODE``: torchrun takes its
                       options from these, so a bare ``torchrun train.py`` joins the gang
=====================  ===================================================================

The Service is owned by the remote Job (an owner reference), so the member's garbage collector
removes it with the Job.
"""

from __future__ import annotations

from typing import Any, Final

COMPLETION_INDEX_ANNOTATION: Final = "batch.kubernetes.io/job-completion-index"
"""Set by the Job controller on each pod of an Indexed Job."""
RENDEZVOUS_PORT: Final = 29500
"""torchrun's default port."""
PORT_NAME: Final = "rendezvous"
_MAX_LABEL: Final = 63


def service_name(job_name: str) -> str:
    """The headless Service's name for the remote Job ``job_name``: a Service name must start
    with a letter, a Job's name may start with a digit."""
    name = job_name if job_name[:1].isalpha() else f"r{job_name}"
    return name[:_MAX_LABEL].rstrip("-")


def master_address(job_name: str, namespace: str) -> str:
    """The DNS name of replica 0 (the pod with completion index 0)."""
    return f"{job_name}-0.{service_name(job_name)}.{namespace}.svc"


def launcher_env(
    job_name: str, namespace: str, replicas: int, gpus_per_replica: int
) -> list[dict[str, Any]]:
    """The variables of the module notes, as container ``env`` entries."""
    rank = {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}}
    plain = {
        "MASTER_ADDR": master_address(job_name, namespace),
        "MASTER_PORT": str(RENDEZVOUS_PORT),
        "NNODES": str(replicas),
        "NPROC_PER_NODE": str(gpus_per_replica),
        "WORLD_SIZE": str(replicas * gpus_per_replica),
    }
    env: list[dict[str, Any]] = [{"name": name, "value": value} for name, value in plain.items()]
    env.append({"name": "NODE_RANK", "valueFrom": rank})
    for name in ("MASTER_ADDR", "MASTER_PORT", "NNODES", "NPROC_PER_NODE"):
        env.append({"name": f"PET_{name}", "value": plain[name]})
    env.append({"name": "PET_NODE_RANK", "valueFrom": rank})
    return env


def add_launcher_env(pod_spec: dict[str, Any], env: list[dict[str, Any]]) -> None:
    """Append ``env`` to every container of ``pod_spec``, except names a container sets."""
    for container in pod_spec.get("containers") or []:
        own = container.setdefault("env", [])
        taken = {entry.get("name") for entry in own if isinstance(entry, dict)}
        own.extend(dict(entry) for entry in env if entry["name"] not in taken)


def headless_service(
    job_name: str,
    namespace: str,
    selector: dict[str, str],
    labels: dict[str, str],
    owner_uid: str,
) -> dict[str, Any]:
    """The headless Service of the gang, owned by the remote Job (uid ``owner_uid``)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(job_name),
            "namespace": namespace,
            "labels": dict(labels),
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": owner_uid}
            ],
        },
        "spec": {
            "clusterIP": "None",
            "selector": dict(selector),
            "publishNotReadyAddresses": True,
            "ports": [{"name": PORT_NAME, "port": RENDEZVOUS_PORT, "protocol": "TCP"}],
        },
    }
