"""GPU metrics through NVML (nvidia-ml-py).

Every field may be unavailable (unsupported by the card, no permission, a vGPU): it is then
None and the panel shows N/A. A host without a usable NVML is one of a few explained states,
never an exception.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

from .processes import process_name

T = TypeVar("T")


class NvmlState(enum.Enum):
    OK = "ok"
    PACKAGE_MISSING = "package missing"  # the nvidia-ml-py Python package is not installed
    LIBRARY_MISSING = "library missing"  # libnvidia-ml.so.1 not found: no driver installed
    NO_DRIVER = "no driver"  # the library loads, but the kernel driver is not loaded
    DRIVER_MISMATCH = "driver mismatch"  # kernel module and user-space library versions differ
    NO_PERMISSION = "no permission"
    NO_GPU = "no gpu"  # NVML works and sees no device
    ERROR = "error"


EXPLANATIONS = {
    NvmlState.PACKAGE_MISSING: "the Python package nvidia-ml-py is not installed, so GPU metrics "
                               "cannot be read (pip install nvidia-ml-py)",
    NvmlState.LIBRARY_MISSING: "no NVIDIA driver on this host: the NVML library (libnvidia-ml.so.1) "
                               "was not found. Install the NVIDIA driver to see GPU metrics",
    NvmlState.NO_DRIVER: "the NVIDIA kernel driver is not loaded: the NVML library is installed but "
                         "no driver answers. Check `nvidia-smi` and `lsmod | grep nvidia`",
    NvmlState.DRIVER_MISMATCH: "driver/library version mismatch: the loaded NVIDIA kernel module and "
                               "the installed user-space driver differ (usually a driver upgrade "
                               "without a reboot). Reboot the host or reload the nvidia modules",
    NvmlState.NO_PERMISSION: "NVML denied access to the GPUs: run as a user who may open /dev/nvidia*",
    NvmlState.NO_GPU: "the NVIDIA driver is loaded but sees no GPU",
}


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    name: str | None
    used_memory_bytes: int | None


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str | None = None
    utilization_pct: int | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    temperature_c: int | None = None
    power_draw_w: float | None = None
    power_limit_w: float | None = None
    sm_clock_mhz: int | None = None
    memory_clock_mhz: int | None = None
    pcie_tx_kib_s: int | None = None
    pcie_rx_kib_s: int | None = None
    ecc_corrected: int | None = None  # volatile counts: since the driver loaded
    ecc_uncorrected: int | None = None
    processes: tuple[GpuProcess, ...] = ()  # a10tts processes only


@dataclass(frozen=True)
class GpuSnapshot:
    state: NvmlState
    message: str = ""  # why there are no metrics; empty when state is OK
    driver_version: str | None = None
    gpus: tuple[GpuInfo, ...] = ()


def _import_pynvml() -> ModuleType | None:
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


class NvmlSource:
    """Reads every GPU once per call; initialises NVML lazily and retries after a failure."""

    def __init__(self, nvml: ModuleType | None):
        self._nvml = nvml  # the pynvml module; None when the package is missing
        self._initialized = False

    @classmethod
    def system(cls) -> NvmlSource:
        return cls(_import_pynvml())

    def read(self, service_pids: Collection[int] = ()) -> GpuSnapshot:
        nv = self._nvml
        if nv is None:
            return GpuSnapshot(NvmlState.PACKAGE_MISSING, EXPLANATIONS[NvmlState.PACKAGE_MISSING])
        try:
            if not self._initialized:
                nv.nvmlInit()
                self._initialized = True
            count = nv.nvmlDeviceGetCount()
        except nv.NVMLError as exc:
            self._initialized = False  # the driver may come (back) later: init again next time
            return self._failure(exc)
        driver = self._field(_text, nv.nvmlSystemGetDriverVersion)
        if count == 0:
            return GpuSnapshot(NvmlState.NO_GPU, EXPLANATIONS[NvmlState.NO_GPU], driver)
        gpus = tuple(self._gpu(i, frozenset(service_pids)) for i in range(count))
        return GpuSnapshot(NvmlState.OK, "", driver, gpus)

    def close(self) -> None:
        if self._initialized:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass
            self._initialized = False

    def _failure(self, exc: Any) -> GpuSnapshot:
        nv = self._nvml
        state = {
            nv.NVML_ERROR_LIBRARY_NOT_FOUND: NvmlState.LIBRARY_MISSING,
            nv.NVML_ERROR_DRIVER_NOT_LOADED: NvmlState.NO_DRIVER,
            nv.NVML_ERROR_LIB_RM_VERSION_MISMATCH: NvmlState.DRIVER_MISMATCH,
            nv.NVML_ERROR_NO_PERMISSION: NvmlState.NO_PERMISSION,
        }.get(getattr(exc, "value", None), NvmlState.ERROR)
        message = EXPLANATIONS.get(state, f"NVML failed: {exc}")
        return GpuSnapshot(state, message)

    def _field(self, convert: Callable[[Any], T], fn: Callable[..., Any], *args: Any) -> T | None:
        """One NVML query; None when this card or driver cannot answer it."""
        try:
            return convert(fn(*args))
        except self._nvml.NVMLError:
            return None

    def _gpu(self, index: int, service_pids: frozenset[int]) -> GpuInfo:
        nv = self._nvml
        handle = self._field(lambda h: h, nv.nvmlDeviceGetHandleByIndex, index)
        if handle is None:
            return GpuInfo(index)
        field = self._field
        memory = field(lambda m: m, nv.nvmlDeviceGetMemoryInfo, handle)
        ecc = nv.NVML_VOLATILE_ECC
        return GpuInfo(
            index=index,
            name=field(_text, nv.nvmlDeviceGetName, handle),
            utilization_pct=field(lambda u: int(u.gpu), nv.nvmlDeviceGetUtilizationRates, handle),
            memory_used_bytes=int(memory.used) if memory is not None else None,
            memory_total_bytes=int(memory.total) if memory is not None else None,
            temperature_c=field(int, nv.nvmlDeviceGetTemperature, handle, nv.NVML_TEMPERATURE_GPU),
            power_draw_w=field(_milliwatts, nv.nvmlDeviceGetPowerUsage, handle),
            power_limit_w=field(_milliwatts, nv.nvmlDeviceGetEnforcedPowerLimit, handle),
            sm_clock_mhz=field(int, nv.nvmlDeviceGetClockInfo, handle, nv.NVML_CLOCK_SM),
            memory_clock_mhz=field(int, nv.nvmlDeviceGetClockInfo, handle, nv.NVML_CLOCK_MEM),
            pcie_tx_kib_s=field(int, nv.nvmlDeviceGetPcieThroughput, handle, nv.NVML_PCIE_UTIL_TX_BYTES),
            pcie_rx_kib_s=field(int, nv.nvmlDeviceGetPcieThroughput, handle, nv.NVML_PCIE_UTIL_RX_BYTES),
            ecc_corrected=field(int, nv.nvmlDeviceGetTotalEccErrors, handle,
                                nv.NVML_MEMORY_ERROR_TYPE_CORRECTED, ecc),
            ecc_uncorrected=field(int, nv.nvmlDeviceGetTotalEccErrors, handle,
                                  nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, ecc),
            processes=tuple(
                GpuProcess(int(p.pid), process_name(int(p.pid)), _optional_int(p.usedGpuMemory))
                for p in field(list, nv.nvmlDeviceGetComputeRunningProcesses, handle) or ()
                if int(p.pid) in service_pids
            ),
        )


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _milliwatts(value: int) -> float:
    return value / 1000.0


def _optional_int(value: Any) -> int | None:
    # pynvml reports "not available" process memory as None.
    return None if value is None else int(value)
