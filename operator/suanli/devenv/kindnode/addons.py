"""What a locally built kind node image ships besides Kubernetes: its CNI and its storage.

kind applies ``/kind/manifests/default-cni.yaml`` and ``/kind/manifests/default-storage.yaml``
from the node image when it creates a cluster. Its own CNI, kindnetd, cannot be built here (its
module and one of its dependencies are not served by the Go module proxy), so the node image
carries a static CNI configuration instead: the ``bridge`` plugin from Debian's
containernetworking-plugins with host-local addresses from the pod subnet. That is enough for
the single-node clusters the federation uses (every pod on one bridge); the "manifest" kind
applies then only records, in a ConfigMap, which CNI the node runs. Storage is the
local-path-provisioner, as in kind's own images, built from its Go module.
"""

from __future__ import annotations

import json
from typing import Any, Final

# kind's default pod subnet (networking.podSubnet); the provider never changes it.
POD_SUBNET: Final = "10.244.0.0/16"
CNI_CONFIG_PATH: Final = "/etc/cni/net.d/10-suanli-bridge.conflist"
LOCAL_PATH_NAMESPACE: Final = "local-path-storage"
LOCAL_PATH_DIRECTORY: Final = "/var/local-path-provisioner"

Manifest = dict[str, Any]


def cni_config() -> str:
    """A CNI configuration list: a bridge with host-local IPAM, then port mappings."""
    return json.dumps(
        {
            "cniVersion": "0.4.0",
            "name": "suanli-bridge",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": True,
                    # Pods reach a Service whose endpoint is themselves (kube-proxy DNATs back).
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        },
        indent=2,
    )


def cni_manifest() -> list[Manifest]:
    """What kind applies as the node's "default CNI": a record of the static configuration."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "suanli-node-cni", "namespace": "kube-system"},
            "data": {"path": CNI_CONFIG_PATH, "config": cni_config()},
        }
    ]


def storage_manifest(provisioner_image: str, helper_image: str) -> list[Manifest]:
    """local-path-provisioner and the default StorageClass ``standard``, as kind names it."""
    namespace = LOCAL_PATH_NAMESPACE
    name = "local-path-provisioner"
    labels = {"app": name}
    config = {
        "nodePathMap": [
            {"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": [LOCAL_PATH_DIRECTORY]}
        ]
    }
    helper_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "helper-pod"},
        "spec": {
            "priorityClassName": "system-node-critical",
            "tolerations": [{"key": "node.kubernetes.io/disk-pressure", "operator": "Exists"}],
            "containers": [
                {"name": "helper-pod", "image": helper_image, "imagePullPolicy": "IfNotPresent"}
            ],
        },
    }
    rules = [
        {"apiGroups": [""], "resources": ["nodes", "pods/log"], "verbs": ["get", "list", "watch"]},
        {
            "apiGroups": [""],
            "resources": ["persistentvolumeclaims", "configmaps"],
            "verbs": ["get", "list", "watch", "update", "patch"],
        },
        {
            "apiGroups": [""],
            "resources": ["persistentvolumes", "pods"],
            "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"],
        },
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
        {"apiGroups": [""], "resources": ["endpoints"], "verbs": ["get", "create", "update"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "create", "update"],
        },
        {
            "apiGroups": ["storage.k8s.io"],
            "resources": ["storageclasses"],
            "verbs": ["get", "list", "watch"],
        },
    ]
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "local-path-config", "namespace": namespace},
            "data": {
                "config.json": json.dumps(config, indent=2),
                "setup": '#!/bin/sh\nset -eu\nmkdir -m 0777 -p "$VOL_DIR"\n',
                "teardown": '#!/bin/sh\nset -eu\nrm -rf "$VOL_DIR"\n',
                "helperPod.yaml": json.dumps(helper_pod, indent=2),
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": name,
                        "priorityClassName": "system-node-critical",
                        # It runs before any worker joins, on the control plane.
                        "tolerations": [
                            {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}
                        ],
                        "containers": [
                            {
                                "name": name,
                                "image": provisioner_image,
                                "imagePullPolicy": "IfNotPresent",
                                "command": [
                                    "local-path-provisioner",
                                    "--debug",
                                    "start",
                                    "--helper-image",
                                    helper_image,
                                    "--config",
                                    "/etc/config/config.json",
                                ],
                                "env": [
                                    {
                                        "name": "POD_NAMESPACE",
                                        "valueFrom": {
                                            "fieldRef": {"fieldPath": "metadata.namespace"}
                                        },
                                    },
                                    {"name": "CONFIG_MOUNT_PATH", "value": "/etc/config/"},
                                    {"name": "SERVICE_ACCOUNT_NAME", "value": name},
                                ],
                                "volumeMounts": [
                                    {"name": "config-volume", "mountPath": "/etc/config/"}
                                ],
                            }
                        ],
                        "volumes": [
                            {
                                "name": "config-volume",
                                "configMap": {"name": "local-path-config"},
                            }
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": "standard",
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": "rancher.io/local-path",
            "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Delete",
        },
    ]
