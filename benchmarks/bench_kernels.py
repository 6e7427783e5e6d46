"""Time the Cython kernels against the NumPy reference and PyTorch at ZFNet's sizes.

    python benchmarks/bench_kernels.py [--batch 8 32] [--repeat 7] [--no-reference]
                                       [--only pool1] [--single-thread] [--tiles]

Prints one markdown table per batch size: the median milliseconds of each
kernel (Cython, reference, PyTorch CPU) and the ratio torch / Cython (above 1
means minconv is faster). PyTorch equivalents: ``F.unfold``/``F.fold`` for
im2col/col2im, ``max_pool2d(return_indices=True, ceil_mode=True)`` and its
backward for pooling, ``local_response_norm`` and its autograd backward for
LRN, ``conv2d`` forward + backward against im2col + GEMM + col2im, and the layout
changes of the channels-last paths (``--only layout``: a padded channels-last copy of
the input, the product's rows back to channels first, the weights' reorder) against
``permute(...).contiguous()``.

``--tiles`` times instead the compiled float32 tiles under each instruction set
the CPU has (``cpu_tiles.set_isa_cap``) against the unfolding + GEMM they
replace, on one core's share of the batch (the layers split it among the
cores): the products ``im2row_matmul`` (forward) and ``im2row_t_matmul`` (weight
gradient) at zfnet_mini's, ZFNet's and ResNet's 3x3 sizes, whatever their weights' size, and
``conv2d_direct`` and its weight gradient on few input channels, with each set's rate
in GFLOP/s. Run it with
``--single-thread`` and ``OPENBLAS_CORETYPE=Haswell`` to hold the GEMM to AVX2.
"""
import argparse
import os
import statistics
import sys
import time

if __name__ == "__main__" and "--single-thread" in sys.argv:
    # before NumPy, OpenBLAS, libgomp or torch start their thread pools
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"

import _timing  # noqa: E402,F401  before NumPy: it sets OPENBLAS_THREAD_TIMEOUT
import numpy as np  # noqa: E402

from minconv._kernels import reference as ref
from minconv._kernels import cpu_conv, cpu_direct, cpu_layout, cpu_lrn, cpu_pool, cpu_tiles

try:
    import torch
    import torch.nn.functional as TF
except ImportError:  # the table still shows Cython against the reference
    torch = None

# (name, C, H, F, k, stride, padding) of ZFNet's convolutions on 224x224 inputs
CONVS = [("conv1", 3, 224, 96, 7, 2, 1), ("conv2", 96, 55, 256, 5, 2, 0),
         ("conv3", 256, 13, 384, 3, 1, 1), ("conv4", 384, 13, 384, 3, 1, 1),
         ("conv5", 384, 13, 256, 3, 1, 1)]
POOLS = [("pool1", 96, 110), ("pool2", 256, 26), ("pool5", 256, 13)]  # 3x3/2, ceil
LRNS = [("norm1", 96, 55), ("norm2", 256, 13)]                        # size 5
LRN_ARGS = dict(size=5, alpha=1e-4, beta=0.75, k=2.0)


CLOCK = time.perf_counter


def median_ms(fns, repeat):
    """Median milliseconds of each function; the runs alternate, so a busy
    neighbour on a shared machine slows all of them alike."""
    fns = [fn for fn in fns if fn is not None]
    times = [[] for _ in fns]
    for fn in fns:
        fn()  # warm up: page faults, thread pools
    for _ in range(repeat):
        for fn, t in zip(fns, times):
            start = CLOCK()
            fn()
            t.append(CLOCK() - start)
    return [1e3 * statistics.median(t) for t in times]


