"""minconv on CuPy vs PyTorch CUDA (cuDNN) on ZFNet's layers and a full ZFNet SGD step, in one run.

    python benchmarks/bench_gpu.py [--batch 128] [--repeats 10] [--warmup 3] [--tf32]
                                   [--workspace-mb MB] [--no-step]

At 224x224 inputs and batch ``--batch`` (128 by default, the paper's), in float32:
the five ZFNet convolutions forward and forward+backward (dx, dW, db), ZFNet's
3x3/2 ceil-mode poolings and LRNs (the CUDA kernels of minconv._kernels.cuda),
and one SGD step of the whole ZFNet (forward, loss, backward, momentum update).
Prints a markdown table: median milliseconds after warm-up, minconv's TFLOP/s
on the convolutions, and the ratio minconv / PyTorch (below 1 means minconv is faster).

Timing: CUDA events recorded on each library's current stream around each call
(cupy.cuda.Event, torch.cuda.Event), after ``--warmup`` untimed calls and a device
synchronisation. Host work between launches counts, as it does in training.

TF32: off on both sides unless ``--tf32``: PyTorch's matmul and cuDNN flags are set,
CuPy reads CUPY_TF32 (set here before CuPy is imported), and without ``--tf32``
NVIDIA_TF32_OVERRIDE=0 makes every CUDA library keep full float32.
cuDNN may pick its fastest algorithms (torch.backends.cudnn.benchmark = True).
"""
import argparse
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

# name, C_in, F, k, stride, pad, input size
CONVS = [("conv1", 3, 96, 7, 2, 1, 224), ("conv2", 96, 256, 5, 2, 0, 55),
         ("conv3", 256, 384, 3, 1, 1, 13), ("conv4", 384, 384, 3, 1, 1, 13),
         ("conv5", 384, 256, 3, 1, 1, 13)]
POOLS = [("pool1", 96, 110), ("pool2", 256, 26), ("pool5", 256, 13)]  # 3x3/2, ceil_mode
NORMS = [("norm1", 96, 55), ("norm2", 256, 13)]                      # LRN size 5
LRN = dict(size=5, alpha=1e-4, beta=0.75, k=2.0)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--tf32", action="store_true", help="allow TF32 on both sides")
    parser.add_argument("--workspace-mb", type=int, default=None,
                        help="minconv's im2col workspace (default: the library's)")
    parser.add_argument("--no-step", action="store_true", help="skip the full ZFNet step")
    return parser.parse_args(argv)


