"""A stand-in NVIDIA driver for machines without a GPU.

``libnvidia-ml.c`` beside this module is a small C library with the soname ``libnvidia-ml.so.1``
that answers the NVML calls suanli's exporter makes, from a JSON state file named by
``SUANLI_FAKE_NVML_STATE``. Because it is a real shared library, a process that puts its
directory on ``LD_LIBRARY_PATH`` runs nvidia-ml-py (pynvml) unchanged: the real ``CDLL`` load,
the real symbol lookups, the real ctypes struct layouts and error classes.

This module compiles the library once per source version into a cache directory and writes
state files. The state file is re-read by the library whenever it changes, so a test rewrites
it (atomically, with :func:`write_state`) to change what a running exporter sees.

Typical use::

    library = build_library()
    write_state(state_path, FakeNvmlState(gpus=sample_gpus(2)))
    subprocess.run([...], env=nvml_environment(library, state_path))
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from suanli.errors import UserFacingError

STATE_ENV: Final = "SUANLI_FAKE_NVML_STATE"
SONAME: Final = "libnvidia-ml.so.1"
SOURCE: Final = Path(__file__).with_name("libnvidia-ml.c")

# Limits compiled into the C library; checked here so a bad state fails in Python, loudly.
MAX_GPUS: Final = 64
MAX_XIDS: Final = 64
MAX_FAILS: Final = 16
_MAX_TEXT: Final = 95
_MAX_BUS_ID: Final = 31

_CFLAGS: Final = (
    "-std=c11",
    "-O2",
    "-Wall",
    "-Wextra",
    "-fPIC",
    "-fvisibility=hidden",
    "-pthread",
    "-shared",
    f"-Wl,-soname,{SONAME}",
)
_MIB: Final = 1024 * 1024
_GIB: Final = 1024 * _MIB
# UUIDs of stand-in GPUs are derived from this namespace, so they are stable across runs.
_UUID_NAMESPACE: Final = uuid.UUID("5d0e3a8c-4a51-4c39-9a0b-7e4c2b1f6a10")


class NvmlReturn(enum.IntEnum):
    """NVML return codes (nvml.h values) to use in :attr:`FakeGpu.fail` and ``init_error``."""

    SUCCESS = 0
    UNINITIALIZED = 1
    INVALID_ARGUMENT = 2
    NOT_SUPPORTED = 3
    NO_PERMISSION = 4
    NOT_FOUND = 6
    INSUFFICIENT_SIZE = 7
    DRIVER_NOT_LOADED = 9
    TIMEOUT = 10
    GPU_IS_LOST = 15
    RESET_REQUIRED = 16
    LIB_RM_VERSION_MISMATCH = 18
    NO_DATA = 21
    UNKNOWN = 999


class FakeNvmlBuildError(UserFacingError):
    """The stand-in library could not be compiled."""


def default_cache_dir() -> Path:
    """Where builds are kept: ``$XDG_CACHE_HOME/suanli/fakenvml``, by default under ``~/.cache``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "suanli" / "fakenvml"


