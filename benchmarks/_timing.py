"""Shared timing helpers for the benchmarks: medians after a warm-up, GEMM peak, tables.

Each benchmark imports this module before NumPy: it sets what minconv sets when imported
before NumPy, ``OPENBLAS_THREAD_TIMEOUT=4`` (OpenBLAS's idle threads sleep at once), for
the benchmark and the processes it starts.
"""
import os
import platform
import statistics
import time

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
import numpy as np  # noqa: E402


def median_ms(fn, repeats=5, warmup=1, warmup_s=0.0):
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` runs after ``warmup``
    runs and, past those, more until ``warmup_s`` seconds have gone by (a runtime's first
    calls after loading still allocate and fault in memory: minconv's passes 2 and 3 of
    SqueezeNet take 1.1x the later ones)."""
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    while time.perf_counter() - start < warmup_s:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def gemm_peak_gflops(n=2048, repeats=7):
    """The float32 matrix-multiply rate of this machine's BLAS (GFLOP/s)."""
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    b = a.T.copy()
    out = np.empty_like(a)
    ms = median_ms(lambda: np.matmul(a, b, out=out), repeats, warmup=2)
    return 2.0 * n ** 3 / (ms * 1e-3) / 1e9


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    timeout = os.environ.get("OPENBLAS_THREAD_TIMEOUT")
    blas = f", OPENBLAS_THREAD_TIMEOUT={timeout}" if timeout else ""
    return f"{cpu}, {os.cpu_count()} cores, NumPy {np.__version__}{blas}"


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
