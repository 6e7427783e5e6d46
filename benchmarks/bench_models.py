"""The seeds' families at 224x224: minconv against PyTorch CPU (torchvision's nets).

    python benchmarks/bench_models.py                      # every model, batch 8 and 32
    python benchmarks/bench_models.py --quick              # resnet18 and googlenet, batch 8
    python benchmarks/bench_models.py --models resnet50 --batches 8 --steps 3
    python benchmarks/bench_models.py --bn                 # BatchNorm alone, forward+backward

For each model and batch size, each framework runs in a fresh process (so that peak
resident memory is its own, counted from the moment the net is built: Linux's VmHWM,
reset then): the same weights (torchvision's, loaded
into minconv with ``minconv.io.from_torch_state_dict``), the same random images;
``forward`` is inference (evaluation mode, no gradients kept; minconv's weights locked,
``net.lock_weights()``, so that the layouts its kernels read are derived once), ``step``
one SGD step (training mode: BatchNorm on batch statistics, loss, backward, update;
unlocked). Times are medians of ``--steps`` runs after a warm-up (with ``--rounds R``,
each figure the median over R processes per framework, minconv's and PyTorch's
alternating). In minconv's process minconv is imported before torch, which only supplies the weights: torch's OpenMP runtime, loaded first,
would keep its idle threads spinning beside minconv's workers (minconv warns then).
Both frameworks get the same threads;
minconv runs with ``runtime.configure(malloc="keep")``, the trainer's setting
(``--malloc default`` for glibc's own).
The output is a markdown table with minconv/PyTorch ratios.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import types

import _timing  # noqa: E402,F401  before NumPy: it sets OPENBLAS_THREAD_TIMEOUT
import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(ROOT))
sys.path.insert(0, ROOT)

from _timing import machine, markdown_table, median_ms  # noqa: E402

MODELS = ("resnet18", "resnet50", "vgg16", "googlenet", "densenet121")


def _torchvision():
    # torchvision's compiled operators do not load with this CPU torch; its model
    # definitions are pure Python and need only this module kept from loading
    sys.modules.setdefault("torchvision._meta_registrations",
                           types.ModuleType("torchvision._meta_registrations"))
    import torchvision
    return torchvision


def torch_model(name):
    import torch
    tv = _torchvision()
    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
    return getattr(tv.models, name)(**kwargs)


def child(args):
    """One (framework, model, batch) measurement, printed as JSON."""
    if args.framework == "minconv":
        # first, as a user of minconv would: OpenMP's idle threads then sleep (torch's
        # runtime, loaded first, would keep them spinning beside minconv's workers)
        import minconv  # noqa: F401
    import torch  # the PyTorch child loads it first and keeps PyTorch's own OpenMP policy
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, 224, 224)).astype(np.float32)
    y = rng.integers(0, 1000, args.batch)
    result = {}
    inference, training = (lambda: None), (lambda: None)
    if args.framework == "torch":
        model = torch_model(args.model)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9,
                                    weight_decay=1e-4)

        def forward():
            model.eval()
            with torch.no_grad():
                model(xt)

        def step():
            model.train()
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(xt), yt).backward()
            optimizer.step()
    else:
        import minconv as mc
        from minconv.nn.base import shapes_only
        from minconv.train.optim import SGD
        # "keep" (the trainer's setting): freed activations are reused, not unmapped and
        # faulted in again on every pass (DenseNet-121's forward pass takes twice as long
        # without), at the cost of a larger resident set (VGG-16's grows by ~15%)
        with shapes_only():  # the weights come from torchvision: draw none
            net = mc.models.build(args.model)
        mc.io.from_torch_state_dict(net, torch_model(args.model).state_dict())
        # after the torchvision copy is freed (under glibc's own policy: handed back)
        mc.runtime.configure(malloc=args.malloc)
        optimizer = SGD(net, lr=1e-3, momentum=0.9, weight_decay=1e-4)
        loss = mc.nn.SoftmaxCrossEntropy()
        lowest = net.names[optimizer.lowest_trainable_layer()]
        # inference with the weights locked (their layouts derived once), training unlocked
        inference, training = net.lock_weights, net.unlock_weights

        def forward():
            net.forward(x, train=False)
            net.clear_cache()

        def step():
            loss.forward(net.forward(x, train=True), y)
            net.backward(loss.backward(), stop=lowest, release=True)
            net.clear_cache()
            loss.clear_cache()
            optimizer.step()
    reset_peak = _reset_peak_rss()
    inference()
    result["forward_ms"] = median_ms(forward, args.steps, warmup=1)
    training()
    result["step_ms"] = median_ms(step, args.steps, warmup=1)
    result["peak_mb"] = _peak_rss_mb() if reset_peak else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def _reset_peak_rss():
    """Start the peak resident set afresh once the net is built (Linux: writing 5 to
    /proc/self/clear_refs). Loading torchvision's weights into minconv holds both copies
    for a moment, a peak that belongs to the benchmark, not to the framework. False where
    the kernel does not allow it (then the whole process's peak is reported)."""
    import gc
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bn_child(args):
    """BatchNorm forward + backward in training mode on ResNet's first map (N, 64, 112, 112)."""
    import minconv as mc  # first: both frameworks share its OpenMP setting (idle threads sleep)
    import torch
    torch.set_num_threads(args.threads)
    x = np.random.default_rng(0).standard_normal((args.batch, 64, 112, 112)).astype(np.float32)
    dy = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    bn = mc.nn.BatchNorm2D(64)
    tbn = torch.nn.BatchNorm2d(64)
    xt, dyt = torch.from_numpy(x).requires_grad_(True), torch.from_numpy(dy)

    def ours():
        bn.forward(x, train=True)
        bn.backward(dy)

    def theirs():
        xt.grad = None
        tbn(xt).backward(dyt)
    print(json.dumps({"minconv_ms": median_ms(ours, args.steps, 1),
                      "torch_ms": median_ms(theirs, args.steps, 1)}))


def measure(framework, model, batch, args):
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
               OPENBLAS_NUM_THREADS=str(args.threads))
    command = [sys.executable, os.path.abspath(__file__), "--child", framework, "--model", model,
               "--batch", str(batch), "--steps", str(args.steps), "--threads", str(args.threads),
               "--malloc", args.malloc]
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{framework} {model} batch {batch} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rounds(model, batch, args):
    """minconv's and PyTorch's figures, each the median over ``args.rounds`` processes,
    the two frameworks alternating: a slow spell of the machine (minutes long, here)
    then touches both alike instead of one."""
    runs = {"minconv": [], "torch": []}
    for _ in range(args.rounds):
        for framework in runs:
            runs[framework].append(measure(framework, model, batch, args))
    return [{key: float(np.median([run[key] for run in results])) for key in results[0]}
            for results in runs.values()]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--batches", nargs="+", type=int, default=[8, 32])
    p.add_argument("--steps", type=int, default=3, help="timed runs per figure (median)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--rounds", type=int, default=1, help="processes per figure, the two "
                   "frameworks alternating; the median is reported")
    p.add_argument("--quick", action="store_true", help="resnet18 and googlenet at batch 8")
    p.add_argument("--malloc", choices=("keep", "default"), default="keep",
                   help="minconv's malloc policy (runtime.configure); keep: the trainer's")
    p.add_argument("--bn", action="store_true", help="BatchNorm alone, batch --batches[0]")
    p.add_argument("--child", choices=("minconv", "torch", "bn"), help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child == "bn":
        return bn_child(args)
    if args.child:
        args.framework = args.child
        return child(args)
    print(f"{machine()}; {args.threads} threads; minconv malloc={args.malloc}; "
          f"{args.rounds} round{'s' if args.rounds > 1 else ''}\n")
    if args.bn:
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", "bn",
                              "--batch", str(args.batches[0]), "--steps", str(args.steps),
                              "--threads", str(args.threads)], capture_output=True, text=True,
                             env=env, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(markdown_table(["BatchNorm2D fwd+bwd", "minconv ms", "PyTorch ms", "ratio"],
                             [[f"({args.batches[0]}, 64, 112, 112)", f"{r['minconv_ms']:.1f}",
                               f"{r['torch_ms']:.1f}",
                               f"{r['minconv_ms'] / r['torch_ms']:.2f}"]]))
        return
    if args.quick:
        args.models, args.batches = ["resnet18", "googlenet"], [8]
    rows = []
    for model in args.models:
        for batch in args.batches:
            ours, theirs = _rounds(model, batch, args)
            rows.append([model, batch,
                         f"{ours['forward_ms']:.0f}", f"{theirs['forward_ms']:.0f}",
                         f"{ours['forward_ms'] / theirs['forward_ms']:.2f}",
                         f"{ours['step_ms']:.0f}", f"{theirs['step_ms']:.0f}",
                         f"{ours['step_ms'] / theirs['step_ms']:.2f}",
                         f"{ours['peak_mb']:.0f}", f"{theirs['peak_mb']:.0f}",
                         f"{ours['peak_mb'] / theirs['peak_mb']:.2f}"])
            print(markdown_table(["model", "batch", "fwd ms", "torch", "ratio", "step ms",
                                  "torch", "ratio", "peak MB", "torch", "ratio"], rows[-1:]),
                  flush=True)
    print()
    print(markdown_table(["model", "batch", "forward ms minconv", "PyTorch", "ratio",
                          "SGD step ms minconv", "PyTorch", "ratio", "peak RSS MB minconv",
                          "PyTorch", "ratio"], rows))


if __name__ == "__main__":
    main()
