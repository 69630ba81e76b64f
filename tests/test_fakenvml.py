"""The stand-in NVIDIA driver, driven through pynvml exactly as the exporter uses it.

pynvml loads ``CDLL("libnvidia-ml.so.1")`` once per process, so every check runs in a child
Python process whose LD_LIBRARY_PATH finds the stand-in: the honest way to prove that the real
loader, symbol lookups and ctypes structs work with it.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from suanli.devenv.fakenvml import (
    FakeGpu,
    FakeNvmlBuildError,
    FakeNvmlState,
    NvmlReturn,
    build_library,
    nvml_environment,
    sample_gpus,
    write_state,
)

PROBE_TIMEOUT = 30.0
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def library() -> Path:
    return build_library()


def run_probe(script: str, library: Path, state_path: Path) -> dict:
    """Run ``script`` (which prints one JSON object) in a child using the stand-in library."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=nvml_environment(library, state_path),
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def read_line(process: subprocess.Popen[str], timeout: float = PROBE_TIMEOUT) -> str:
    """One line from the child's stdout, failing rather than hanging if none comes."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, f"the probe printed nothing within {timeout}s"
    return process.stdout.readline()


READ_ALL_GPUS = """
    import json, pynvml
    pynvml.nvmlInit()
    def text(value):  # pynvml hands out str for some char arrays, bytes for others
        return value.decode() if isinstance(value, bytes) else value
    def read():
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            util = pynvml.nvmlDeviceGetUtilizationRates(h)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2)
            gpus.append({
                "index": pynvml.nvmlDeviceGetIndex(h),
                "name": pynvml.nvmlDeviceGetName(h),
                "uuid": pynvml.nvmlDeviceGetUUID(h),
                "util_gpu": util.gpu,
                "util_memory": util.memory,
                "mem_total": mem.total, "mem_used": mem.used,
                "mem_reserved": mem.reserved, "mem_free": mem.free,
                "temperature": pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
                "power_mw": pynvml.nvmlDeviceGetPowerUsage(h),
                "bus_id": text(pynvml.nvmlDeviceGetPciInfo(h).busId),
                "ecc_dbe": pynvml.nvmlDeviceGetTotalEccErrors(
                    h, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC),
            })
        return gpus
    maps = open("/proc/self/maps").read().split()
    print(json.dumps({
        "loaded_from": sorted({p for p in maps if p.endswith("/libnvidia-ml.so.1")}),
        "driver": pynvml.nvmlSystemGetDriverVersion(),
        "gpus": read(),
    }), flush=True)
    input()  # the test rewrites the state file, then sends a line
    print(json.dumps({"gpus": read()}), flush=True)
    pynvml.nvmlShutdown()
