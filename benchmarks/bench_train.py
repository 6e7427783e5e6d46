"""Training speed: minconv against PyTorch CPU on the same nets, steps and data.

    python benchmarks/bench_train.py                 # both parts below
    python benchmarks/bench_train.py --part mini     # zfnet_mini epoch on Fashion-MNIST
    python benchmarks/bench_train.py --part zfnet    # full ZFNet SGD step, batch 8 and 32
    python benchmarks/bench_train.py --steps 60      # time 60 steps, scale to an epoch

1. An epoch of ``zfnet_mini`` on Fashion-MNIST at batch 128: the same batches
   (minconv's loader: random crops and flips), SGD with momentum 0.9 and weight
   decay 5e-4, in both frameworks.
2. One SGD step of the full ZFNet on 224x224 inputs at batch 8 and 32: time per
   step (median of several after a warm-up) and peak resident memory, each
   measured in a fresh process (``resource.getrusage``) so the figures do not mix.

Both frameworks use the same threads (``--threads``, default all cores). The
output is a markdown table with minconv/PyTorch ratios.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import _timing  # noqa: E402,F401  before NumPy: it sets OPENBLAS_THREAD_TIMEOUT
import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def torch_zf_body(torch_nn, widths, kernels, strides, pads, fc, flat, classes, in_channels):
    """The PyTorch twin of minconv.models' ZF skeleton (same layers, same order)."""
    layers, c = [], (in_channels,) + tuple(widths)
    for i in range(5):
        layers += [torch_nn.Conv2d(c[i], c[i + 1], kernels[i], strides[i], pads[i]),
                   torch_nn.ReLU(inplace=True)]
        if i in (0, 1, 4):
            layers.append(torch_nn.MaxPool2d(3, 2, ceil_mode=True))
        if i in (0, 1):
            layers.append(torch_nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0))
    layers += [torch_nn.Flatten(), torch_nn.Linear(flat, fc), torch_nn.ReLU(inplace=True),
               torch_nn.Dropout(0.5), torch_nn.Linear(fc, fc), torch_nn.ReLU(inplace=True),
               torch_nn.Dropout(0.5), torch_nn.Linear(fc, classes)]
    return torch_nn.Sequential(*layers)


def torch_net(name, config):
    import torch.nn as torch_nn
    kw = config["kwargs"]
    if name == "zfnet":
        return torch_zf_body(torch_nn, (96, 256, 384, 384, 256), (7, 5, 3, 3, 3),
                             (2, 2, 1, 1, 1), (1, 0, 1, 1, 1), 4096, 9216,
                             kw["num_classes"], kw["in_channels"])
    side = 3 if kw["size"] == 28 else None
    return torch_zf_body(torch_nn, kw["widths"], (5, 5, 3, 3, 3), (1,) * 5, (2, 2, 1, 1, 1),
                         kw["fc_width"], side * side * kw["widths"][-1], kw["num_classes"],
                         kw["in_channels"])


# ------------------------------------------------------------------ one process, one measurement

