"""Reading GPUs through NVML (nvidia-ml-py) into plain, typed values.

The exporter needs three things from NVML: a clear refusal to start when there is no driver, a
reading of every GPU that survives the failure of any single call, and the XID errors, which
NVML reports only as events. :class:`NvmlReader` does the first two: a failed call is counted
under its NVML C name in :class:`ErrorCounts` and leaves that one value empty, so the metric is
skipped rather than the scrape failed. A call a GPU does not support (NVML_ERROR_NOT_SUPPORTED,
e.g. ECC on a board without it) is a capability, not a failure: it is not counted, and not
tried again on that GPU. :class:`XidWatcher` does the third, in a thread of its own, since
waiting for events blocks (pynvml's ctypes calls release the GIL while they wait).

Nothing here is thread-safe beyond what is said: ``NvmlReader.read`` must not run concurrently
with itself (the exporter's sampler guarantees that), while ``ErrorCounts`` and ``XidWatcher``
are shared across threads and lock accordingly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import pynvml

from suanli.errors import UserFacingError

log = logging.getLogger(__name__)

T = TypeVar("T")

# XID events are waited for in slices this long, so stop() takes effect within one slice.
XID_WAIT_MS: Final = 250


class NvmlUnavailableError(UserFacingError):
    """NVML cannot be used on this machine: no library, no driver, or a driver mismatch."""


@dataclass(frozen=True)
class SystemInfo:
    """What the driver says about itself at start."""

    driver_version: str
    nvml_version: str
    gpu_count: int


@dataclass(frozen=True)
class GpuIdentity:
    """The facts about a GPU that do not change while the driver is loaded."""

    index: int
    uuid: str
    name: str
    pci_bus_id: str  # empty when NVML could not say


@dataclass(frozen=True)
class MemoryInfo:
    """Framebuffer memory in bytes. ``reserved`` is None with drivers older than memory v2."""

    total: int
    used: int
    free: int
    reserved: int | None


@dataclass(frozen=True)
class GpuReading:
    """One GPU at one moment; None where the call failed or is not supported."""

    identity: GpuIdentity
    utilization_gpu: int | None = None
    utilization_memory: int | None = None
    memory: MemoryInfo | None = None
    temperature_c: int | None = None
    power_mw: int | None = None
    ecc_sbe_volatile: int | None = None
    ecc_dbe_volatile: int | None = None
    last_xid: int | None = None  # 0: none seen; None: XID events not watched on this GPU


@dataclass(frozen=True)
class NodeReading:
    """All GPUs of the node at one moment."""

    read_at: float  # wall clock (epoch seconds) when the reading started
    duration_s: float
    enumerated: bool  # False when NVML could not even count the GPUs
    gpus: tuple[GpuReading, ...]


class ErrorCounts:
    """Failed NVML calls by C function name, cumulative since start; safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, call: str) -> None:
        with self._lock:
            self._counts[call] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


def _text(value: object) -> str:
    # pynvml returns str from most string getters but raw bytes from ctypes struct fields.
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _error_code(error: Exception) -> int:
    return int(getattr(error, "value", pynvml.NVML_ERROR_UNKNOWN))


