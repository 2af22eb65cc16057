"""Peak FLOP/s and memory of the devices the planner knows, and an estimate for the local CPU."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Device:
    name: str
    memory_gb: float
    # Dense peak FLOP/s: 16-bit tensor cores, and fp32 without tensor cores.
    peak_flops_bf16: float
    peak_flops_fp32: float

    def peak_flops(self, precision: str) -> float:
        return self.peak_flops_fp32 if precision == "32-true" else self.peak_flops_bf16


TERA = 1e12
# Dense (no sparsity) figures from the vendors' data sheets: A100 SXM, H100 SXM5, H200 SXM.
GPUS: dict[str, Device] = {
    "A100_40GB": Device("A100_40GB", 40.0, 312 * TERA, 19.5 * TERA),
    "A100_80GB": Device("A100_80GB", 80.0, 312 * TERA, 19.5 * TERA),
    "H100": Device("H100", 80.0, 989 * TERA, 67 * TERA),
    "H200": Device("H200", 141.0, 989 * TERA, 67 * TERA),
}


def local_cpu() -> Device:
    """This machine's CPU: cores x clock x vector FLOPs per cycle, and its RAM.

    An estimate from /proc/cpuinfo (no benchmark, so planning stays instant): two FMA units of
    AVX-512 give 64 fp32 FLOPs per cycle per core, AVX2 with FMA 32, otherwise 8. bf16 is taken
    as twice fp32 only with AVX512_BF16 or AMX.
    """
    cores = os.cpu_count() or 1
    text = _read("/proc/cpuinfo")
    found = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
    flags = set(found.group(1).split()) if found else set()
    mhz = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", text, re.M)]
    ghz = (max(mhz) / 1000.0) if mhz else 2.5
    if "avx512f" in flags:
        per_cycle = 64
    elif "avx2" in flags and "fma" in flags:
        per_cycle = 32
    else:
        per_cycle = 8
    fp32 = cores * ghz * 1e9 * per_cycle
    bf16 = fp32 * 2 if {"avx512_bf16", "amx_bf16"} & flags else fp32
    return Device("cpu", _ram_gb(), bf16, fp32)


def device_for(name: str) -> Device:
    return local_cpu() if name == "cpu" else GPUS[name]


def _ram_gb() -> float:
    match = re.search(r"^MemTotal:\s*(\d+) kB", _read("/proc/meminfo"), re.M)
    if match:
        return int(match.group(1)) / 2**20
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return pages / 2**30


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""
