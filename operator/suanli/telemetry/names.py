"""Metric and label names shared by the exporter and the reader.

The GPU metrics use dcgm-exporter's names, labels and units, so the hub reads suanli's exporter
and an existing dcgm-exporter alike; suanli's own metrics describe the exporter itself.
"""

from __future__ import annotations

from typing import Final

DEFAULT_PORT: Final = 9400  # dcgm-exporter's port, so existing scrape configs find ours too

# dcgm-exporter fields (DCGM_FI_*), in its units.
GPU_UTIL: Final = "DCGM_FI_DEV_GPU_UTIL"  # percent
MEM_COPY_UTIL: Final = "DCGM_FI_DEV_MEM_COPY_UTIL"  # percent
FB_USED: Final = "DCGM_FI_DEV_FB_USED"  # MiB, allocated (reserved excluded)
FB_FREE: Final = "DCGM_FI_DEV_FB_FREE"  # MiB
FB_RESERVED: Final = "DCGM_FI_DEV_FB_RESERVED"  # MiB, kept by the driver
GPU_TEMP: Final = "DCGM_FI_DEV_GPU_TEMP"  # degrees C
POWER_USAGE: Final = "DCGM_FI_DEV_POWER_USAGE"  # W
XID_ERRORS: Final = "DCGM_FI_DEV_XID_ERRORS"  # code of the last XID error, 0 if none
ECC_SBE_VOL_TOTAL: Final = "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"  # corrected, since driver load
ECC_DBE_VOL_TOTAL: Final = "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"  # uncorrected, since driver load

# dcgm-exporter labels.
LABEL_GPU: Final = "gpu"
LABEL_UUID: Final = "UUID"
LABEL_PCI_BUS_ID: Final = "pci_bus_id"
LABEL_DEVICE: Final = "device"
LABEL_MODEL: Final = "modelName"
LABEL_HOSTNAME: Final = "Hostname"
# Newer dcgm-exporter releases may spell the node label in lower case.
LABEL_HOSTNAME_LOWER: Final = "hostname"
LABEL_GPU_INSTANCE: Final = "GPU_I_ID"  # MIG instance, when the GPU is partitioned
LABEL_NAMESPACE: Final = "namespace"
LABEL_POD: Final = "pod"
LABEL_CONTAINER: Final = "container"

# Ascend npu-exporter (MindCluster, "Prometheus Metrics接口"): one node per exporter, no node
# label; devices by id (and vdie_id, the die's unique id), memory in MB.
NPU_UTIL: Final = "npu_chip_info_utilization"  # percent (AI Core)
NPU_HBM_USED: Final = "npu_chip_info_hbm_used_memory"  # MB
NPU_HBM_TOTAL: Final = "npu_chip_info_hbm_total_memory"  # MB
NPU_HEALTH: Final = "npu_chip_info_health_status"  # 1 healthy, 0 not
NPU_TEMP: Final = "npu_chip_info_temperature"  # degrees C
NPU_POWER: Final = "npu_chip_info_power"  # W
NPU_LABEL_ID: Final = "id"
NPU_LABEL_VDIE: Final = "vdie_id"
NPU_LABEL_MODEL: Final = "model_name"
NPU_LABEL_POD: Final = "pod_name"
NPU_LABEL_NAMESPACE: Final = "namespace"
NPU_LABEL_CONTAINER: Final = "container_name"

# suanli's exporter about itself.
EXPORTER_UP: Final = "suanli_exporter_up"
EXPORTER_LAST_READ: Final = "suanli_exporter_last_read_timestamp_seconds"
EXPORTER_READ_DURATION: Final = "suanli_exporter_read_duration_seconds"
# A counter: exposed as suanli_exporter_read_errors_total{call=...}.
EXPORTER_READ_ERRORS: Final = "suanli_exporter_read_errors"
EXPORTER_INFO: Final = "suanli_exporter_info"  # 1, labelled with driver and suanli versions
LABEL_CALL: Final = "call"
