"""Small helpers the e2e tests share: per-cluster API clients and workload builders."""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from suanli.devenv import federation
from suanli.devenv.manifests import GPU_RESOURCE, RUN_DURATION_ANNOTATION
from suanli.devenv.toolchain import toolchain_paths


@dataclass
class Cluster:
    """API clients for one cluster of the federation."""

    info: federation.ClusterInfo
    api: client.ApiClient

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api)


def gpu_job(name: str, gpus: int, run_duration: str | None) -> dict[str, Any]:
    """A batch Job of one pod asking ``gpus`` GPUs, running ``run_duration`` under kwok."""
    annotations = {RUN_DURATION_ANNOTATION: run_duration} if run_duration else {}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "train",
                            "image": "registry.example/train:1",
                            "resources": {"limits": {GPU_RESOURCE: str(gpus)}},
                        }
                    ],
                },
            },
        },
    }


_CACHE_DIR = tempfile.mkdtemp(prefix="suanli-e2e-kubectl-")


def kubectl(
    cluster: Cluster, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the toolchain's kubectl against one cluster, as a user at a terminal would."""
    command = [
        str(toolchain_paths().kubectl),
        "--kubeconfig",
        cluster.info.kubeconfig,
        # kubectl caches API discovery per host:port; ports are reused by later clusters, so a
        # shared cache would describe some earlier cluster's resources.
        f"--cache-dir={_CACHE_DIR}",
        *args,
    ]
    result = subprocess.run(
        command, input=stdin, capture_output=True, text=True, timeout=60, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result
