"""Interleaved timing and peak-memory measurement: ratios taken within one repeat, so load drifts cancel."""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator

import torch

try:
    import resource
except ImportError:  # Windows
    resource = None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes allocated by one call of fn above what was allocated before it."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    # CPU: the profiler records every allocation and free in order; the running sum's maximum is the peak.
    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True)
    with _native_stderr_silenced():
        profiler.start()
    try:
        fn()
    finally:
        with _native_stderr_silenced():
            profiler.stop()
    changes = [
        (event.start_ns(), event.nbytes())
        for event in profiler.profiler.kineto_results.events()
        if event.name() == "[memory]" and event.device_type() == torch.autograd.DeviceType.CPU
    ]
    current = peak = 0
    for _, change in sorted(changes):
        current += change
        peak = max(peak, current)
    return peak


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 to /dev/null: Kineto prints "USDT ... profiler_start/stop" lines at every profiler
    start and stop whatever its log level; only those two calls run silenced, never the measured code."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def counting_page_faults(fn: Callable[[], object], counts: list[int]) -> Callable[[], None]:
    """fn, appending to counts the process's minor page faults during each call: memory the OS mapped afresh,
    mostly what the allocator gave back and the call touched again, which costs time and swings conv/ACDA
    ratios between processes. fn itself where `resource` is missing (Windows)."""
    if resource is None:
        return fn

    def run():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        fn()
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

    return run


def interleaved_times(
    candidates: dict[str, Callable[[], object]],
    device: torch.device,
    warmup: int,
    repeats: int,
) -> dict[str, list[float]]:
    """Seconds per call of each candidate; every repeat runs all candidates once, in turn."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def ratio_summaries(times: dict[str, list[float]], baseline: str) -> dict[str, dict[str, float]]:
    """Per candidate: its seconds (median) and its time / baseline's time per repeat (median, min, max)."""
    return {
        name: {
            "seconds": statistics.median(values),
            **{f"ratio_{key}": value for key, value in summary(
                [value / base for value, base in zip(values, times[baseline])]
            ).items()},
        }
        for name, values in times.items()
    }
