"""Timing and memory helpers of ``gpu_check.py``: device-accurate seconds, interleaved A B B A rounds, ratios.

On a GPU the times are CUDA-event times and the memory is the CUDA allocator's peak; on a CPU, wall time and no
memory figure (``None``).
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable

import torch

GB = 1024**3


def device_seconds(fn: Callable[[], None], device: torch.device) -> float:
    """Seconds ``fn`` takes: CUDA-event time on a GPU (queue drained first), wall time on a CPU."""
    if device.type != "cuda":
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    torch.cuda.synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def peak_gb(fn: Callable[[], None], device: torch.device) -> tuple[float, float] | None:
    """``(peak allocated during fn, the part of it above what was allocated before)`` in GiB; None off CUDA."""
    if device.type != "cuda":
        fn()
        return None
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    return peak / GB, (peak - before) / GB


def interleaved(
    fns: dict[str, Callable[[], None]],
    device: torch.device,
    *,
    max_rounds: int,
    min_rounds: int,
    deadline: float,
    memory: dict[str, float] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each function, the order alternating every round (A B, B A, ...).

    Stops after ``max_rounds``, or once ``time.monotonic()`` passes ``deadline`` with at least ``min_rounds`` done.
    With ``memory`` (CUDA), also records each function's peak allocated GiB (max over its calls) into it.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(max_rounds):
        if r >= min_rounds and time.monotonic() > deadline:
            break
        for name in names if r % 2 == 0 else reversed(names):
            if memory is not None and device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            times[name].append(device_seconds(fns[name], device))
            if memory is not None and device.type == "cuda":
                memory[name] = max(memory.get(name, 0.0), torch.cuda.max_memory_allocated(device) / GB)
    return times


def ratios(times: dict[str, list[float]], numerator: str, denominator: str) -> dict[str, float]:
    """Median of per-round ratios (the headline: both calls of a round see the same machine state) and the ratio
    of medians."""
    paired = [a / b for a, b in zip(times[numerator], times[denominator])]
    return {
        "median_of_paired_ratios": statistics.median(paired),
        "ratio_of_medians": statistics.median(times[numerator]) / statistics.median(times[denominator]),
    }


def medians_ms(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {
        name: {"median_ms": 1e3 * statistics.median(values), "min_ms": 1e3 * min(values), "n": len(values)}
        for name, values in times.items()
    }


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
