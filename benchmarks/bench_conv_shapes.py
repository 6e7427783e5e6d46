"""The convolutions of the families, one shape at a time: minconv's paths against PyTorch.

    python benchmarks/bench_conv_shapes.py                  # batch 1 and 8, forward pass
    python benchmarks/bench_conv_shapes.py --batches 8 --repeats 9

For the 3x3 and 1x1 layer shapes of ResNet, DenseNet and Inception (and two of ZFNet's
13x13 ones) on float32 input, the forward pass of

  default   minconv's planner's choice (the plan is printed)
  rows      im2row + OpenBLAS's sgemm, forced
  tiles*    the fused tiles forced, with their cache limit on the weights lifted (3x3 only)
  PyTorch   torch.nn.functional.conv2d (oneDNN)

medians of ``--repeats`` runs in ms, the ratio of each to PyTorch's time, and PyTorch's
rate in GFLOP/s. Both on all the cores (``--threads``); minconv imported first, so both
share its OpenMP setting (idle threads sleep).
"""
import argparse
import os
import sys

import _timing  # noqa: E402,F401  before NumPy: it sets OPENBLAS_THREAD_TIMEOUT
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import machine, markdown_table, median_ms  # noqa: E402

# C, F, k, stride, input size
SHAPES = [(64, 64, 3, 1, 56), (128, 128, 3, 1, 28), (128, 128, 3, 2, 56), (256, 256, 3, 1, 14),
          (256, 256, 3, 2, 28), (512, 512, 3, 1, 7), (512, 512, 3, 2, 14), (128, 32, 3, 1, 56),
          (128, 32, 3, 1, 28), (128, 32, 3, 1, 14), (128, 32, 3, 1, 7), (96, 128, 3, 1, 28),
          (192, 384, 3, 1, 13), (384, 256, 3, 1, 13), (256, 1024, 1, 1, 14),
          (1024, 256, 1, 1, 14), (512, 2048, 1, 1, 7)]


def lifted_cap(cpu_tiles):
    """A context in which the tiles take weights of any size."""
    class Lifted:
        def __enter__(self):
            self.saved = dict(cpu_tiles._FUSED_MAX_WEIGHTS)
            cpu_tiles._FUSED_MAX_WEIGHTS.update(dict.fromkeys(self.saved, 2 ** 62))

        def __exit__(self, *exc):
            cpu_tiles._FUSED_MAX_WEIGHTS.update(self.saved)
    return Lifted()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args(argv)
    import minconv as mc
    from minconv import functional as F
    from minconv._kernels import cpu_tiles
    import torch
    torch.set_num_threads(args.threads)
    mc.runtime.configure(threads=args.threads)
    print(f"# {machine()}, torch {torch.__version__}, {args.threads} threads, minconv tiles: "
          f"{cpu_tiles.isa()}")
    rng = np.random.default_rng(0)
    rows = []
    for N in args.batches:
        for C, Fo, k, s, H in SHAPES:
            x = rng.standard_normal((N, C, H, H)).astype(np.float32)
            W = (rng.standard_normal((Fo, C, k, k)) * 0.05).astype(np.float32)
            pad = k // 2
            tx, tw = torch.from_numpy(x), torch.from_numpy(W)
            with torch.no_grad():
                t_torch = median_ms(lambda: torch.nn.functional.conv2d(tx, tw, None, s, pad),
                                    args.repeats)
            plan = F.choose_plan(x, W, s, pad)
            t_default = median_ms(lambda: F.conv2d(x, W, None, s, pad), args.repeats)
            t_rows = median_ms(lambda: F.conv2d(x, W, None, s, pad, plan="rows"), args.repeats)
            t_tiles = None
            if k > 1:
                with lifted_cap(cpu_tiles):
                    t_tiles = median_ms(lambda: F.conv2d(x, W, None, s, pad, plan="fused_rows"),
                                        args.repeats)
            Ho = (H + 2 * pad - k) // s + 1
            gflop = 2 * N * Fo * C * k * k * Ho * Ho / 1e9
            rows.append((N, f"{C}->{Fo} {k}x{k}/{s} at {H}x{H}", str(plan),
                         f"{t_default:.2f}", f"{t_default / t_torch:.2f}",
                         f"{t_rows:.2f}", f"{t_rows / t_torch:.2f}",
                         "-" if t_tiles is None else f"{t_tiles:.2f}",
                         "-" if t_tiles is None else f"{t_tiles / t_torch:.2f}",
                         f"{t_torch:.2f}", f"{gflop / (t_torch * 1e-3):.0f}",
                         f"{gflop / (t_default * 1e-3):.0f}"))
            print(markdown_table(HEADER, rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(markdown_table(HEADER, rows))


HEADER = ("batch", "layer", "default plan", "default ms", "/ torch", "rows ms", "/ torch",
          "tiles* ms", "/ torch", "PyTorch ms", "PyTorch GFLOP/s", "minconv GFLOP/s")

if __name__ == "__main__":
    main()
