"""``suanli exporter`` as a real process on the stand-in NVIDIA library.

Each test starts the exporter with LD_LIBRARY_PATH and SUANLI_FAKE_NVML_STATE pointing at the
stand-in, scrapes it over HTTP and reads the text with prometheus_client's own parser.
"""

from __future__ import annotations

import ctypes.util
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from suanli.devenv.fakenvml import (
    FakeNvmlState,
    NvmlReturn,
    build_library,
    nvml_environment,
    sample_gpus,
    write_state,
)
from suanli.devenv.fakenvml.exporter_process import FakeGpuExporter, free_port
from suanli.kits.waiting import wait_for
from suanli.telemetry import names
from suanli.telemetry.exporter import CachedSampler
from suanli.telemetry.nvml import ErrorCounts, NodeReading

MIB = 1024 * 1024
WAIT = 15.0


@pytest.fixture(scope="module")
def library() -> Path:
    return build_library()


def families(text: str) -> dict[str, list[Sample]]:
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def per_gpu(text: str, metric: str) -> dict[str, float]:
    """``{gpu index label: value}`` of one DCGM metric."""
    return {s.labels[names.LABEL_GPU]: s.value for s in families(text).get(metric, [])}


def read_errors(text: str) -> dict[str, float]:
    return {s.labels["call"]: s.value for s in families(text)[names.EXPORTER_READ_ERRORS]}


def busy_state() -> FakeNvmlState:
    return (
        FakeNvmlState(gpus=sample_gpus(2, seed="exporter-test"))
        .replace_gpu(
            0,
            utilization_gpu=17,
            utilization_memory=4,
            memory_used=2048 * MIB,
            memory_reserved=512 * MIB,
            temperature=41,
            power_usage=95_500,
        )
        .replace_gpu(
            1,
            name="NVIDIA A100-SXM4-40GB",
            memory_total=40 * 1024 * MIB,
            utilization_gpu=93,
            utilization_memory=61,
            memory_used=30_000 * MIB + 123,  # not a whole MiB: reported rounded down
            memory_reserved=256 * MIB,
            temperature=77,
            power_usage=301_250,
            ecc_dbe_volatile=3,
            ecc_sbe_volatile=12,
        )
    )


@pytest.fixture
def exporter(library: Path, tmp_path: Path) -> Iterator[FakeGpuExporter]:
    # No cache: each scrape reads NVML, so "the next scrape" means exactly that.
    with FakeGpuExporter(
        tmp_path,
        busy_state(),
        hostname="gpu-node-a",
        extra_args=("--cache-seconds", "0"),
        library=library,
    ) as running:
        yield running


def test_metrics_match_the_state_file(exporter: FakeGpuExporter) -> None:
    text = exporter.scrape()
    gpus = exporter.state.gpus
    assert per_gpu(text, names.GPU_UTIL) == {"0": 17, "1": 93}
    assert per_gpu(text, names.MEM_COPY_UTIL) == {"0": 4, "1": 61}
    assert per_gpu(text, names.FB_USED) == {"0": 2048, "1": 30_000}
    assert per_gpu(text, names.FB_RESERVED) == {"0": 512, "1": 256}
    assert per_gpu(text, names.FB_FREE) == {
        "0": 80 * 1024 - 2048 - 512,
        "1": 40 * 1024 - 30_000 - 256 - 1,  # the odd bytes used cost a whole free MiB
    }
    assert per_gpu(text, names.GPU_TEMP) == {"0": 41, "1": 77}
    assert per_gpu(text, names.POWER_USAGE) == {"0": 95.5, "1": 301.25}
    assert per_gpu(text, names.ECC_DBE_VOL_TOTAL) == {"0": 0, "1": 3}
    assert per_gpu(text, names.ECC_SBE_VOL_TOTAL) == {"0": 0, "1": 12}
    assert per_gpu(text, names.XID_ERRORS) == {"0": 0, "1": 0}

    labels = [s.labels for s in families(text)[names.GPU_UTIL]]
    assert labels == [
        {
            "gpu": str(gpu.index),
            "UUID": gpu.uuid,
            "pci_bus_id": gpu.pci_bus_id,
            "device": f"nvidia{gpu.index}",
            "modelName": gpu.name,
            "Hostname": "gpu-node-a",
        }
        for gpu in gpus
    ]
    own = families(text)
    assert own[names.EXPORTER_UP][0].value == 1
    assert abs(own[names.EXPORTER_LAST_READ][0].value - time.time()) < 60
    assert own[names.EXPORTER_INFO][0].labels["driver_version"] == exporter.state.driver_version
    assert read_errors(text) == {}


def test_changed_utilization_and_memory_show_on_the_next_scrape(
    exporter: FakeGpuExporter,
) -> None:
    exporter.set_state(exporter.state.replace_gpu(0, utilization_gpu=64, memory_used=10_240 * MIB))
    text = exporter.scrape()
    assert per_gpu(text, names.GPU_UTIL) == {"0": 64, "1": 93}
    assert per_gpu(text, names.FB_USED)["0"] == 10_240
    assert per_gpu(text, names.FB_FREE)["0"] == 80 * 1024 - 10_240 - 512