def conv_cases(N, rng):
    for name, C, H, F, k, s, p in CONVS:
        x = rng.standard_normal((N, C, H, H), dtype=np.float32)
        W = rng.standard_normal((F, C, k, k), dtype=np.float32) * 0.01
        geo = ((s, s), (p, p), (1, 1))
        cols = cpu_conv.im2col(x, k, k, *geo)
        Ho = ref.conv_output_size(H, k, s, p)
        dy = rng.standard_normal((N, F, Ho, Ho), dtype=np.float32)
        buf = np.empty_like(cols)
        W2 = W.reshape(F, -1)
        L = Ho * Ho
        y, y2 = np.empty((N, F, Ho, Ho), np.float32), np.empty((F, N * L), np.float32)
        dY, dcols = np.empty((F, N, L), np.float32), np.empty_like(cols)

        def ours_conv():
            """Forward, dW and dx as a training step does them, with buffers kept
            across steps: im2col, GEMM, layout change, GEMMs, col2im."""
            cpu_conv.im2col(x, k, k, *geo, out=buf)
            if L >= 2048:  # one GEMM per image writes y in place: no transpose
                for n in range(N):
                    np.matmul(W2, buf[:, n * L:(n + 1) * L], out=y[n].reshape(F, L))
            else:
                np.matmul(W2, buf, out=y2)
                np.copyto(y, y2.reshape(F, N, Ho, Ho).transpose(1, 0, 2, 3))
            np.copyto(dY, dy.reshape(N, F, L).transpose(1, 0, 2))   # (F, N, L)
            dW = dY.reshape(F, -1) @ buf.T
            np.matmul(W2.T, dY.reshape(F, -1), out=dcols)
            return y, dW, cpu_conv.col2im(dcols, x.shape, k, k, *geo)

        row = {"im2col": (lambda: cpu_conv.im2col(x, k, k, *geo, out=buf),
                          lambda: ref.im2col(x, k, k, *geo)),
               "col2im": (lambda: cpu_conv.col2im(cols, x.shape, k, k, *geo),
                          lambda: ref.col2im(cols, x.shape, k, k, *geo)),
               "conv fwd+bwd": (ours_conv, None)}
        if torch is not None:
            tx, tW = torch.from_numpy(x), torch.from_numpy(W)
            tcols = torch.from_numpy(cols.reshape(-1, N, Ho * Ho).transpose(1, 0, 2).copy())
            txg, tWg, tdy = tx.clone().requires_grad_(), tW.clone().requires_grad_(), torch.from_numpy(dy)

            def torch_conv():
                y = TF.conv2d(txg, tWg, stride=s, padding=p)
                return torch.autograd.grad(y, (txg, tWg), tdy)

            torch_fns = {"im2col": lambda: TF.unfold(tx, k, padding=p, stride=s),
                         "col2im": lambda: TF.fold(tcols, H, k, padding=p, stride=s),
                         "conv fwd+bwd": torch_conv}
        for op, (ours, reference) in row.items():
            yield f"{name} {op}", ours, reference, torch_fns[op] if torch else None


def pool_cases(N, rng):
    for name, C, H in POOLS:
        x = rng.standard_normal((N, C, H, H), dtype=np.float32)
        args = (3, 3, (2, 2), (0, 0), True)
        y, sw = cpu_pool.maxpool_forward(x, *args)
        dy = rng.standard_normal(y.shape, dtype=np.float32)
        fwd = (lambda: cpu_pool.maxpool_forward(x, *args), lambda: ref.maxpool_forward(x, *args))
        bwd = (lambda: cpu_pool.maxpool_backward(dy, sw, x.shape),
               lambda: ref.maxpool_backward(dy, sw, x.shape))
        tf = tb = None
        if torch is not None:
            tx, tdy, tsw = torch.from_numpy(x), torch.from_numpy(dy), torch.from_numpy(sw)
            tf = lambda: TF.max_pool2d(tx, 3, 2, ceil_mode=True, return_indices=True)
            tb = lambda: torch.ops.aten.max_pool2d_with_indices_backward(
                tdy, tx, [3, 3], [2, 2], [0, 0], [1, 1], True, tsw)
        yield f"{name} fwd", *fwd, tf
        yield f"{name} bwd", *bwd, tb


def lrn_cases(N, rng):
    a = LRN_ARGS
    for name, C, H in LRNS:
        x = rng.standard_normal((N, C, H, H), dtype=np.float32) * 10
        y, scale = cpu_lrn.lrn_forward(x, a["size"], a["alpha"], a["beta"], a["k"])
        dy = rng.standard_normal(x.shape, dtype=np.float32)
        bwd_args = (dy, x, y, scale, a["size"], a["alpha"], a["beta"])
        fwd = (lambda: cpu_lrn.lrn_forward(x, a["size"], a["alpha"], a["beta"], a["k"]),
               lambda: ref.lrn_forward(x, a["size"], a["alpha"], a["beta"], a["k"]))
        bwd = (lambda: cpu_lrn.lrn_backward(*bwd_args), lambda: ref.lrn_backward(*bwd_args))
        tf = tb = None
        if torch is not None:
            tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)
            txg = tx.clone().requires_grad_()
            ty = TF.local_response_norm(txg, **a)
            tf = lambda: TF.local_response_norm(tx, **a)
            tb = lambda: torch.autograd.grad(ty, txg, tdy, retain_graph=True)
        yield f"{name} fwd", *fwd, tf
        yield f"{name} bwd", *bwd, tb