class NvmlReader:
    """Initialises NVML and reads every GPU on demand."""

    def __init__(self, errors: ErrorCounts) -> None:
        self._errors = errors
        self._devices: dict[int, tuple[Any, GpuIdentity]] = {}
        self._unsupported: set[tuple[int, str]] = set()
        self._warned: set[tuple[int, str, int]] = set()
        self._memory_v2 = True
        self._xids: XidWatcher | None = None

    def open(self) -> SystemInfo:
        """Initialise NVML and look at the driver.

        Raises:
            NvmlUnavailableError: with a one-line message saying what is missing.
        """
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as error:
            raise NvmlUnavailableError(_init_failure_message(error)) from None
        try:
            info = SystemInfo(
                driver_version=_text(pynvml.nvmlSystemGetDriverVersion()),
                nvml_version=_text(pynvml.nvmlSystemGetNVMLVersion()),
                gpu_count=int(pynvml.nvmlDeviceGetCount()),
            )
        except pynvml.NVMLError as error:
            self.close()
            raise NvmlUnavailableError(f"NVML started but cannot list the GPUs: {error}") from None
        return info

    def watch_xids(self, watcher: XidWatcher) -> None:
        """Register every GPU known now with ``watcher`` and merge its findings into readings."""
        for index in range(self._count() or 0):
            self._device(index)
        watcher.start({index: handle for index, (handle, _) in self._devices.items()})
        self._xids = watcher

    def close(self) -> None:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError as error:
            log.debug("nvmlShutdown failed: %s", error)

    def read(self) -> NodeReading:
        """Read every GPU. Never raises for NVML errors: they are counted and left empty."""
        read_at = time.time()
        started = time.monotonic()
        count = self._count()
        gpus = []
        for index in range(count or 0):
            device = self._device(index)
            if device is not None:
                gpus.append(self._read_gpu(*device))
        return NodeReading(
            read_at=read_at,
            duration_s=time.monotonic() - started,
            enumerated=count is not None,
            gpus=tuple(gpus),
        )

    def _count(self) -> int | None:
        count = self._attempt(-1, "nvmlDeviceGetCount_v2", pynvml.nvmlDeviceGetCount)
        return None if count is None else int(count)

    def _attempt(self, index: int, call: str, fn: Callable[[], T]) -> T | None:
        """Run one NVML call for GPU ``index`` (-1: not about a GPU); None if it failed."""
        if (index, call) in self._unsupported:
            return None
        try:
            return fn()
        except pynvml.NVMLError as error:
            code = _error_code(error)
            if code == pynvml.NVML_ERROR_NOT_SUPPORTED:
                log.info("GPU %d does not support %s; not asking again", index, call)
                self._unsupported.add((index, call))
                return None
            self._errors.add(call)
            # Warn once per kind of failure; a lost GPU would otherwise log every scrape.
            level = logging.DEBUG if (index, call, code) in self._warned else logging.WARNING
            self._warned.add((index, call, code))
            log.log(level, "%s failed on GPU %d: %s", call, index, error)
            return None

    def _device(self, index: int) -> tuple[Any, GpuIdentity] | None:
        """The handle and identity of GPU ``index``, cached once its UUID and name are known."""
        cached = self._devices.get(index)
        if cached is not None:
            return cached
        handle = self._attempt(
            index, "nvmlDeviceGetHandleByIndex_v2", lambda: pynvml.nvmlDeviceGetHandleByIndex(index)
        )
        if handle is None:
            return None
        uuid = self._attempt(index, "nvmlDeviceGetUUID", lambda: pynvml.nvmlDeviceGetUUID(handle))
        name = self._attempt(index, "nvmlDeviceGetName", lambda: pynvml.nvmlDeviceGetName(handle))
        if uuid is None or name is None:
            return None  # no series without a UUID and model: try again next reading
        pci = self._attempt(
            index, "nvmlDeviceGetPciInfo_v3", lambda: pynvml.nvmlDeviceGetPciInfo(handle)
        )
        identity = GpuIdentity(
            index=index,
            uuid=_text(uuid),
            name=_text(name),
            pci_bus_id=_text(pci.busId) if pci is not None else "",
        )
        self._devices[index] = (handle, identity)
        return handle, identity

    def _read_gpu(self, handle: Any, identity: GpuIdentity) -> GpuReading:
        index = identity.index
        utilization = self._attempt(
            index,
            "nvmlDeviceGetUtilizationRates",
            lambda: pynvml.nvmlDeviceGetUtilizationRates(handle),
        )
        temperature = self._attempt(
            index,
            "nvmlDeviceGetTemperature",
            lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
        )
        power = self._attempt(
            index, "nvmlDeviceGetPowerUsage", lambda: pynvml.nvmlDeviceGetPowerUsage(handle)
        )
        return GpuReading(
            identity=identity,
            utilization_gpu=None if utilization is None else int(utilization.gpu),
            utilization_memory=None if utilization is None else int(utilization.memory),
            memory=self._memory(handle, index),
            temperature_c=None if temperature is None else int(temperature),
            power_mw=None if power is None else int(power),
            ecc_sbe_volatile=self._ecc(handle, index, pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED),
            ecc_dbe_volatile=self._ecc(handle, index, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
            last_xid=None if self._xids is None else self._xids.last_xid(index),
        )

    def _memory(self, handle: Any, index: int) -> MemoryInfo | None:
        if self._memory_v2:
            try:
                info = pynvml.nvmlDeviceGetMemoryInfo(handle, version=pynvml.nvmlMemory_v2)
            except pynvml.NVMLError as error:
                if _error_code(error) not in (
                    pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
                    pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH,
                ):
                    self._errors.add("nvmlDeviceGetMemoryInfo_v2")
                    return None
                # An older driver: fall back to v1, where used includes reserved memory.
                log.info("driver has no nvmlDeviceGetMemoryInfo_v2; reserved memory unknown")
                self._memory_v2 = False
            else:
                return MemoryInfo(
                    total=int(info.total),
                    used=int(info.used),
                    free=int(info.free),
                    reserved=int(info.reserved),
                )
        info = self._attempt(
            index, "nvmlDeviceGetMemoryInfo", lambda: pynvml.nvmlDeviceGetMemoryInfo(handle)
        )
        if info is None:
            return None
        return MemoryInfo(
            total=int(info.total), used=int(info.used), free=int(info.free), reserved=None
        )

    def _ecc(self, handle: Any, index: int, error_type: int) -> int | None:
        count = self._attempt(
            index,
            "nvmlDeviceGetTotalEccErrors",
            lambda: pynvml.nvmlDeviceGetTotalEccErrors(
                handle, error_type, pynvml.NVML_VOLATILE_ECC
            ),
        )
        return None if count is None else int(count)


def _init_failure_message(error: Exception) -> str:
    code = _error_code(error)
    if code == pynvml.NVML_ERROR_LIBRARY_NOT_FOUND:
        return (
            "cannot load libnvidia-ml.so.1 (the NVIDIA driver's NVML library): run on a GPU node"
            " with the NVIDIA driver installed, in a container started by the NVIDIA runtime"
        )
    if code == pynvml.NVML_ERROR_DRIVER_NOT_LOADED:
        return "NVML found no loaded NVIDIA driver on this machine (nvmlInit: Driver Not Loaded)"
    if code == pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH:
        return "NVML library and kernel driver versions differ (driver upgraded without a reboot?)"
    if code == pynvml.NVML_ERROR_NO_PERMISSION:
        return "no permission to open the NVIDIA devices (/dev/nvidia*)"
    return f"NVML initialisation failed: {error}"


class XidWatcher:
    """Follows NVML's XID critical-error events and remembers the last code per GPU.

    dcgm-exporter's DCGM_FI_DEV_XID_ERRORS is the code of the last XID seen, so that is what is
    kept. GPUs that cannot be registered for XID events are simply not watched (``last_xid``
    answers None for them), so the exporter leaves their XID series out rather than claim 0.
    """

    def __init__(self, errors: ErrorCounts, *, wait_ms: int = XID_WAIT_MS) -> None:
        self._errors = errors
        self._wait_ms = wait_ms
        self._lock = threading.Lock()
        self._last: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._event_set: Any = None

    def start(self, handles: Mapping[int, Any]) -> None:
        """Register ``handles`` (GPU index -> NVML handle) and start following their events."""
        event_set = self._try("nvmlEventSetCreate", pynvml.nvmlEventSetCreate)
        if event_set is None:
            return
        for index, handle in handles.items():
            try:
                pynvml.nvmlDeviceRegisterEvents(
                    handle, pynvml.nvmlEventTypeXidCriticalError, event_set
                )
            except pynvml.NVMLError as error:
                self._note_failure("nvmlDeviceRegisterEvents", error)
                continue
            with self._lock:
                self._last[index] = 0
        self._event_set = event_set
        if not self._last:
            self._free()
            return
        self._thread = threading.Thread(target=self._run, name="xid-events", daemon=True)
        self._thread.start()

    def last_xid(self, index: int) -> int | None:
        with self._lock:
            return self._last.get(index)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._wait_ms / 1000 + 2.0)
            if self._thread.is_alive():
                return  # still inside NVML: freeing the set under it would be unsafe
        self._free()

    def _free(self) -> None:
        if self._event_set is not None:
            self._try("nvmlEventSetFree", lambda: pynvml.nvmlEventSetFree(self._event_set))
            self._event_set = None

    def _try(self, call: str, fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except pynvml.NVMLError as error:
            self._note_failure(call, error)
            return None

    def _note_failure(self, call: str, error: Exception) -> None:
        # Drivers without event support answer NOT_SUPPORTED: expected, so not an error.
        if _error_code(error) != pynvml.NVML_ERROR_NOT_SUPPORTED:
            self._errors.add(call)
            log.warning("%s failed: %s; XID errors not watched there", call, error)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = pynvml.nvmlEventSetWait_v2(self._event_set, self._wait_ms)
            except pynvml.NVMLError as error:
                if _error_code(error) != pynvml.NVML_ERROR_TIMEOUT:
                    self._errors.add("nvmlEventSetWait_v2")
                    log.warning("nvmlEventSetWait_v2 failed: %s", error)
                    self._stop.wait(1.0)  # back off: a broken event set would spin
                continue
            if not int(data.eventType) & pynvml.nvmlEventTypeXidCriticalError:
                continue
            try:
                index = int(pynvml.nvmlDeviceGetIndex(data.device))
            except pynvml.NVMLError as error:
                self._note_failure("nvmlDeviceGetIndex", error)
                continue
            log.warning("GPU %d reported XID %d", index, int(data.eventData))
            with self._lock:
                self._last[index] = int(data.eventData)