def test_a_failing_call_is_counted_and_the_exporter_keeps_serving(
    exporter: FakeGpuExporter,
) -> None:
    exporter.set_state(
        exporter.state.replace_gpu(
            1, fail={"nvmlDeviceGetUtilizationRates": NvmlReturn.GPU_IS_LOST}
        )
    )
    first = exporter.scrape()
    # Only the failed call's series go; the GPU's other metrics and the other GPU stay.
    assert per_gpu(first, names.GPU_UTIL) == {"0": 17}
    assert per_gpu(first, names.MEM_COPY_UTIL) == {"0": 4}
    assert per_gpu(first, names.GPU_TEMP) == {"0": 41, "1": 77}
    assert read_errors(first) == {"nvmlDeviceGetUtilizationRates": 1}
    assert families(first)[names.EXPORTER_UP][0].value == 1

    second = exporter.scrape()
    assert read_errors(second) == {"nvmlDeviceGetUtilizationRates": 2}
    assert exporter.scrape("/healthz").strip() == "ok"

    exporter.set_state(exporter.state.replace_gpu(1, fail={}))
    assert per_gpu(exporter.scrape(), names.GPU_UTIL) == {"0": 17, "1": 93}


def test_a_driver_that_goes_away_reports_up_0_and_keeps_serving(
    exporter: FakeGpuExporter,
) -> None:
    exporter.state_path.unlink()  # the stand-in now answers "driver not loaded"
    text = exporter.scrape()
    assert families(text)[names.EXPORTER_UP][0].value == 0
    assert per_gpu(text, names.GPU_UTIL) == {}
    errors = read_errors(text)
    assert errors["nvmlDeviceGetCount_v2"] == 1
    # The XID event watcher may also have seen the driver go (it waits on its own thread);
    # nothing else may have failed.
    assert set(errors) <= {"nvmlDeviceGetCount_v2", "nvmlEventSetWait_v2"}
    exporter.set_state(exporter.state)
    assert families(exporter.scrape())[names.EXPORTER_UP][0].value == 1


def test_an_xid_error_shows_as_the_last_xid_code(exporter: FakeGpuExporter) -> None:
    exporter.set_state(exporter.state.replace_gpu(1, xid_errors=(79,)))
    # Events arrive asynchronously (the watcher polls NVML events), hence a bounded wait.
    wait_for(
        lambda: per_gpu(exporter.scrape(), names.XID_ERRORS) == {"0": 0, "1": 79},
        timeout=WAIT,
        what="XID 79 on GPU 1 in the scrape",
    )


def test_readings_are_reused_within_cache_seconds(library: Path, tmp_path: Path) -> None:
    with FakeGpuExporter(
        tmp_path, busy_state(), extra_args=("--cache-seconds", "600"), library=library
    ) as cached:
        assert per_gpu(cached.scrape(), names.GPU_UTIL)["0"] == 17
        cached.set_state(cached.state.replace_gpu(0, utilization_gpu=50))
        assert per_gpu(cached.scrape(), names.GPU_UTIL)["0"] == 17


def test_sigterm_stops_the_exporter_with_status_0(library: Path, tmp_path: Path) -> None:
    running = FakeGpuExporter(tmp_path, busy_state(), library=library)
    running.start()
    assert running.stop() == 0
    assert "stopping" in running.log_text()


def run_exporter_expecting_failure(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "suanli", "exporter", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


@pytest.mark.skipif(
    ctypes.util.find_library("nvidia-ml") is not None,
    reason="a real NVIDIA driver library is installed on this machine",
)
def test_without_the_library_the_exporter_exits_with_a_clear_message(tmp_path: Path) -> None:
    empty = tmp_path / "no-driver"
    empty.mkdir()
    env = nvml_environment(empty / "libnvidia-ml.so.1", tmp_path / "state.json")
    result = run_exporter_expecting_failure(env)
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()
    assert message == [
        "suanli: error: cannot load libnvidia-ml.so.1 (the NVIDIA driver's NVML library):"
        " run on a GPU node with the NVIDIA driver installed, in a container started by the"
        " NVIDIA runtime"
    ]


def test_with_the_library_but_no_driver_the_exporter_exits_with_a_clear_message(
    library: Path, tmp_path: Path
) -> None:
    result = run_exporter_expecting_failure(nvml_environment(library, tmp_path / "absent.json"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "suanli: error: NVML found no loaded NVIDIA driver on this machine"
        " (nvmlInit: Driver Not Loaded)"
    ]


def test_init_failure_names_the_driver_mismatch(library: Path, tmp_path: Path) -> None:
    state = FakeNvmlState(gpus=sample_gpus(1), init_error=NvmlReturn.LIB_RM_VERSION_MISMATCH)
    write_state(tmp_path / "state.json", state)
    result = run_exporter_expecting_failure(nvml_environment(library, tmp_path / "state.json"))
    assert result.returncode == 2
    assert "versions differ" in result.stderr


def test_a_hung_read_is_not_waited_for_past_the_timeout() -> None:
    # The read function is the sampler's seam: here one that blocks as a stuck driver would.
    release = threading.Event()
    calls: list[float] = []

    def read() -> NodeReading:
        calls.append(time.monotonic())
        if len(calls) > 1:
            release.wait(WAIT)
        return NodeReading(read_at=time.time(), duration_s=0.0, enumerated=True, gpus=())

    errors = ErrorCounts()
    sampler = CachedSampler(read, cache_seconds=0.0, read_timeout=0.2, errors=errors)
    first = sampler.get()
    assert first is not None
    started = time.monotonic()
    assert sampler.get() is first  # the stuck second read: the previous reading is served
    assert sampler.get() is first  # and no third read piles up behind it
    assert time.monotonic() - started < 2.0
    assert len(calls) == 2
    assert errors.snapshot() == {"read_timeout": 2}
    release.set()
    wait_for(lambda: sampler.get() is not first, timeout=WAIT, what="a fresh reading")