def events_ms(make_event, elapsed, synchronize, fn, repeats, warmup):
    """Median of ``repeats`` event-timed calls of ``fn`` (ms), after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    synchronize()
    times = []
    for _ in range(repeats):
        start, stop = make_event(), make_event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(elapsed(start, stop))
    return statistics.median(times)


class Timer:
    """Event timing for minconv (CuPy) and, when present, PyTorch CUDA."""

    def __init__(self, cp, torch, repeats, warmup):
        self.cp, self.torch, self.repeats, self.warmup = cp, torch, repeats, warmup

    def minconv(self, fn):
        cuda = self.cp.cuda
        return events_ms(cuda.Event, cuda.get_elapsed_time, cuda.Device().synchronize, fn,
                         self.repeats, self.warmup)

    def pytorch(self, fn):
        if self.torch is None:
            return None
        cuda = self.torch.cuda
        return events_ms(lambda: cuda.Event(enable_timing=True), lambda a, b: a.elapsed_time(b),
                         cuda.synchronize, fn, self.repeats, self.warmup)


def bench_convs(mc, cp, torch, timer, N, rng):
    rows = []
    for name, C, F, k, s, p, size in CONVS:
        x = cp.asarray(rng.standard_normal((N, C, size, size), dtype=np.float32))
        layer = mc.nn.Conv2D(C, F, k, stride=s, padding=p).to("cuda")
        y = layer.forward(x)
        dy = cp.asarray(rng.standard_normal(y.shape, dtype=np.float32))
        Ho, Wo = y.shape[2:]
        flops = 2.0 * N * F * Ho * Wo * C * k * k  # one pass; backward is two more

        def mc_fwd_bwd():
            layer.forward(x)
            layer.backward(dy)

        t_fwd = t_fwd_bwd = None
        if torch is not None:
            tx = torch.as_tensor(cp.asnumpy(x), device="cuda").requires_grad_()
            tW = torch.as_tensor(cp.asnumpy(layer.params["W"]), device="cuda").requires_grad_()
            tb = torch.zeros(F, device="cuda", requires_grad=True)
            tdy = torch.as_tensor(cp.asnumpy(dy), device="cuda")
            conv = torch.nn.functional.conv2d

            def torch_fwd():
                with torch.no_grad():
                    conv(tx, tW, tb, stride=s, padding=p)

            def torch_fwd_bwd():
                torch.autograd.grad(conv(tx, tW, tb, stride=s, padding=p), (tx, tW, tb), tdy)

            t_fwd, t_fwd_bwd = timer.pytorch(torch_fwd), timer.pytorch(torch_fwd_bwd)
        rows.append((name, "fwd", timer.minconv(lambda: layer.forward(x)), t_fwd, flops))
        rows.append((name, "fwd+bwd", timer.minconv(mc_fwd_bwd), t_fwd_bwd, 3 * flops))
        del x, y, dy, layer
    return rows


def bench_pool_lrn(mc, cp, torch, timer, N, rng):
    rows = []
    cases = [(name, C, size, lambda: mc.nn.MaxPool2D(3, 2, ceil_mode=True))
             for name, C, size in POOLS]
    cases += [(name, C, size, lambda: mc.nn.LRN(**LRN)) for name, C, size in NORMS]
    for name, C, size, make in cases:
        x = cp.asarray(rng.standard_normal((N, C, size, size), dtype=np.float32))
        layer = make()
        dy = cp.asarray(rng.standard_normal(layer.forward(x).shape, dtype=np.float32))
        t_torch = None
        if torch is not None:
            tx = torch.as_tensor(cp.asnumpy(x), device="cuda").requires_grad_()
            tdy = torch.as_tensor(cp.asnumpy(dy), device="cuda")
            tf = torch.nn.functional
            op = ((lambda: tf.max_pool2d(tx, 3, 2, ceil_mode=True)) if name.startswith("pool")
                  else (lambda: tf.local_response_norm(tx, **LRN)))
            t_torch = timer.pytorch(lambda: torch.autograd.grad(op(), tx, tdy))
        t_mc = timer.minconv(lambda: (layer.forward(x), layer.backward(dy)))
        rows.append((name, "fwd+bwd", t_mc, t_torch, None))
    return rows


def torch_zfnet(torch):
    """ZFNet in torch.nn, layer for layer the same as minconv.models.zfnet."""
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 96, 7, 2, 1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.LocalResponseNorm(**LRN),
        nn.Conv2d(96, 256, 5, 2, 0), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.LocalResponseNorm(**LRN),
        nn.Conv2d(256, 384, 3, 1, 1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 384, 3, 1, 1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, 1, 1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Flatten(), nn.Linear(9216, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(4096, 1000))


def bench_step(mc, cp, torch, timer, N, rng):
    """One SGD step (momentum 0.9, weight decay 5e-4) of ZFNet on (N, 3, 224, 224)."""
    from minconv.train.optim import SGD
    x_host = rng.standard_normal((N, 3, 224, 224), dtype=np.float32)
    labels_host = rng.integers(0, 1000, size=N)
    net = mc.models.zfnet(num_classes=1000).to("cuda")
    opt = SGD(net, lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss = mc.nn.SoftmaxCrossEntropy()
    x, labels = cp.asarray(x_host), cp.asarray(labels_host)

    def mc_step():
        loss.forward(net.forward(x, train=True), labels)
        net.backward(loss.backward())
        opt.step()

    t_mc = timer.minconv(mc_step)
    del net, opt, x
    cp.get_default_memory_pool().free_all_blocks()
    t_torch = None
    if torch is not None:
        model = torch_zfnet(torch).cuda().train()
        topt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        tx = torch.as_tensor(x_host, device="cuda")
        ty = torch.as_tensor(labels_host, device="cuda")

        def torch_step():
            topt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(tx), ty).backward()
            topt.step()

        t_torch = timer.pytorch(torch_step)
    return [("ZFNet SGD step", "fwd+bwd+update", t_mc, t_torch, None)]


def table(rows):
    from _timing import markdown_table
    lines, totals = [], {}
    for name, what, t_mc, t_torch, flops in rows:
        tflops = f"{flops / (t_mc * 1e-3) / 1e12:.1f}" if flops else "-"
        ratio = f"{t_mc / t_torch:.2f}" if t_torch else "-"
        lines.append((name, what, f"{t_mc:.2f}", f"{t_torch:.2f}" if t_torch else "-", tflops,
                      ratio))
        if name.startswith("conv"):
            a, b = totals.get(what, (0.0, 0.0))
            totals[what] = (a + t_mc, b + (t_torch or 0.0))
    for what, (a, b) in totals.items():
        lines.append(("**5 convs**", what, f"{a:.2f}", f"{b:.2f}" if b else "-", "-",
                      f"**{a / b:.2f}**" if b else "-"))
    return markdown_table(["layer", "pass", "minconv ms", "PyTorch ms", "minconv TFLOP/s",
                           "minconv/PyTorch"], lines)


def main(argv=None):
    args = parse(argv)
    # both must be set before CuPy and the CUDA libraries load
    os.environ["CUPY_TF32"] = "1" if args.tf32 else "0"
    if not args.tf32:
        os.environ["NVIDIA_TF32_OVERRIDE"] = "0"
    import minconv as mc
    from minconv.backend import cupy_available
    if not cupy_available():
        sys.exit("bench_gpu: no CUDA GPU available. This benchmark needs an NVIDIA GPU and CuPy "
                 "(pip install -e '.[gpu]'); for the CPU, run benchmarks/bench_layers.py.")
    import cupy as cp
    try:
        import torch
        if not torch.cuda.is_available():
            print("note: this PyTorch has no CUDA; PyTorch columns are left empty\n")
            torch = None
    except ImportError:
        print("note: PyTorch not installed; PyTorch columns are left empty\n")
        torch = None
    if torch is not None:
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
        torch.backends.cudnn.benchmark = True
    if args.workspace_mb is not None:
        mc.functional.set_workspace_limit(args.workspace_mb * 2 ** 20)

    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    versions = f"CuPy {cp.__version__}"
    if torch is not None:
        versions += f", PyTorch {torch.__version__} (cuDNN {torch.backends.cudnn.version()})"
    print(f"device: {name}; {versions}")
    print(f"float32, batch {args.batch}, 224x224 inputs; TF32 {'on' if args.tf32 else 'off'} on "
          f"both sides; minconv im2col workspace "
          f"{mc.functional.workspace_limit() / 2 ** 20:.0f} MB; medians of {args.repeats} "
          f"after {args.warmup} warm-up calls\n")

    rng = np.random.default_rng(0)
    timer = Timer(cp, torch, args.repeats, args.warmup)
    rows = bench_convs(mc, cp, torch, timer, args.batch, rng)
    rows += bench_pool_lrn(mc, cp, torch, timer, args.batch, rng)
    cp.get_default_memory_pool().free_all_blocks()
    if not args.no_step:
        rows += bench_step(mc, cp, torch, timer, args.batch, rng)
    print(table(rows))


if __name__ == "__main__":
    main()
