"""Which numeric format a transformer runs in, and why (stated in ``run.json``).

- ``fp32``: the ONNX graph on ONNX Runtime (no torch), everywhere.
- ``int8``: ONNX Runtime's dynamic quantisation of the encoder's MatMuls.
- ``bf16``: the torch module with its encoder in bfloat16 (ONNX Runtime has no x86 bf16
  kernels); fast on CPUs with AMX or AVX-512 bf16 instructions.

``auto`` picks a faster format only where the CPU has the instructions for it *and* the model
folder lists it among the formats that passed its accuracy check (``"formats"`` in
``revsat_model.json``, set after ``revsat evaluate NAME@fp32 NAME@FORMAT``). bf16 also needs
an input large enough to repay importing torch (about 4 s more start-up than ONNX Runtime's):
on a 50-review export fp32 finishes first.
"""

from __future__ import annotations

from pipeline.hardware import FAST_FORMATS, cpu_flags

#: Formats a run can ask for by name.
FORMATS = ("fp32", "int8", "bf16")


def choose_format(requested: str, meta: dict, flags: set[str] | frozenset[str] | None = None,
                  input_bytes: int | None = None,
                  bf16_min_bytes: int = 100_000) -> tuple[str, str]:
    """The numeric format to run and why.

    ``requested``: ``auto`` or one of :data:`FORMATS`; ``meta``: the model folder's
    ``revsat_model.json``; ``flags``: the CPU's (default: this machine's); ``input_bytes``: the
    size of the run's input files (None: unknown, taken as large, as for an API caller
    scoring a frame). Under ``auto`` the order is bf16, int8, fp32, each where the CPU has the
    instructions and the model's checked ``formats`` list it (bf16 also where the input has
    at least ``bf16_min_bytes``)."""
    if requested not in ("auto", *FORMATS):
        raise ValueError(f"numeric format {requested!r}: use auto, {', '.join(FORMATS)}")
    if requested != "auto":
        return requested, "requested"
    flags = cpu_flags() if flags is None else flags
    approved = meta.get("formats") or ["fp32"]
    notes = []
    for fmt in ("bf16", "int8"):
        has = [f for f in FAST_FORMATS[fmt] if f in flags]
        if not has:
            continue
        if fmt not in approved:
            notes.append(f"CPU has {has[0]}, but {fmt} is not among the model's checked "
                         f"formats {approved}")
            continue
        if fmt == "bf16" and input_bytes is not None and input_bytes < bf16_min_bytes:
            notes.append(f"CPU has {has[0]} and bf16 passed the model's accuracy check, but "
                         f"the input ({input_bytes:,} bytes) is under {bf16_min_bytes:,} bytes, "
                         "too small to repay importing torch")
            continue
        return fmt, f"CPU has {has[0]}; {fmt} passed the model's accuracy check"
    return "fp32", "; ".join(notes) or "fallback (no bf16 or int8 instructions)"
