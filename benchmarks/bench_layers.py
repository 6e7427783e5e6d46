"""minconv vs PyTorch CPU vs a naive NumPy im2col on ZFNet's layers, in one run.

    python benchmarks/bench_layers.py [--batches 8 32] [--repeats 5] [--isa avx2 avx512]
                                      [--layers conv pool norm]

For the five ZFNet convolutions (forward, and forward+backward with dx, dW, db),
LRN and 3x3/2 ceil-mode max pooling at ZFNet's sizes, prints a markdown table:
median milliseconds (minconv's and PyTorch's runs alternating), GFLOP/s, share of
the measured float32 GEMM peak, and the ratio minconv / PyTorch (below 1.0 means
minconv is faster).

Both run in this one process and so read one OpenMP setting, which minconv
sets on import to let idle threads spin about 1.4 ms and then sleep
(``GOMP_SPINCOUNT=50000``, see ``minconv/runtime.py``), and share one malloc, set as the trainer sets it (freed blocks kept
for reuse: ``runtime.configure(malloc="keep")``). ``benchmarks/bench_train.py`` runs each framework in
its own process with its own settings.

``--isa`` caps the instruction set of minconv's tiles (``MINCONV_ISA``) and,
to model a CPU that lacks AVX-512, holds PyTorch (ATen, oneDNN, MKL) and
NumPy's OpenBLAS to AVX2 as well (``ATEN_CPU_CAPABILITY=avx2``,
``ONEDNN_MAX_CPU_ISA=AVX2``, ``MKL_ENABLE_INSTRUCTIONS=AVX2``,
``OPENBLAS_CORETYPE=Haswell``; ``--native-baselines`` leaves them alone).
Those are read when the libraries load, so each instruction set runs in a
fresh process of this script; with several, one table holds them all.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import _timing  # noqa: E402,F401  before NumPy: it sets OPENBLAS_THREAD_TIMEOUT
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _timing import gemm_peak_gflops, machine, markdown_table, median_ms  # noqa: E402

import minconv as mc  # noqa: E402
from minconv._kernels import CPU_BUILT  # noqa: E402

# name, C_in, F, k, stride, pad, input size
CONVS = [("conv1", 3, 96, 7, 2, 1, 224), ("conv2", 96, 256, 5, 2, 0, 55),
         ("conv3", 256, 384, 3, 1, 1, 13), ("conv4", 384, 384, 3, 1, 1, 13),
         ("conv5", 384, 256, 3, 1, 1, 13)]
POOLS = [("pool1", 96, 110), ("pool2", 256, 26)]     # 3x3 stride 2, ceil_mode
NORMS = [("norm1", 96, 55), ("norm2", 256, 13)]      # LRN size 5


def paired_ms(fn_a, fn_b, repeats):
    """Median milliseconds of ``fn_a()`` and of ``fn_b()`` over ``repeats`` runs each,
    after one warm-up, the runs alternating: on a shared machine a busy neighbour
    then slows both alike, and their ratio holds where each time alone would not."""
    fn_a()
    fn_b()
    a, b = [], []
    for _ in range(repeats):
        for fn, times in ((fn_a, a), (fn_b, b)):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(a), statistics.median(b)


def naive_conv2d(x, W, stride, pad):
    """The textbook NumPy convolution: a sliding-window view and one tensordot."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = W.shape[2]
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    y = np.tensordot(win, W, axes=([1, 4, 5], [1, 2, 3]))   # (N, Ho, Wo, F)
    return y.transpose(0, 3, 1, 2)


