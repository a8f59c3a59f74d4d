"""What the processor can do, read once from ``/proc/cpuinfo`` (Linux) — the numeric formats
training and inference choose from."""

from __future__ import annotations

import functools
from pathlib import Path

#: CPU flags that make a format fast, by format.
FAST_FORMATS: dict[str, tuple[str, ...]] = {"bf16": ("amx_bf16", "avx512_bf16"),
                                            "int8": ("amx_int8", "avx512_vnni", "avx_vnni")}


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The processor's feature flags (empty where ``/proc/cpuinfo`` cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_model() -> str:
    """The processor's model name (``lscpu``'s "Model name"), for figures that depend on it."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or "unknown"


def has_fast(fmt: str, flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU has an instruction set that makes ``fmt`` (``bf16``/``int8``) fast."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in FAST_FORMATS.get(fmt, ()))


def release_free_heap() -> None:
    """Hand the C heap's free pages back to the system (``malloc_trim(0)``; glibc keeps them
    otherwise). A no-op where the C library is not glibc."""
    import ctypes

    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)