"""


def test_pynvml_loads_the_stand_in_reads_its_gpus_and_sees_a_changed_utilization(
    library: Path, tmp_path: Path
) -> None:
    state = FakeNvmlState(gpus=sample_gpus(2, seed="probe")).replace_gpu(
        1,
        utilization_gpu=37,
        utilization_memory=12,
        memory_used=3 * 1024 * MIB,
        temperature=61,
        power_usage=212_500,
        ecc_dbe_volatile=2,
    )
    state_path = tmp_path / "state.json"
    write_state(state_path, state)
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(READ_ALL_GPUS)],
        env=nvml_environment(library, state_path),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = json.loads(read_line(process))
        assert first["loaded_from"] == [str(library)]
        assert first["driver"] == state.driver_version
        expected = [
            {
                "index": gpu.index,
                "name": gpu.name,
                "uuid": gpu.uuid,
                "util_gpu": gpu.utilization_gpu,
                "util_memory": gpu.utilization_memory,
                "mem_total": gpu.memory_total,
                "mem_used": gpu.memory_used,
                "mem_reserved": gpu.memory_reserved,
                "mem_free": gpu.memory_total - gpu.memory_used - gpu.memory_reserved,
                "temperature": gpu.temperature,
                "power_mw": gpu.power_usage,
                "bus_id": gpu.pci_bus_id,
                "ecc_dbe": gpu.ecc_dbe_volatile,
            }
            for gpu in state.gpus
        ]
        assert first["gpus"] == expected

        write_state(state_path, state.replace_gpu(0, utilization_gpu=88))
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
        second = json.loads(read_line(process))
        assert [gpu["util_gpu"] for gpu in second["gpus"]] == [88, 37]
        assert process.wait(PROBE_TIMEOUT) == 0
    finally:
        process.kill()
        process.communicate(timeout=PROBE_TIMEOUT)


def test_memory_info_v1_folds_reserved_into_used(library: Path, tmp_path: Path) -> None:
    gpu = FakeGpu(
        index=0,
        uuid="GPU-mem",
        memory_total=1000 * MIB,
        memory_used=300 * MIB,
        memory_reserved=100 * MIB,
    )
    write_state(tmp_path / "s.json", FakeNvmlState(gpus=(gpu,)))
    out = run_probe(
        """
        import json, pynvml
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        v1 = pynvml.nvmlDeviceGetMemoryInfo(h)
        v2 = pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2)
        print(json.dumps({"v1": [v1.total, v1.used, v1.free],
                          "v2": [v2.total, v2.used, v2.reserved, v2.free]}))
        """,
        library,
        tmp_path / "s.json",
    )
    assert out["v1"] == [1000 * MIB, 400 * MIB, 600 * MIB]
    assert out["v2"] == [1000 * MIB, 300 * MIB, 100 * MIB, 600 * MIB]


def test_fail_switch_fails_only_the_named_call_on_that_gpu(library: Path, tmp_path: Path) -> None:
    state = FakeNvmlState(gpus=sample_gpus(2)).replace_gpu(
        1,
        fail={
            "nvmlDeviceGetUtilizationRates": NvmlReturn.GPU_IS_LOST,
            # No version suffix: covers nvmlDeviceGetMemoryInfo_v2 too.
            "nvmlDeviceGetMemoryInfo": NvmlReturn.UNKNOWN,
        },
    )
    write_state(tmp_path / "s.json", state)
    out = run_probe(
        """
        import json, pynvml
        pynvml.nvmlInit()
        def outcome(fn):
            try:
                fn()
                return "ok"
            except pynvml.NVMLError as error:
                return type(error).__name__
        result = {}
        for i in (0, 1):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            result[i] = [
                outcome(lambda: pynvml.nvmlDeviceGetUtilizationRates(h)),
                outcome(lambda: pynvml.nvmlDeviceGetMemoryInfo(h)),
                outcome(lambda: pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2)),
                outcome(lambda: pynvml.nvmlDeviceGetTemperature(h, 0)),
            ]
        print(json.dumps(result))
        """,
        library,
        tmp_path / "s.json",
    )
    assert out["0"] == ["ok", "ok", "ok", "ok"]
    assert out["1"] == ["NVMLError_GpuIsLost", "NVMLError_Unknown", "NVMLError_Unknown", "ok"]


INIT_OUTCOME = """
    import json, pynvml
    try:
        pynvml.nvmlInit()
        print(json.dumps({"init": "ok"}))
    except pynvml.NVMLError as error:
        print(json.dumps({"init": type(error).__name__}))
"""


def test_missing_state_file_looks_like_a_driver_that_is_not_loaded(
    library: Path, tmp_path: Path
) -> None:
    out = run_probe(INIT_OUTCOME, library, tmp_path / "absent.json")
    assert out == {"init": "NVMLError_DriverNotLoaded"}


def test_init_error_makes_nvml_init_fail_with_that_code(library: Path, tmp_path: Path) -> None:
    state = FakeNvmlState(gpus=sample_gpus(1), init_error=NvmlReturn.LIB_RM_VERSION_MISMATCH)
    write_state(tmp_path / "s.json", state)
    out = run_probe(INIT_OUTCOME, library, tmp_path / "s.json")
    assert out == {"init": "NVMLError_LibRmVersionMismatch"}


def test_xid_appended_after_registration_is_delivered_once(library: Path, tmp_path: Path) -> None:
    state = FakeNvmlState(gpus=sample_gpus(2)).replace_gpu(1, xid_errors=(13,))
    state_path = tmp_path / "s.json"
    write_state(state_path, state)
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import json, pynvml
                pynvml.nvmlInit()
                events = pynvml.nvmlEventSetCreate()
                for i in range(pynvml.nvmlDeviceGetCount()):
                    pynvml.nvmlDeviceRegisterEvents(pynvml.nvmlDeviceGetHandleByIndex(i),
                                                    pynvml.nvmlEventTypeXidCriticalError, events)
                def wait(ms):
                    try:
                        data = pynvml.nvmlEventSetWait_v2(events, ms)
                    except pynvml.NVMLError_Timeout:
                        return None
                    return [pynvml.nvmlDeviceGetIndex(data.device), data.eventData]
                print(json.dumps({"before": wait(50)}), flush=True)
                input()
                print(json.dumps({"after": [wait(10000), wait(50)]}), flush=True)
                """
            ),
        ],
        env=nvml_environment(library, state_path),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The XID logged before registration is history, not an event.
        assert json.loads(read_line(process)) == {"before": None}
        write_state(state_path, state.replace_gpu(1, xid_errors=(13, 79)))
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
        assert json.loads(read_line(process)) == {"after": [[1, 79], None]}
    finally:
        process.kill()
        process.communicate(timeout=PROBE_TIMEOUT)


