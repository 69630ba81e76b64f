"""Accelerators on Kubernetes, vendor by vendor: the one table the pod-template policy reads.

A ComputeJob gets its accelerators from the operator: ``gpusPerReplica`` of the member's GPU
resource on the first container, charged to the voucher. A tenant's pod template must not reach
accelerators any other way, so the policy (:mod:`suanli.api.podpolicy`) refuses, for every vendor
listed here:

- resource names: any request or limit under a vendor's resource prefix, in any container. The
  prefixes are whole vendor domains where the domain only ever names accelerators (``nvidia.com/``
  covers ``gpu``, MIG slices ``mig-*``, time-sliced ``gpu.shared`` and HAMi's ``gpumem`` and
  ``gpucores``), so a resource a vendor adds tomorrow is refused too; and ``<any domain>/gpu``
  (``vgpu``, ``npu``) catches a vendor the table does not know yet. Other extended resources
  (RDMA devices, SR-IOV network functions) are not accelerators and stay the member's business.
- environment variables that make a container runtime or device plugin hand out devices or lift
  a device's limits. Only variables that such a component reads are listed. Variables that a
  vendor's user-space library reads to narrow the devices a process already has
  (``CUDA_VISIBLE_DEVICES``, ``HIP_VISIBLE_DEVICES``, ``ROCR_VISIBLE_DEVICES``,
  ``ASCEND_RT_VISIBLE_DEVICES``, ``MLU_VISIBLE_DEVICES``, ``XPU_VISIBLE_DEVICES``,
  ``TOPS_VISIBLE_DEVICES``) are allowed: they cannot add a device, and frameworks set them.
- node label prefixes: the labels device plugins and feature discovery put on accelerator nodes.
  A template that selects on them would steer placement past the operator's model choice.

Where each environment variable comes from (each component reads it from the container's
environment in the OCI spec):

- ``NVIDIA_VISIBLE_DEVICES``: the NVIDIA Container Toolkit's runtime hook injects the devices it
  names (``all`` for every GPU on the node). ``NVIDIA_MIG_CONFIG_DEVICES`` and
  ``NVIDIA_MIG_MONITOR_DEVICES`` grant MIG management capabilities, ``NVIDIA_IMEX_CHANNELS``
  injects IMEX channels, and ``NVIDIA_GDS``, ``NVIDIA_MOFED``, ``NVIDIA_NVSWITCH`` and
  ``NVIDIA_GDRCOPY`` switch on injection of GPUDirect Storage, InfiniBand, NVSwitch and GDRCopy
  device nodes. ``NVIDIA_DRIVER_CAPABILITIES`` and ``NVIDIA_REQUIRE_*`` are allowed: they only
  choose driver libraries and constraints for devices the container was given, and CUDA images
  set them.
- ``AMD_VISIBLE_DEVICES``: the AMD container runtime injects the GPUs it names.
- ``ASCEND_VISIBLE_DEVICES``: Ascend Docker Runtime mounts the NPUs it names;
  ``ASCEND_RUNTIME_OPTIONS`` (virtual devices), ``ASCEND_VNPU_SPECS`` (carves vNPUs out of a
  physical NPU), ``ASCEND_RUNTIME_MOUNTS`` (host content by configuration name) and
  ``ASCEND_ALLOW_LINK`` are read by the same runtime to decide what it mounts.
- ``HABANA_VISIBLE_DEVICES`` and ``HABANA_VISIBLE_MODULES``: the Habana container runtime mounts
  the Gaudi devices they name.
- ``MTHREADS_VISIBLE_DEVICES``: the Moore Threads container runtime, modelled on NVIDIA's,
  mounts the GPUs it names.
- HAMi's device plugin skips its in-container limiter when ``CUDA_DISABLE_CONTROL`` is set, and
  the limiter reads ``CUDA_DEVICE_MEMORY_LIMIT*``, ``CUDA_DEVICE_SM_LIMIT`` and
  ``GPU_CORE_UTILIZATION_POLICY``: a tenant value would widen the slice the job paid for.

Cambricon, Hygon, Kunlunxin, MetaX, Iluvatar, Enflame and Intel device plugins hand device nodes
to the kubelet directly; no runtime reads an environment variable to add one, so their rows list
none.

What the policy cannot see: ``envFrom`` (a ConfigMap's keys are unknown at the hub), a
variable baked into the image, and the ``/var/run/nvidia-container-devices`` mount trick handled
in :mod:`suanli.api.podpolicy`. A member must therefore also configure its runtime to ignore
environment-based device requests from unprivileged containers (NVIDIA:
``accept-nvidia-visible-devices-envvar-when-unprivileged = false``, the device plugin's
``volume-mounts`` or CDI strategy); see docs/tenants.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Final


@dataclass(frozen=True)
class AcceleratorVendor:
    """How one vendor's accelerators appear in a pod template and on nodes.

    Attributes:
        vendor: who makes the accelerator or the software that shares it.
        resource_prefixes: extended-resource name prefixes (``nvidia.com/``); a request or limit
            whose name starts with one is an accelerator.
        device_env: environment variable names, shell-style patterns allowed (``FOO_*``), that a
            runtime or device plugin reads to expose devices or to lift their limits.
        node_label_prefixes: label key prefixes on that vendor's accelerator nodes.
    """

    vendor: str
    resource_prefixes: tuple[str, ...]
    device_env: tuple[str, ...] = ()
    node_label_prefixes: tuple[str, ...] = ()


ACCELERATOR_VENDORS: Final[tuple[AcceleratorVendor, ...]] = (
    AcceleratorVendor(
        "NVIDIA (device plugin, MIG, time-slicing, GPU feature discovery)",
        ("nvidia.com/",),
        (
            "NVIDIA_VISIBLE_DEVICES",
            "NVIDIA_MIG_CONFIG_DEVICES",
            "NVIDIA_MIG_MONITOR_DEVICES",
            "NVIDIA_IMEX_CHANNELS",
            "NVIDIA_GDS",
            "NVIDIA_MOFED",
            "NVIDIA_NVSWITCH",
            "NVIDIA_GDRCOPY",
        ),
        ("nvidia.com/",),
    ),
    AcceleratorVendor(
        "HAMi (vGPU slices of several vendors' devices)",
        (),  # its resources live under the vendors' domains, listed in their rows
        (
            "CUDA_DISABLE_CONTROL",
            "CUDA_DEVICE_MEMORY_LIMIT*",
            "CUDA_DEVICE_SM_LIMIT",
            "GPU_CORE_UTILIZATION_POLICY",
        ),
        ("hami.io/",),
    ),
    AcceleratorVendor(
        "AMD", ("amd.com/",), ("AMD_VISIBLE_DEVICES",), ("amd.com/", "beta.amd.com/")
    ),
    AcceleratorVendor(
        "Huawei Ascend (Ascend910, Ascend910B, Ascend310, Ascend310P, vNPU)",
        ("huawei.com/",),
        (
            "ASCEND_VISIBLE_DEVICES",
            "ASCEND_RUNTIME_OPTIONS",
            "ASCEND_RUNTIME_MOUNTS",
            "ASCEND_VNPU_SPECS",
            "ASCEND_ALLOW_LINK",
        ),
        ("huawei.com/",),
    ),
    AcceleratorVendor("Cambricon (mlu, vmlu)", ("cambricon.com/",), (), ("cambricon.com/",)),
    AcceleratorVendor("Hygon (dcu, dcunum)", ("hygon.com/",), (), ("hygon.com/",)),
    AcceleratorVendor("Kunlunxin (xpu)", ("kunlunxin.com/",), (), ("kunlunxin.com/",)),
    AcceleratorVendor("MetaX", ("metax-tech.com/",), (), ("metax-tech.com/",)),
    AcceleratorVendor(
        "Iluvatar CoreX", ("iluvatar.com/", "iluvatar.ai/"), (), ("iluvatar.com/", "iluvatar.ai/")
    ),
    AcceleratorVendor(
        "Moore Threads (gpu, vgpu)",
        ("mthreads.com/",),
        ("MTHREADS_VISIBLE_DEVICES",),
        ("mthreads.com/",),
    ),
    AcceleratorVendor("Enflame (gcu)", ("enflame.com/",), (), ("enflame.com/",)),
    AcceleratorVendor(
        "Intel GPU",
        ("gpu.intel.com/",),
        (),
        ("gpu.intel.com/", "intel.feature.node.kubernetes.io/"),
    ),
    AcceleratorVendor(
        "Intel Gaudi (Habana)",
        ("habana.ai/",),
        ("HABANA_VISIBLE_DEVICES", "HABANA_VISIBLE_MODULES"),
        ("habana.ai/",),
    ),
    AcceleratorVendor("AWS Neuron", ("aws.amazon.com/neuron",), (), ("aws.amazon.com/neuron",)),
    AcceleratorVendor("Google TPU", ("google.com/tpu",), (), ("cloud.google.com/gke-tpu",)),
)

RESOURCE_PREFIXES: Final = tuple(
    prefix for vendor in ACCELERATOR_VENDORS for prefix in vendor.resource_prefixes
)
DEVICE_ENV_PATTERNS: Final = tuple(
    pattern for vendor in ACCELERATOR_VENDORS for pattern in vendor.device_env
)
NODE_LABEL_PREFIXES: Final = tuple(
    prefix for vendor in ACCELERATOR_VENDORS for prefix in vendor.node_label_prefixes
)

# A vendor missing from the table still almost always calls its device "gpu" (or "vgpu", "npu"):
# refuse those names under any domain, so that a new device plugin is not an open door.
GENERIC_ACCELERATOR_RESOURCES: Final = ("*/gpu", "*/vgpu", "*/npu")


def is_accelerator_resource(name: str) -> bool:
    """Whether a resource name requests an accelerator of any listed vendor.

    The domain is compared without case: the API server refuses upper-case domains anyway, and a
    near miss must not slip through here first.
    """
    lowered = name.lower()
    return any(lowered.startswith(prefix.lower()) for prefix in RESOURCE_PREFIXES) or any(
        fnmatchcase(lowered, pattern) for pattern in GENERIC_ACCELERATOR_RESOURCES
    )


def is_device_env(name: str) -> bool:
    """Whether an environment variable makes a runtime or device plugin expose devices.

    Case matters: environment variables are case-sensitive, and the runtimes read the names as
    listed.
    """
    return any(fnmatchcase(name, pattern) for pattern in DEVICE_ENV_PATTERNS)


def is_accelerator_node_label(key: str) -> bool:
    """Whether a node label key is one an accelerator vendor's software sets."""
    return any(key.startswith(prefix) for prefix in NODE_LABEL_PREFIXES)