def child(args):
    """Time ``args.steps`` SGD steps of one framework; print a JSON line."""
    if args.framework == "torch":
        import torch  # noqa: F401  first: PyTorch keeps its own OpenMP settings, not minconv's
    import minconv as mc
    from minconv import data, models, train
    mc.nn.set_seed(0)
    build = models.zfnet if args.model == "zfnet" else models.zfnet_mini
    # the PyTorch side never builds minconv's net: its memory would count against PyTorch
    net = build() if args.framework == "minconv" else None
    config = {"kwargs": dict(num_classes=1000, in_channels=3)} if args.model == "zfnet" \
        else models.zfnet_mini(widths=(1,) * 5, fc_width=1).config
    if args.model == "zfnet":
        rng = np.random.default_rng(0)
        x = rng.standard_normal((args.batch, 3, 224, 224)).astype(np.float32) * 50
        y = rng.integers(0, 1000, args.batch)
        batches = [(x, y)] * (args.steps + args.warmup)
    else:
        images, labels = data.load_idx(args.data, "train")
        loader = data.ArrayLoader(images, labels, args.batch, shuffle=True, augment=True,
                                  seed=0)
        batches = []
        for i, batch in enumerate(loader):  # prepared up front: both pay the same for data
            if i == args.steps + args.warmup:
                break
            batches.append(batch)
    times = []
    if args.framework == "minconv":
        opt = train.SGD(net, lr=0.01, momentum=0.9, weight_decay=5e-4,
                        renorm_radius=0.1 if args.model == "zfnet" else None)
        trainer = train.Trainer(net, opt, [], progress=False, verbose=False)
        for i, (x, y) in enumerate(batches):
            start = time.perf_counter()
            trainer.train_step(x, y)
            times.append(time.perf_counter() - start)
    else:
        import torch
        torch.set_num_threads(args.threads)
        if args.model == "zfnet_mini":
            config["kwargs"].update(widths=list(models.MINI_WIDTHS), fc_width=512)
        tnet = torch_net(args.model, config)
        opt = torch.optim.SGD(tnet.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        loss_fn = torch.nn.CrossEntropyLoss()
        for x, y in batches:
            start = time.perf_counter()
            xt, yt = torch.from_numpy(x), torch.from_numpy(y)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(tnet(xt), yt)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - start)
    steady = times[args.warmup:]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"framework": args.framework, "model": args.model, "batch": args.batch,
                      "step_s": float(np.median(steady)), "mean_step_s": float(np.mean(steady)),
                      "peak_rss_mb": peak_mb}))


def measure(framework, model, batch, steps, warmup, args):
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
               OPENBLAS_NUM_THREADS=str(args.threads))
    command = [sys.executable, os.path.abspath(__file__), "--child", "--framework", framework,
               "--model", model, "--batch", str(batch), "--steps", str(steps), "--warmup",
               str(warmup), "--threads", str(args.threads), "--data", args.data]
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{framework} {model} batch {batch} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("all", "mini", "zfnet"), default="all")
    p.add_argument("--steps", type=int, default=0,
                   help="mini: steps timed and scaled to an epoch (0: a whole epoch)")
    p.add_argument("--zf-steps", type=int, default=3, help="zfnet: steps timed per batch size")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--framework", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=int, default=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    rows = ["| benchmark | minconv | PyTorch | ratio |", "| --- | ---: | ---: | ---: |"]
    if args.part in ("all", "mini"):
        per_epoch = -(-60000 // 128)
        steps = args.steps or per_epoch
        result = {fw: measure(fw, "zfnet_mini", 128, steps, 2, args)
                  for fw in ("minconv", "torch")}
        epoch = {fw: r["mean_step_s"] * per_epoch for fw, r in result.items()}
        rows.append(f"| zfnet_mini epoch, Fashion-MNIST, batch 128 ({steps} steps timed) | "
                    f"{epoch['minconv']:.1f} s | {epoch['torch']:.1f} s | "
                    f"{epoch['minconv'] / epoch['torch']:.2f} |")
        print(rows[-1], flush=True)
    if args.part in ("all", "zfnet"):
        for batch in (8, 32):
            result = {fw: measure(fw, "zfnet", batch, args.zf_steps, 1, args)
                      for fw in ("minconv", "torch")}
            m, t = result["minconv"], result["torch"]
            rows.append(f"| ZFNet SGD step, 224x224, batch {batch} | {m['step_s']:.2f} s | "
                        f"{t['step_s']:.2f} s | {m['step_s'] / t['step_s']:.2f} |")
            rows.append(f"| ZFNet peak memory (RSS), batch {batch} | {m['peak_rss_mb']:.0f} MB "
                        f"| {t['peak_rss_mb']:.0f} MB | "
                        f"{m['peak_rss_mb'] / t['peak_rss_mb']:.2f} |")
            print("\n".join(rows[-2:]), flush=True)
    print(f"\n{args.threads} threads\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