def bench_conv(torch, name, C, F, k, s, p, size, N, repeats, rng):
    x = rng.standard_normal((N, C, size, size)).astype(np.float32)
    layer = mc.nn.Conv2D(C, F, k, stride=s, padding=p)
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    Ho = y.shape[2]
    flops = 2.0 * N * F * Ho * Ho * C * k * k
    tx = torch.tensor(x, requires_grad=True)
    tW = torch.tensor(layer.params["W"], requires_grad=True)
    tb = torch.zeros(F, requires_grad=True)
    tdy = torch.tensor(dy)
    conv = torch.nn.functional.conv2d

    def torch_fwd():
        with torch.no_grad():
            conv(tx, tW, tb, stride=s, padding=p)

    def torch_fwd_bwd():
        out = conv(tx, tW, tb, stride=s, padding=p)
        torch.autograd.grad(out, (tx, tW, tb), tdy)

    def mc_fwd_bwd():
        layer.forward(x)
        layer.backward(dy)

    rows = []
    for what, fn_mc, fn_torch, fn_naive, mult in [
            ("fwd", lambda: layer.forward(x), torch_fwd, lambda: naive_conv2d(x, layer.params["W"], s, p), 1),
            ("fwd+bwd", mc_fwd_bwd, torch_fwd_bwd, None, 3)]:
        t_mc, t_torch = paired_ms(fn_mc, fn_torch, repeats)
        t_naive = median_ms(fn_naive, max(1, repeats // 2)) if fn_naive else None
        rows.append((name, N, what, t_mc, t_torch, t_naive, mult * flops))
    return rows


def bench_pool_lrn(torch, N, repeats, rng):
    rows = []
    tf = torch.nn.functional
    for name, C, size in POOLS:
        x = rng.standard_normal((N, C, size, size)).astype(np.float32)
        layer = mc.nn.MaxPool2D(3, 2, ceil_mode=True)
        y = layer.forward(x)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        tx = torch.tensor(x, requires_grad=True)
        tdy = torch.tensor(dy)

        def torch_fwd():
            with torch.no_grad():
                tf.max_pool2d(tx, 3, 2, ceil_mode=True, return_indices=True)

        def torch_fwd_bwd():
            torch.autograd.grad(tf.max_pool2d(tx, 3, 2, ceil_mode=True), tx, tdy)

        rows.append((name, N, "fwd", *paired_ms(lambda: layer.forward(x), torch_fwd, repeats),
                     None, None))
        rows.append((name, N, "fwd+bwd", *paired_ms(lambda: (layer.forward(x), layer.backward(dy)),
                                                    torch_fwd_bwd, repeats), None, None))
    for name, C, size in NORMS:
        x = rng.standard_normal((N, C, size, size)).astype(np.float32)
        layer = mc.nn.LRN(5, 1e-4, 0.75, 2.0)
        dy = rng.standard_normal(x.shape).astype(np.float32)
        tx = torch.tensor(x, requires_grad=True)
        tdy = torch.tensor(dy)

        def torch_fwd():
            with torch.no_grad():
                tf.local_response_norm(tx, 5, 1e-4, 0.75, 2.0)

        def torch_fwd_bwd():
            torch.autograd.grad(tf.local_response_norm(tx, 5, 1e-4, 0.75, 2.0), tx, tdy)

        rows.append((name, N, "fwd", *paired_ms(lambda: layer.forward(x), torch_fwd, repeats),
                     None, None))
        rows.append((name, N, "fwd+bwd", *paired_ms(lambda: (layer.forward(x), layer.backward(dy)),
                                                    torch_fwd_bwd, repeats), None, None))
    return rows


ISAS = ("avx512", "avx2", "none")
# what each cap sets for the baselines (a CPU without AVX-512 has AVX2 kernels at best)
BASELINE_CAPS = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                          "MKL_ENABLE_INSTRUCTIONS": "AVX2", "OPENBLAS_CORETYPE": "Haswell"}}


def isa_environment(isa, native_baselines):
    """The environment of a child process that runs this benchmark under ``isa``."""
    env = dict(os.environ, MINCONV_ISA=isa)
    if not native_baselines:
        env.update(BASELINE_CAPS.get(isa, {}))
    return env


def libraries(torch):
    """One line naming the instruction sets the tiles, PyTorch and NumPy's BLAS use."""
    from minconv._kernels import cpu_tiles
    parts = [f"minconv tiles: {cpu_tiles.isa()}",
             f"PyTorch ATen: {torch.backends.cpu.get_cpu_capability()}",
             f"oneDNN max ISA: {os.environ.get('ONEDNN_MAX_CPU_ISA', 'native')}"]
    try:
        from threadpoolctl import threadpool_info
        for pool in threadpool_info():
            if pool.get("user_api") == "blas":
                parts.append(f"NumPy BLAS: {pool.get('internal_api')} "
                             f"{pool.get('version')} kernel {pool.get('architecture')}")
    except ImportError:
        parts.append("NumPy BLAS: unknown (threadpoolctl not installed)")
    return "; ".join(parts)