# (name, C, H): activations whose layout the channels-last paths change
LAYOUTS = [("VGG 64@224", 64, 224), ("ResNet 64@56", 64, 56), ("ResNet 256@14", 256, 14),
           ("ResNet 512@7", 512, 7)]


def layout_cases(N, rng):
    for name, C, H in LAYOUTS:
        x = rng.standard_normal((N, C, H, H), dtype=np.float32)
        yt = rng.standard_normal((N, H, H, C), dtype=np.float32)
        pad = (lambda: cpu_layout.padded_channels_last(x, 1, 1),
               lambda: ref.padded_channels_last(x, 1, 1))
        back = (lambda: cpu_layout.channels_first(yt), lambda: ref.channels_first(yt))
        tp = tb = None
        if torch is not None:
            tx, tyt = torch.from_numpy(x), torch.from_numpy(yt)
            tp = lambda: TF.pad(tx, (1, 1, 1, 1)).permute(0, 2, 3, 1).contiguous()
            tb = lambda: tyt.permute(0, 3, 1, 2).contiguous()
        yield f"layout {name} padded channels last", *pad, tp
        yield f"layout {name} channels first", *back, tb
    W = rng.standard_normal((512, 512, 9), dtype=np.float32)
    tW = torch.from_numpy(W) if torch is not None else None
    yield ("layout 512x512x3x3 weights reversed", lambda: cpu_layout.reversed_axes(W),
           lambda: ref.reversed_axes(W),
           (lambda: tW.permute(2, 1, 0).contiguous()) if torch is not None else None)


# (name, N, C, H, F, k, padding): one core's share of batch 8; stride 1
TILE_PRODUCTS = [("mini conv2", 4, 32, 14, 64, 5, 2), ("mini conv3", 4, 64, 7, 96, 3, 1),
                 ("mini conv4", 4, 96, 7, 96, 3, 1), ("ZFNet conv3", 4, 256, 13, 384, 3, 1),
                 ("ZFNet conv4", 4, 384, 13, 384, 3, 1), ("ZFNet conv5", 4, 384, 13, 256, 3, 1),
                 ("ResNet 64@56", 4, 64, 56, 64, 3, 1), ("ResNet 128@28", 4, 128, 28, 128, 3, 1),
                 ("ResNet 256@14", 4, 256, 14, 256, 3, 1), ("ResNet 512@7", 4, 512, 7, 512, 3, 1)]
TILE_DIRECT = [("mini conv1", 32, 1, 28, 32, 5, 2), ("RGB 3x3", 8, 3, 64, 64, 3, 1),
               ("RGB 7x7", 2, 3, 112, 96, 7, 3)]


def tile_sets():
    """The instruction sets whose tiles this CPU runs, best first."""
    sets = []
    for name in ("avx512", "avx2"):
        previous = cpu_tiles.set_isa_cap(name)
        if cpu_tiles.isa() == name:
            sets.append(name)
        cpu_tiles.set_isa_cap(previous)
    return sets