def test_parser_skips_unknown_keys_and_decodes_escapes(library: Path, tmp_path: Path) -> None:
    # Hand-written, as a person might: unknown keys of every JSON type, escapes, defaults.
    (tmp_path / "s.json").write_text(
        r"""
        {"comment": "written by hand", "future": {"nested": [1, -2.5e3, true, null, "x"]},
         "gpus": [
           {"index": 0, "name": "Caf\u00e9 \"GPU\" \ud83d\ude80", "extra": [],
            "utilization_gpu": 5},
           {"uuid": "GPU-second"}
         ]}
        """
    )
    out = run_probe(
        """
        import json, pynvml
        pynvml.nvmlInit()
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            gpus.append([pynvml.nvmlDeviceGetName(h), pynvml.nvmlDeviceGetUUID(h),
                         pynvml.nvmlDeviceGetUtilizationRates(h).gpu])
        print(json.dumps({"driver": pynvml.nvmlSystemGetDriverVersion(), "gpus": gpus}))
        """,
        library,
        tmp_path / "s.json",
    )
    assert out["driver"] == "550.54.15"  # the default
    assert out["gpus"][0] == [
        'Café "GPU" \U0001f680',
        "GPU-00000000-0000-0000-0000-000000000000",
        5,
    ]
    assert out["gpus"][1] == ["NVIDIA Stand-in GPU", "GPU-second", 0]


def test_a_broken_rewrite_keeps_the_last_good_state(library: Path, tmp_path: Path) -> None:
    state_path = tmp_path / "s.json"
    write_state(state_path, FakeNvmlState(gpus=sample_gpus(1)).replace_gpu(0, utilization_gpu=9))
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import pynvml, pathlib
                pynvml.nvmlInit()
                h = pynvml.nvmlDeviceGetHandleByIndex(0)
                pathlib.Path({str(state_path)!r}).write_text('{{"gpus": [{{"name": ')
                print(pynvml.nvmlDeviceGetUtilizationRates(h).gpu)
                """
            ),
        ],
        env=nvml_environment(library, state_path),
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "9"
    assert "keeping the previous state" in result.stderr


def test_build_reuses_the_cached_library(library: Path) -> None:
    before = library.stat()
    again = build_library()
    assert again == library
    assert (again.stat().st_ino, again.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_build_without_a_compiler_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(FakeNvmlBuildError, match=r"not found on PATH.*install gcc"):
        build_library(tmp_path / "cache", compiler="no-such-compiler-for-suanli")


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"memory_used": 90 * 1024 * MIB}, "exceeds memory_total"),
        ({"utilization_gpu": 101}, "over 100%"),
        ({"fail": {"GetName": 3}}, "NVML call names"),
    ],
)
def test_gpu_rejects_states_the_library_cannot_mean(changes: dict, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        FakeNvmlState(gpus=sample_gpus(1)).replace_gpu(0, **changes)


def test_state_requires_gpus_in_index_order() -> None:
    first, second = sample_gpus(2)
    with pytest.raises(ValueError, match="index order"):
        FakeNvmlState(gpus=(second, first))