def measure(args, torch):
    """Print the machine and the libraries; return the rows and the GEMM peak."""
    rng = np.random.default_rng(0)
    # the trainer's setting, for both frameworks in this process: glibc keeps freed blocks
    # for reuse, so an output of more than 32 MB (conv1's at batch 8) is not unmapped and
    # faulted in again on every call (59 ms instead of 25 for conv1's forward pass)
    mc.runtime.configure(malloc="keep")
    peak = gemm_peak_gflops()
    print(f"machine: {machine()}; torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"Cython kernels built: {CPU_BUILT}")
    print(libraries(torch))
    print(f"float32 GEMM peak (NumPy, 2048^3): {peak:.0f} GFLOP/s\n", flush=True)
    rows = []
    for N in args.batches:
        for spec in CONVS:
            if spec[0].startswith(tuple(args.layers)):
                rows += bench_conv(torch, *spec, N, args.repeats, rng)
        if any(name.startswith(("pool", "norm")) for name in args.layers):
            rows += [row for row in bench_pool_lrn(torch, N, args.repeats, rng)
                     if row[0].startswith(tuple(args.layers))]
    return rows, peak


def run_children(args):
    """This script once per instruction set, each in its own process; their rows."""
    results = []
    for isa in args.isa:
        command = [sys.executable, os.path.abspath(__file__), "--child", "--isa", isa,
                   "--repeats", str(args.repeats), "--batches", *map(str, args.batches),
                   "--layers", *args.layers]
        if args.native_baselines:
            command.append("--native-baselines")
        print(f"--- {isa}", flush=True)
        out = subprocess.run(command, env=isa_environment(isa, args.native_baselines),
                             check=True, stdout=subprocess.PIPE, text=True).stdout
        lines = out.splitlines()
        print("\n".join(line for line in lines if not line.startswith("{")), flush=True)
        child = json.loads(next(line for line in lines if line.startswith("{")))
        results += [(isa, row, child["peak"]) for row in child["rows"]]
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--isa", nargs="+", choices=ISAS,
                        help="cap minconv's tiles (and the baselines, see above) to each in turn")
    parser.add_argument("--native-baselines", action="store_true",
                        help="with --isa: leave PyTorch and OpenBLAS on the CPU's best kernels")
    parser.add_argument("--layers", nargs="+", default=["conv", "pool", "norm"],
                        help="only the layers whose names start so (default: all)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        sys.exit("bench_layers: PyTorch is needed for the comparison: pip install torch==2.13.0")
    if args.child:
        rows, peak = measure(args, torch)
        print(json.dumps({"rows": rows, "peak": peak}))
        return
    if args.isa:
        results = run_children(args)
    else:
        from minconv._kernels import cpu_tiles
        rows, peak = measure(args, torch)
        results = [(cpu_tiles.isa(), row, peak) for row in rows]
    table = []
    totals = {}
    for isa, (name, N, what, t_mc, t_torch, t_naive, flops), peak in results:
        gflops = f"{flops / (t_mc * 1e-3) / 1e9:.0f}" if flops else "-"
        share = f"{flops / (t_mc * 1e-3) / 1e9 / peak:.0%}" if flops else "-"
        table.append((name, isa, N, what, f"{t_mc:.1f}", f"{t_torch:.1f}",
                      f"{t_naive:.1f}" if t_naive else "-", gflops, share, f"{t_mc / t_torch:.2f}"))
        if name.startswith("conv"):
            key = (ISAS.index(isa), N, what)
            a, b = totals.get(key, (0.0, 0.0))
            totals[key] = (a + t_mc, b + t_torch)
    for (level, N, what), (a, b) in sorted(totals.items()):
        table.append(("**5 convs**", ISAS[level], N, what, f"{a:.1f}", f"{b:.1f}", "-", "-", "-",
                      f"**{a / b:.2f}**"))
    print(markdown_table(["layer", "isa", "batch", "pass", "minconv ms", "PyTorch ms",
                          "naive NumPy ms", "minconv GFLOP/s", "of GEMM peak",
                          "minconv/PyTorch"], table))


if __name__ == "__main__":
    main()