def tile_cases(rng):
    """(name, multiply-adds, {instruction set: function}, im2row/im2col + GEMM function) for
    each case, each valid until the next is drawn (the functions share the loop's arrays)."""
    sets = tile_sets()
    limits = dict(cpu_tiles._FUSED_MAX_WEIGHTS)

    def under(name, fn):
        def run():
            cpu_tiles.set_isa_cap(name)
            cpu_tiles._FUSED_MAX_WEIGHTS.update({s: 1 << 62 for s in limits})
            try:
                return fn()
            finally:
                cpu_tiles._FUSED_MAX_WEIGHTS.update(limits)
                cpu_tiles.set_isa_cap("avx512")
        return run

    for name, N, C, H, F, k, p in TILE_PRODUCTS:
        x = rng.standard_normal((N, C, H, H), dtype=np.float32)
        w = rng.standard_normal((k * k * C, F), dtype=np.float32) * 0.01
        geo = (k, k, (1, 1), (p, p), (1, 1))
        dy = rng.standard_normal((N * H * H, F), dtype=np.float32)
        macs = N * H * H * k * k * C * F
        yield (f"{name} rows @ w", macs, {s: under(s, lambda: cpu_tiles.im2row_matmul(x, w, *geo))
                                    for s in sets}, lambda: cpu_conv.im2row(x, *geo) @ w)
        yield (f"{name} rows.T @ dy", macs, {s: under(s, lambda: cpu_tiles.im2row_t_matmul(x, dy, *geo))
                                       for s in sets}, lambda: cpu_conv.im2row(x, *geo).T @ dy)
    for name, N, C, H, F, k, p in TILE_DIRECT:
        x = rng.standard_normal((N, C, H, H), dtype=np.float32)
        W = rng.standard_normal((F, C, k, k), dtype=np.float32)
        geo = ((1, 1), (p, p), (1, 1))
        L = H * H
        dy = rng.standard_normal((N, F, H, H), dtype=np.float32)
        W2 = W.reshape(F, -1)

        def gemm_forward():
            cols = cpu_conv.im2col(x, k, k, *geo)
            return [W2 @ cols[:, n * L:(n + 1) * L] for n in range(N)]

        def gemm_weight_grad():
            cols = cpu_conv.im2col(x, k, k, *geo)
            return sum(dy[n].reshape(F, L) @ cols[:, n * L:(n + 1) * L].T for n in range(N))

        macs = N * L * k * k * C * F
        yield (f"{name} direct", macs, {s: under(s, lambda: cpu_direct.conv2d_direct(x, W, None, *geo))
                                  for s in sets}, gemm_forward)
        yield (f"{name} direct dW", macs, {
            s: under(s, lambda: cpu_direct.conv2d_direct_weight_grad(dy, x, W.shape, *geo))
            for s in sets}, gemm_weight_grad)


def tiles_table(repeat, only):
    sets = tile_sets()
    print(f"\n### the float32 tiles, medians of {repeat} runs (ms); the GEMM: "
          f"{gemm_kernel()}\n")
    print("| case | " + " | ".join(sets) + " | unfolding + GEMM | "
          + " | ".join(f"{name} GFLOP/s" for name in sets) + " |")
    print("| --- |" + " ---: |" * (2 * len(sets) + 1))
    for name, macs, by_set, gemm in tile_cases(np.random.default_rng(0)):
        if only not in name:
            continue
        times = median_ms(list(by_set.values()) + [gemm], repeat)
        rates = [2 * macs / (t * 1e6) for t in times[:len(sets)]]
        print(f"| {name} | " + " | ".join(f"{t:.2f}" for t in times) + " | "
              + " | ".join(f"{r:.0f}" for r in rates) + " |", flush=True)


def gemm_kernel():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    blas = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    return ", ".join(f"{p.get('internal_api')} {p.get('architecture')}" for p in blas) or "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--only", default="", help="run the cases whose name holds this")
    parser.add_argument("--single-thread", action="store_true",
                        help="one thread everywhere, timed in CPU time of this thread: "
                             "steady on a machine shared with other jobs")
    parser.add_argument("--tiles", action="store_true",
                        help="the float32 tiles under each instruction set against the GEMM")
    args = parser.parse_args()
    global CLOCK
    if args.single_thread:
        CLOCK = time.thread_time
        if torch is not None:
            torch.set_num_threads(1)
    if args.tiles:
        tiles_table(args.repeat, args.only)
        return
    rng = np.random.default_rng(0)
    for N in args.batch:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        threads = torch.get_num_threads() if torch is not None else "-"
        clock = "CPU ms, one thread" if args.single_thread else "ms"
        print(f"\n### batch {N}, float32, medians of {args.repeat} runs ({clock}); "
              f"{os.cpu_count()} CPUs, load {load:.1f}, torch threads {threads}\n")
        print("| kernel | minconv | reference | torch | torch / minconv |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for cases in (pool_cases, lrn_cases, conv_cases, layout_cases):
            for name, ours, reference, theirs in cases(N, rng):
                if args.only not in name:
                    continue
                t_ours, t_torch = (median_ms([ours, theirs], args.repeat) + [None])[:2]
                t_ref = (median_ms([reference], max(1, args.repeat // 3))[0]
                         if reference and not args.no_reference else None)
                cell = lambda t: f"{t:.2f}" if t is not None else "-"
                ratio = f"{t_torch / t_ours:.2f}x" if t_torch else "-"
                print(f"| {name} | {cell(t_ours)} | {cell(t_ref)} | {cell(t_torch)} | {ratio} |",
                      flush=True)


if __name__ == "__main__":
    main()
