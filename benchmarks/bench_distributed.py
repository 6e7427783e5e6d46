"""Data-parallel throughput over MPI, against one process and PyTorch DDP, and the scaling model.

    flock /tmp/bench.lock python benchmarks/bench_distributed.py            # measure + model
    python benchmarks/bench_distributed.py --model-only                      # the model alone
    python benchmarks/bench_distributed.py --mini-steps 30 --zf-steps 3

Measured (same global batch, same data, SGD with momentum 0.9 and weight decay 5e-4):

- ``zfnet_mini`` on Fashion-MNIST at global batch 128 (a fixed number of steps of an
  epoch) and one SGD step of the full ZFNet on 224x224 inputs at global batch 16;
- minconv in one process on all cores; in one process on one core; under
  ``mpirun -n 2`` with one core per rank; PyTorch DistributedDataParallel on gloo
  with 2 processes of one thread each (and PyTorch in one process on all cores).

Every configuration runs in fresh processes; images/s = global batch x steps / the
time of those steps after a warm-up (rank 0's clock between two barriers).

The scaling model (printed, not measured): a ring all-reduce of S bytes over R nodes
at link bandwidth BW moves 2(R-1)/R * S bytes per node in 2(R-1) steps of latency a,

    T_allreduce(R) = 2 (R - 1) / R * S / BW + 2 (R - 1) * a

and with a per-rank step time t_step (fixed per-rank batch: weak scaling) the
efficiency without overlap is t_step / (t_step + T_allreduce); overlapping the
all-reduce with the backward pass hides up to the backward's time.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import _timing  # noqa: E402,F401  before NumPy: it sets OPENBLAS_THREAD_TIMEOUT
import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

RESNET50_PARAMS = 25_557_032     # torchvision.models.resnet50(), where minconv lacks it
BANDWIDTHS = (10, 25, 100)       # Gbit/s
NODES = (2, 4, 8, 16, 32, 64)
LATENCY = 10e-6                  # seconds per ring step (a, typical of TCP/RDMA in a rack)


# ------------------------------------------------------------------ one measurement

def batches(model, batch, count, data_root):
    from minconv import data
    if model == "zfnet":
        rng = np.random.default_rng(0)
        x = (rng.standard_normal((batch, 3, 224, 224)) * 50).astype(np.float32)
        y = rng.integers(0, 1000, batch)
        return [(x, y)] * count
    images, labels = data.load_idx(data_root, "train")
    loader = data.ArrayLoader(images[:batch * count], labels[:batch * count], batch,
                              shuffle=True, augment=True, seed=0)
    return list(loader)


def child_minconv(args):
    import minconv as mc
    from minconv import distributed, models, runtime, train
    comm = distributed.world()
    if comm.size == 1:
        runtime.configure(threads=args.threads)
    mc.nn.set_seed(0)
    net = models.zfnet() if args.model == "zfnet" else models.zfnet_mini(dropout=0.0)
    opt = train.SGD(net, lr=0.01, momentum=0.9, weight_decay=5e-4)
    data = batches(args.model, args.batch, args.steps + args.warmup, args.data)
    trainer = train.Trainer(net, opt, data, progress=False, verbose=False,
                            comm=comm if comm.size > 1 else None)
    steps = list(trainer.train_loader)     # this rank's rows of every global batch
    for x, y in steps[:args.warmup]:
        trainer.train_step(x, y)
    comm.barrier()
    start = time.perf_counter()
    for x, y in steps[args.warmup:]:
        trainer.train_step(x, y)
    comm.barrier()
    report(comm.rank, args, time.perf_counter() - start)


def child_torch(args):
    import torch
    import torch.distributed as dist
    from bench_train import torch_net
    from minconv import models
    torch.set_num_threads(args.threads)
    ranks = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if ranks > 1:
        dist.init_process_group("gloo", rank=rank, world_size=ranks)
    torch.manual_seed(0)
    config = {"kwargs": dict(num_classes=1000, in_channels=3)} if args.model == "zfnet" else \
        {"kwargs": dict(models.zfnet_mini().config["kwargs"])}
    net = torch_net(args.model, config)
    for m in net.modules():
        if isinstance(m, torch.nn.Dropout) and args.model != "zfnet":
            m.p = 0.0
    if ranks > 1:
        net = torch.nn.parallel.DistributedDataParallel(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    data = batches(args.model, args.batch, args.steps + args.warmup, args.data)
    share = [(x[rank::ranks], y[rank::ranks]) for x, y in data]
    share = [(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)) for x, y in share]

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt.step()

    for x, y in share[:args.warmup]:
        step(x, y)
    if ranks > 1:
        dist.barrier()
    start = time.perf_counter()
    for x, y in share[args.warmup:]:
        step(x, y)
    if ranks > 1:
        dist.barrier()
    report(rank, args, time.perf_counter() - start)
    if ranks > 1:
        dist.destroy_process_group()


def report(rank, args, seconds):
    if rank == 0:
        print(json.dumps({"images_per_s": args.batch * args.steps / seconds,
                          "step_s": seconds / args.steps}), flush=True)


# ------------------------------------------------------------------ configurations

def run(kind, model, batch, steps, warmup, args):
    """Images/s and step time of one configuration, each in fresh processes."""
    base = [sys.executable, os.path.abspath(__file__), "--child", "--model", model, "--batch",
            str(batch), "--steps", str(steps), "--warmup", str(warmup), "--data", args.data]
    cores = os.cpu_count() or 1
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_"))}
    if kind in ("minconv 1 process, all cores", "minconv 1 process, 1 core"):
        threads = cores if "all" in kind else 1
        env.update(OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
        procs = [subprocess.Popen(base + ["--framework", "minconv", "--threads", str(threads)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=env)]
    elif kind == "minconv mpirun -n 2, 1 core each":
        mpirun = os.path.join(os.path.dirname(sys.executable), "mpirun")
        flags = ["--oversubscribe", "--bind-to", "none"] + \
            (["--allow-run-as-root"] if os.geteuid() == 0 else [])
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        procs = [subprocess.Popen([mpirun, "-n", "2"] + flags + base +
                                  ["--framework", "minconv", "--threads", "1"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=env)]
    elif kind == "PyTorch 1 process, all cores":
        procs = [subprocess.Popen(base + ["--framework", "torch", "--threads", str(cores)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=env)]
    elif kind == "PyTorch DDP gloo, 2 processes, 1 thread each":
        procs, port = [], free_port()
        for rank in range(2):
            e = dict(env, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                     WORLD_SIZE="2", OMP_NUM_THREADS="1")
            procs.append(subprocess.Popen(base + ["--framework", "torch", "--threads", "1"],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True, env=e))
    else:
        raise ValueError(kind)
    outputs = [p.communicate(timeout=1800) for p in procs]
    lines = [line for out, _ in outputs for line in out.splitlines() if line.startswith("{")]
    failed = [err for p, (_, err) in zip(procs, outputs) if p.returncode != 0]
    if failed and not lines:
        raise SystemExit(f"{kind} {model} failed:\n{failed[0][-3000:]}")
    if failed:  # the figure was printed; a process then failed on its way out
        print(f"({kind}: a process exited with an error after its measurement)", file=sys.stderr)
    return json.loads(lines[0])


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


KINDS = ("minconv 1 process, all cores", "minconv 1 process, 1 core",
         "minconv mpirun -n 2, 1 core each", "PyTorch 1 process, all cores",
         "PyTorch DDP gloo, 2 processes, 1 thread each")


def measure(args):
    from _timing import machine
    rows, step_times = [], {}
    for model, batch, steps, warmup, repeats in (
            ("zfnet_mini", 128, args.mini_steps, 3, args.repeats),
            ("zfnet", 16, args.zf_steps, 3, max(1, args.repeats - 1))):
        results = {}
        for _ in range(repeats):  # round robin, best of each: the machine is shared
            for kind in KINDS:
                r = run(kind, model, batch, steps, warmup, args)
                if kind not in results or r["images_per_s"] > results[kind]["images_per_s"]:
                    results[kind] = r
        one = results["minconv 1 process, all cores"]["images_per_s"]
        ddp = results["PyTorch DDP gloo, 2 processes, 1 thread each"]["images_per_s"]
        for kind, r in results.items():
            rows.append(f"| {model}, global batch {batch} | {kind} | {r['images_per_s']:.1f} | "
                        f"{r['step_s'] * 1e3:.0f} ms | {r['images_per_s'] / one:.2f} | "
                        f"{r['images_per_s'] / ddp:.2f} |")
            print(rows[-1], flush=True)
        step_times[model] = results["minconv mpirun -n 2, 1 core each"]["step_s"]
    print(f"\n{machine()}; {args.mini_steps} zfnet_mini steps and {args.zf_steps} ZFNet "
          f"steps timed after a warm-up, best of {args.repeats} (ZFNet: "
          f"{max(1, args.repeats - 1)}) round-robin runs (provisional: a shared machine)\n")
    print("| net | configuration | images/s | time per step | vs minconv 1 process, "
          "all cores | vs PyTorch DDP |")
    print("|---|---|---:|---:|---:|---:|")
    print("\n".join(rows))
    return step_times


# ------------------------------------------------------------------ the model on paper

def parameter_counts():
    from minconv import models
    counts = {"zfnet_mini": models.zfnet_mini().num_params(), "ZFNet": models.zfnet().num_params()}
    if hasattr(models, "resnet50"):
        counts["resnet50"] = models.resnet50().num_params()
    else:
        counts["resnet50"] = RESNET50_PARAMS
    return counts


def ring_seconds(nbytes, ranks, gbit, latency=LATENCY):
    """2 (R-1)/R * S / BW + 2 (R-1) * a."""
    return 2 * (ranks - 1) / ranks * nbytes / (gbit * 1e9 / 8) + 2 * (ranks - 1) * latency


def scaling_model(step_times):
    counts = parameter_counts()
    print("\nScaling model (a model, not a measurement): ring all-reduce of the float32 "
          "gradients,\nT = 2(R-1)/R * S / BW + 2(R-1) * a with a = "
          f"{LATENCY * 1e6:.0f} us; efficiency = t_step / (t_step + T), no overlap, "
          "fixed per-rank batch.\n")
    header = "| net | bytes per step | BW | " + " | ".join(f"R={r}" for r in NODES) + " |"
    print(header)
    print("|---|---:|---:|" + "---:|" * len(NODES))
    for name, n in counts.items():
        nbytes = 4 * n
        for gbit in BANDWIDTHS:
            cells = [f"{ring_seconds(nbytes, r, gbit) * 1e3:.1f} ms" for r in NODES]
            print(f"| {name} ({n:,} params) | {nbytes / 2 ** 20:.1f} MiB | {gbit} Gbit/s | "
                  + " | ".join(cells) + " |")
    measured = {"zfnet_mini": ("zfnet_mini", 64), "ZFNet": ("zfnet", 8)}
    print("\nProjected efficiency t / (t + T) with the step time measured here for one rank "
          "(its share of the global batch, one core):\n")
    print("| net | per-rank batch, t_step | BW | " + " | ".join(f"R={r}" for r in NODES) + " |")
    print("|---|---:|---:|" + "---:|" * len(NODES))
    for name, (key, batch) in measured.items():
        t = step_times.get(key)
        if t is None:
            continue
        for gbit in BANDWIDTHS:
            cells = [f"{t / (t + ring_seconds(4 * counts[name], r, gbit)):.0%}" for r in NODES]
            print(f"| {name} | {batch}, {t * 1e3:.0f} ms | {gbit} Gbit/s | "
                  + " | ".join(cells) + " |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mini-steps", type=int, default=30, help="zfnet_mini steps timed")
    p.add_argument("--zf-steps", type=int, default=3, help="ZFNet steps timed")
    p.add_argument("--repeats", type=int, default=3,
                   help="runs of each configuration, round robin; the best counts (ZFNet: "
                        "one fewer)")
    p.add_argument("--model-only", action="store_true", help="print the scaling model alone")
    p.add_argument("--step-times", type=json.loads, default={},
                   help='with --model-only: {"zfnet_mini": s, "zfnet": s} per-rank step times')
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--framework", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        if args.framework == "torch":
            sys.modules.setdefault("torchvision._meta_registrations", type(sys)("stub"))
            return child_torch(args)
        return child_minconv(args)
    step_times = args.step_times if args.model_only else measure(args)
    scaling_model(step_times)


if __name__ == "__main__":
    main()