def build_library(cache_dir: Path | None = None, *, compiler: str | None = None) -> Path:
    """Compile the stand-in library unless this source version is already built.

    Args:
        cache_dir: Parent of the per-version build directories; :func:`default_cache_dir` if None.
        compiler: C compiler to run; ``$CC`` or ``gcc`` if None.

    Returns:
        The path of ``libnvidia-ml.so.1``; put its parent directory on ``LD_LIBRARY_PATH``.

    Raises:
        FakeNvmlBuildError: No compiler, or the compilation failed.
    """
    source = SOURCE.read_bytes()
    # Keyed by source and flags, so an edited library never reuses a stale build.
    digest = hashlib.sha256(source + "\0".join(_CFLAGS).encode()).hexdigest()[:16]
    target_dir = (cache_dir or default_cache_dir()) / digest
    library = target_dir / SONAME
    if library.is_file():
        return library

    cc = compiler or os.environ.get("CC") or "gcc"
    cc_path = shutil.which(cc)
    if cc_path is None:
        raise FakeNvmlBuildError(
            f"C compiler {cc!r} not found on PATH: the stand-in NVIDIA library is compiled from"
            " C at first use; install gcc (e.g. apt-get install gcc) or set CC"
        )
    target_dir.mkdir(parents=True, exist_ok=True)
    # Compile beside the target and rename: a concurrent build or reader never sees half a file.
    handle, partial = tempfile.mkstemp(dir=target_dir, prefix=".build-", suffix=".so")
    os.close(handle)
    try:
        result = subprocess.run(
            [cc_path, *_CFLAGS, "-o", partial, str(SOURCE)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise FakeNvmlBuildError(
                f"compiling {SOURCE.name} with {cc} failed:\n{result.stderr.strip()}"
            )
        os.replace(partial, library)
    finally:
        Path(partial).unlink(missing_ok=True)
    return library


@dataclass(frozen=True)
class FakeGpu:
    """One stand-in GPU, as the library reports it. Memory in bytes, power in milliwatts."""

    index: int
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    pci_bus_id: str = ""  # empty: derived from the index
    memory_total: int = 80 * _GIB
    memory_used: int = 0
    memory_reserved: int = 512 * _MIB
    utilization_gpu: int = 0
    utilization_memory: int = 0
    temperature: int = 35
    power_usage: int = 70_000
    ecc_sbe_volatile: int = 0
    ecc_dbe_volatile: int = 0
    ecc_sbe_aggregate: int = 0
    ecc_dbe_aggregate: int = 0
    xid_errors: tuple[int, ...] = ()
    # NVML call name (e.g. "nvmlDeviceGetUtilizationRates") -> error code it returns for this GPU.
    fail: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.index < MAX_GPUS:
            problems.append(f"index {self.index} outside 0..{MAX_GPUS - 1}")
        limits = {"uuid": _MAX_TEXT, "name": _MAX_TEXT, "pci_bus_id": _MAX_BUS_ID}
        for name, limit in limits.items():
            if len(getattr(self, name).encode()) > limit:
                problems.append(f"{name} longer than {limit} bytes")
        numbers = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in numbers.items():
            if isinstance(value, int) and value < 0:
                problems.append(f"{name} is negative")
        for name in ("utilization_gpu", "utilization_memory"):
            if numbers[name] > 100:
                problems.append(f"{name} {numbers[name]} is over 100%")
        if self.memory_used + self.memory_reserved > self.memory_total:
            problems.append("memory_used + memory_reserved exceeds memory_total")
        if any(code < 0 for code in self.xid_errors):
            problems.append("xid_errors holds a negative code")
        if len(self.xid_errors) > MAX_XIDS:
            problems.append(f"more than {MAX_XIDS} xid_errors")
        if len(self.fail) > MAX_FAILS or not all(c.startswith("nvml") for c in self.fail):
            problems.append(f"fail takes at most {MAX_FAILS} NVML call names (nvml...)")
        if problems:
            raise ValueError(f"FakeGpu {self.index}: " + "; ".join(problems))

    def to_json(self) -> dict[str, object]:
        """The GPU as the state file's ``gpus[i]`` object."""
        data = dataclasses.asdict(self)
        data["xid_errors"] = list(self.xid_errors)
        data["fail"] = {call: int(code) for call, code in self.fail.items()}
        if not self.pci_bus_id:
            del data["pci_bus_id"]
        return data


@dataclass(frozen=True)
class FakeNvmlState:
    """The whole state file: the driver and its GPUs (listed in index order)."""

    gpus: tuple[FakeGpu, ...]
    driver_version: str = "550.54.15"
    nvml_version: str = "12.550.54.15"
    cuda_driver_version: int = 12040
    # Non-zero: nvmlInit fails with this code (e.g. NvmlReturn.LIB_RM_VERSION_MISMATCH).
    init_error: int = 0

    def __post_init__(self) -> None:
        if len(self.gpus) > MAX_GPUS:
            raise ValueError(f"the stand-in library holds at most {MAX_GPUS} GPUs")
        if [gpu.index for gpu in self.gpus] != list(range(len(self.gpus))):
            raise ValueError("gpus must be listed in index order 0, 1, 2, ...")
        if len({gpu.uuid for gpu in self.gpus}) != len(self.gpus):
            raise ValueError("GPU UUIDs must be unique")

    def to_json(self) -> dict[str, object]:
        """The state as the JSON document the library reads."""
        return {
            "driver_version": self.driver_version,
            "nvml_version": self.nvml_version,
            "cuda_driver_version": self.cuda_driver_version,
            "init_error": int(self.init_error),
            "gpus": [gpu.to_json() for gpu in self.gpus],
        }

    def replace_gpu(self, index: int, **changes: Any) -> FakeNvmlState:
        """A copy with ``changes`` applied to GPU ``index`` (e.g. ``utilization_gpu=90``)."""
        gpus = list(self.gpus)
        gpus[index] = dataclasses.replace(gpus[index], **changes)
        return dataclasses.replace(self, gpus=tuple(gpus))


def sample_gpus(
    count: int,
    *,
    seed: str = "node",
    name: str = "NVIDIA H100 80GB HBM3",
    memory_total: int = 80 * _GIB,
) -> tuple[FakeGpu, ...]:
    """``count`` idle GPUs of one model, with UUIDs stable for a given ``seed`` (e.g. node name)."""
    return tuple(
        FakeGpu(
            index=i,
            uuid=f"GPU-{uuid.uuid5(_UUID_NAMESPACE, f'{seed}/{i}')}",
            name=name,
            pci_bus_id=f"00000000:{0x18 + 0x10 * i:02X}:00.0",
            memory_total=memory_total,
        )
        for i in range(count)
    )


def write_state(path: Path, state: FakeNvmlState) -> None:
    """Write the state file atomically (temporary file, then rename over the old one).

    The library notices the new file by its inode, so even two writes within one timestamp
    tick are both seen. No fsync: readers are processes on this host, not a crash-survivor.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(state.to_json(), stream, ensure_ascii=False, indent=1)
        os.replace(partial, path)
    finally:
        Path(partial).unlink(missing_ok=True)


def nvml_environment(
    library: Path, state_path: Path, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Environment for a child process that should load the stand-in instead of a real driver.

    Args:
        library: The path :func:`build_library` returned.
        state_path: The state file the child's library reads.
        base: The environment to extend; ``os.environ`` if None.
    """
    env = dict(os.environ if base is None else base)
    # First on the search path, so the stand-in wins over any libnvidia-ml.so.1 elsewhere.
    inherited = env.get("LD_LIBRARY_PATH")
    env["LD_LIBRARY_PATH"] = str(library.parent) + (f":{inherited}" if inherited else "")
    env[STATE_ENV] = str(state_path)
    return env