class Vendor(StrEnum):
    """Accelerator vendors a job may ask for (``spec.capability.vendors``)."""

    NVIDIA = "NVIDIA"
    HUAWEI = "Huawei"
    CAMBRICON = "Cambricon"
    HYGON = "Hygon"
    ILUVATAR = "Iluvatar"
    METAX = "MetaX"
    MOORE_THREADS = "MooreThreads"
    KUNLUNXIN = "Kunlunxin"
    ENFLAME = "Enflame"
    AMD = "AMD"


# The resource each vendor's device plugin advertises whole devices as (docs/accelerators.md
# lists where each comes from); a member's admin names another with an entry's resourceName.
VENDOR_RESOURCES: Final[Mapping[Vendor, str]] = {
    Vendor.NVIDIA: "nvidia.com/gpu",
    Vendor.HUAWEI: "huawei.com/Ascend910",
    Vendor.CAMBRICON: "cambricon.com/mlu",
    Vendor.HYGON: "hygon.com/dcu",
    Vendor.ILUVATAR: "iluvatar.com/gpu",
    Vendor.METAX: "metax-tech.com/gpu",
    Vendor.MOORE_THREADS: "mthreads.com/gpu",
    Vendor.KUNLUNXIN: "kunlunxin.com/xpu",
    Vendor.ENFLAME: "enflame.com/gcu",
    Vendor.AMD: "amd.com/gpu",
}
