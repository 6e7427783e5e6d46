"""Inference of the ONNX light model-zoo architectures: minconv vs onnxruntime vs PyTorch.

    python benchmarks/bench_onnx.py                       # all seven models, batch 1 and 8
    python benchmarks/bench_onnx.py --models vgg19,resnet50 --batches 1 --repeats 3
    python benchmarks/bench_onnx.py --layers --models squeezenet --batches 8   # minconv's time by layer type

The ``onnx`` package ships the graphs of bvlc_alexnet, zfnet512, vgg19, resnet50,
inception_v1, densenet121 and squeezenet (onnx/backend/test/data/light) with their
weights reduced to ConstantOfShape fills. Here each fill becomes a random initializer
(He-scaled normal, BatchNorm statistics near 1 and 0) and the batch size becomes
symbolic, and the final Softmax is dropped (outputs are compared as logits: random
weights saturate the probabilities); the same .onnx file is then run by

  minconv       mc.io.load_onnx(..., fold_batchnorm=True), net.lock_weights(), net.forward(x)
  onnxruntime   InferenceSession, CPU provider, all graph optimisations
  PyTorch       the same imported graph run node by node with torch.nn.functional on the
                same weights (an onnx2torch-style conversion; onnx2torch itself is not
                installed)

Both minconv and PyTorch run the graph loaded with ``fold_batchnorm=True`` (each
BatchNormalization, and each per-channel Mul and Add, folded into the Conv or
normalisation that alone feeds it), as onnxruntime's graph optimisations do
(``--no-fold`` keeps every node). minconv locks the weights (read-only: the layouts its
kernels derive from them are derived once and kept, as onnxruntime's session prepacks
its weights when it loads the model; ``--no-lock`` derives them on every call).

Each framework runs in a process of its own, one after the other, so that no runtime's
idle threads (onnxruntime's and OpenMP's spin for a while after each call) take a core
from the next. minconv runs with ``runtime.configure(malloc="keep")``, the trainer's
setting, as in bench_models.py (``--malloc default`` for glibc's own: every activation
over 32 MB is then a fresh mapping whose pages fault in on first touch, on every pass).
Times are medians of ``--repeats`` runs after a warm-up of at least two runs and
``--warmup`` seconds (each framework alike), in ms (with ``--rounds R``
the median of R such medians, each framework's R processes alternating with the
others'); the ratios are minconv's time over the others' within each round (the three
processes back to back), the median over the rounds: a slow spell of this shared machine
that covers a round then leaves its ratios alone. With more than one round, each
model's per-round ratios to onnxruntime follow the table, sorted, with how many are within
the 1.5x target. The outputs are compared afterwards.
"""
import argparse
import os
import sys
import tempfile

import _timing  # noqa: E402,F401  before NumPy: it sets OPENBLAS_THREAD_TIMEOUT
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import machine, markdown_table, median_ms  # noqa: E402

MODELS = {"alexnet": "bvlc_alexnet", "zfnet512": "zfnet512", "vgg19": "vgg19",
          "resnet50": "resnet50", "inception_v1": "inception_v1",
          "densenet121": "densenet121", "squeezenet": "squeezenet"}


def light_model_path(name):
    import onnx
    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light",
                        f"light_{name}.onnx")


def randomized(path, seed=0):
    """The light model with random initializers for its ConstantOfShape weights and a
    symbolic batch size."""
    import onnx
    from onnx import numpy_helper
    rng = np.random.default_rng(seed)
    model = onnx.load(path)
    graph = model.graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers = {}
    for node in graph.node:
        for position, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node.op_type, position))
    keep, new = [], []
    last = graph.node[-1]
    if last.op_type == "Softmax" and last.output[0] == graph.output[0].name:
        # compare logits: random weights saturate the probabilities to one-hot vectors
        graph.output[0].name = last.input[0]
        graph.node.pop()
    for node in graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in init:
            shape = tuple(int(s) for s in init[node.input[0]])
            uses = consumers.get(node.output[0], [("", 0)])
            new.append(numpy_helper.from_array(_weight(shape, uses[0], rng), node.output[0]))
        else:
            keep.append(node)
    weights = {t.name for t in new}
    for node in keep:  # Reshape targets that fixed the batch size copy it instead
        if node.op_type == "Reshape" and node.input[1] in init and node.input[0] not in weights:
            target = init[node.input[1]].copy()
            target[0] = 0
            new.append(numpy_helper.from_array(target.astype(np.int64), node.input[1]))
    replaced = {t.name for t in new}
    used = {name for node in keep for name in node.input}
    initializers = [t for t in graph.initializer if t.name not in replaced and t.name in used]
    initializers += new
    del graph.node[:]
    graph.node.extend(keep)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    names = {t.name for t in initializers}
    inputs = [i for i in graph.input if i.name not in names and i.name in used]
    del graph.input[:]
    graph.input.extend(inputs)
    del graph.value_info[:]
    for value in list(graph.input) + list(graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    model.ir_version = max(model.ir_version, 4)  # initializers need not be graph inputs
    return model


def _weight(shape, use, rng):
    """Random values for a weight of ``shape`` read by input ``position`` of ``op``: He-scaled
    filters and matrices, small biases, BatchNorm-like scales (also DenseNet's, which reach
    their Mul through an Unsqueeze) near 1, so activations neither vanish nor explode."""
    op, position = use
    if (op == "BatchNormalization" and position in (1, 4)) or op == "Unsqueeze":
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if len(shape) == 1:
        return (rng.standard_normal(shape) * 0.01).astype(np.float32)
    fan_in = int(np.prod(shape[1:]))
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


# ------------------------------------------------------------------ PyTorch, node by node

def torch_runner(graph):
    """A function x -> y running minconv's imported ``graph`` with torch ops."""
    import torch
    import torch.nn.functional as TF
    from minconv import nn
    from minconv.nn import arith, tensor_ops, window_pool
    t = {k: torch.from_numpy(np.array(v)) for k, v in graph.params.items()}
    buffers = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in graph.buffers.items()}

    def op(name, layer, xs):
        x = xs[0]
        if isinstance(layer, nn.Conv2D):
            return TF.conv2d(x, t[f"{name}.W"], t.get(f"{name}.b"), layer.stride, layer.padding,
                             layer.dilation, layer.groups)
        if isinstance(layer, nn.ReLU):
            return TF.relu(x)
        if isinstance(layer, nn.MaxPool2D):
            return TF.max_pool2d(x, layer.kernel_size, layer.stride, layer.padding,
                                 ceil_mode=layer.ceil_mode)
        if isinstance(layer, window_pool.PaddedMaxPool2D):
            top, left, bottom, right = layer.pads
            x = TF.pad(x, (left, right, top, bottom), value=-float("inf"))
            return TF.max_pool2d(x, layer.kernel_size, layer.stride, 0, layer.dilation,
                                 ceil_mode=layer.ceil_mode)
        if isinstance(layer, nn.AvgPool2D):
            return TF.avg_pool2d(x, layer.kernel_size, layer.stride, layer.padding,
                                 layer.ceil_mode, layer.count_include_pad)
        if isinstance(layer, window_pool.PaddedAvgPool2D) and layer.dilation == (1, 1):
            top, left, bottom, right = layer.pads
            if (top, left) == (bottom, right):
                return TF.avg_pool2d(x, layer.kernel_size, layer.stride, (top, left),
                                     layer.ceil_mode, layer.count_include_pad)
            # asymmetric pads (inception_v1's last pooling): window sums of the zero-padded
            # input over the counted taps, as ONNX defines them
            (Ho, eh), (Wo, ew) = window_pool.window_geometry(
                name, tuple(x.shape), layer.kernel_size, layer.stride, layer.pads,
                layer.dilation, layer.ceil_mode)
            padded = TF.pad(x, (left, right + ew, top, bottom + eh))
            kh, kw = layer.kernel_size
            sums = TF.avg_pool2d(padded, layer.kernel_size, layer.stride)[..., :Ho, :Wo] * (kh * kw)
            divisor = layer._divisor(np, tuple(x.shape), tuple(padded.shape), Ho, Wo, np.float32)
            return sums / torch.from_numpy(divisor)
        if isinstance(layer, window_pool.GlobalAvgPool):
            return x.mean((2, 3), keepdim=True)
        if isinstance(layer, nn.LRN):
            return TF.local_response_norm(x, layer.size, layer.alpha, layer.beta, layer.k)
        if isinstance(layer, nn.Linear):
            return TF.linear(x, t[f"{name}.W"], t.get(f"{name}.b"))
        if isinstance(layer, nn.BatchNorm2D):
            return TF.batch_norm(x, buffers[f"{name}.running_mean"],
                                 buffers[f"{name}.running_var"], t[f"{name}.gamma"],
                                 t[f"{name}.beta"], False, 0.0, layer.eps)
        if isinstance(layer, (nn.Identity, nn.Dropout)):
            return x
        if isinstance(layer, (nn.Flatten, tensor_ops.Flatten)):
            return torch.flatten(x, 1)
        if isinstance(layer, tensor_ops.Reshape):
            return x.reshape(tensor_ops.reshape_target(tuple(x.shape), layer.shape))
        if isinstance(layer, tensor_ops.Unsqueeze):
            return x.reshape(layer._output_shape(tuple(x.shape)))
        if isinstance(layer, arith.Softmax):
            return torch.softmax(x.flatten(1), 1).reshape(x.shape) if layer.flatten else \
                torch.softmax(x, layer.axis)
        if isinstance(layer, arith.Scale):
            return x * t[f"{name}.scale"]
        if isinstance(layer, arith.Shift):
            return x + t[f"{name}.b"]
        if isinstance(layer, nn.Add):
            return sum(xs[1:], xs[0])
        if isinstance(layer, nn.Concat):
            return torch.cat(xs, layer.axis)
        raise ValueError(f"bench_onnx: no torch form for {name} ({type(layer).__name__})")

    output = graph.output
    needed = graph._ancestors(output)
    order = [(name, graph[name], graph.inputs_of(name)) for name in graph.order()
             if name in needed]

    def run(x):
        values = {"input": torch.from_numpy(x)}
        with torch.no_grad():
            for name, layer, inputs in order:
                values[name] = op(name, layer, [values[i] for i in inputs])
        return values[output].numpy()
    return run


FRAMEWORKS = ("minconv", "onnxruntime", "torch")


def child(args):
    """One framework on one model, alone in this process (no other runtime's threads
    spinning beside it): writes each batch's output and median time to ``args.out``."""
    if args.child == "torch":
        import torch  # before minconv, which asks OpenMP to sleep when idle: torch keeps its default
        torch.set_num_threads(args.threads)
    import onnx
    import minconv as mc
    model = randomized(light_model_path(MODELS[args.model]))
    shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:])
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, f"{args.model}.onnx")
        onnx.save(model, path)
        net = mc.io.load_onnx(path, fold_batchnorm=args.fold)
        if args.child == "onnxruntime":
            import onnxruntime as ort
            options = ort.SessionOptions()
            options.intra_op_num_threads = args.threads
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            run = lambda x: session.run(None, {name: x})[0]  # noqa: E731
        elif args.child == "torch":
            run = torch_runner(net)
        else:
            mc.runtime.configure(malloc=args.malloc)
            if args.lock:
                net.lock_weights()
            run = net.forward
    results = {}
    for batch in (int(b) for b in args.batches.split(",")):
        x = np.random.default_rng(1).standard_normal((batch,) + shape).astype(np.float32)
        results[f"y{batch}"] = run(x)
        results[f"ms{batch}"] = np.float64(median_ms(lambda: run(x), args.repeats,
                                                     warmup_s=args.warmup))
    np.savez(args.out, **results)


def layer_times(args):
    """minconv alone: each imported graph's forward time split by layer type (a timer
    around every node, medians over ``--repeats`` passes), as a markdown table."""
    import collections
    import time
    import onnx
    import minconv as mc
    mc.runtime.configure(malloc=args.malloc)
    rows = []
    for key in args.models.split(","):
        model = randomized(light_model_path(MODELS[key]))
        shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:])
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, f"{key}.onnx")
            onnx.save(model, path)
            net = mc.io.load_onnx(path, fold_batchnorm=args.fold)
        if args.lock:
            net.lock_weights()
        forward_child = net._forward_child
        passes = []

        def timed(name, layer, *rest, **options):
            start = time.perf_counter()
            y = forward_child(name, layer, *rest, **options)
            passes[-1][type(layer).__name__] += time.perf_counter() - start
            return y

        net._forward_child = timed
        for batch in (int(b) for b in args.batches.split(",")):
            x = np.random.default_rng(1).standard_normal((batch,) + shape).astype(np.float32)
            passes.clear()
            for _ in range(args.repeats + 1):  # the first pass warms up
                passes.append(collections.Counter())
                net.forward(x)
            passes = passes[1:]
            total = float(np.median([sum(p.values()) for p in passes])) * 1e3
            counts = collections.Counter(type(net[n]).__name__ for n in net.names)
            for kind in sorted(counts, key=lambda k: -np.median([p[k] for p in passes])):
                ms = float(np.median([p[kind] for p in passes])) * 1e3
                rows.append((key, batch, kind, counts[kind], f"{ms:.1f}", f"{ms / total:.0%}"))
    print(markdown_table(("model", "batch", "layer", "nodes", "minconv ms", "of the pass"), rows))


def run_child(framework, model, args, folder):
    import subprocess
    out = os.path.join(folder, f"{framework}_{model}.npz")
    command = [sys.executable, os.path.abspath(__file__), "--child", framework, "--model",
               model, "--batches", args.batches, "--repeats", str(args.repeats), "--warmup",
               str(args.warmup), "--threads",
               str(args.threads), "--malloc", args.malloc, "--out", out]
    if not args.fold:
        command.append("--no-fold")
    if not args.lock:
        command.append("--no-lock")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench_onnx: {framework} on {model} failed:\n{done.stderr[-2000:]}")
    with np.load(out) as f:
        return dict(f)


def _rounds(model, args, folder):
    """Each framework's results on ``model``, its times the median over ``args.rounds``
    rounds, the three frameworks alternating within each round: a slow spell of the
    machine (minutes long, here) then touches every framework alike instead of one. Each
    round's times are kept too (``rounds<batch>``), for ratios taken within a round."""
    runs = {f: [] for f in FRAMEWORKS}
    for _ in range(args.rounds):
        for framework in FRAMEWORKS:
            runs[framework].append(run_child(framework, model, args, folder))
    merged = []
    for framework in FRAMEWORKS:
        result = dict(runs[framework][0])
        for key in list(result):
            if key.startswith("ms"):
                result["rounds" + key[2:]] = np.array([run[key] for run in runs[framework]])
                result[key] = np.median(result["rounds" + key[2:]])
        merged.append(result)
    return merged


def _ms(t):
    """A time in milliseconds to three significant figures (6.62, 48.9, 191, 1483)."""
    return f"{t:.3g}" if t < 1000 else f"{t:.0f}"


def _round_ratios(ours, theirs, batch):
    """minconv's time over the other's in each round (the processes back to back)."""
    return ours[f"rounds{batch}"] / theirs[f"rounds{batch}"]


def _paired_ratio(ours, theirs, batch):
    """The median over rounds of minconv's time over the other's in the same round."""
    return float(np.median(_round_ratios(ours, theirs, batch)))


def _spread_line(key, batch, ratios, limit=1.5):
    """One model's per-round ratios to onnxruntime, sorted, and how many are within
    ``limit`` (the target): how far a median of rounds can be trusted on a noisy machine."""
    within = int(np.sum(ratios <= limit))
    return (f"{key} batch {batch}: {' '.join(f'{r:.2f}' for r in np.sort(ratios))} "
            f"({within} of {len(ratios)} rounds at most {limit}x)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds of untimed runs before the timed ones (at least two "
                             "runs), for every framework")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run each framework's process this many times, alternating, "
                             "and report the median of its medians")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--malloc", choices=("keep", "default"), default="keep",
                        help="minconv's malloc policy (runtime.configure); keep: the trainer's")
    parser.add_argument("--no-fold", dest="fold", action="store_false",
                        help="keep the BatchNormalization nodes (minconv and PyTorch)")
    parser.add_argument("--no-lock", dest="lock", action="store_false",
                        help="minconv: leave the weights unlocked (their layouts derived on "
                             "every call)")
    parser.add_argument("--layers", action="store_true",
                        help="minconv alone: its time by layer type")
    parser.add_argument("--child", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    if args.layers:
        return layer_times(args)
    import onnxruntime as ort
    import torch
    print(f"# {machine()}, torch {torch.__version__}, onnxruntime {ort.__version__}, "
          f"{args.threads} threads, each framework in its own process ({args.rounds} "
          f"round{'s' if args.rounds > 1 else ''}), minconv malloc="
          f"{args.malloc}, BatchNormalization {'folded' if args.fold else 'kept'}, weights "
          f"{'locked' if args.lock else 'unlocked'}")
    rows, spreads = [], []
    with tempfile.TemporaryDirectory() as folder:
        for key in args.models.split(","):
            ours, theirs, torchs = _rounds(key, args, folder)
            for batch in (int(b) for b in args.batches.split(",")):
                y, y_ort, y_torch = ours[f"y{batch}"], theirs[f"y{batch}"], torchs[f"y{batch}"]
                scale = max(np.abs(y_ort).max(), 1e-12)
                agree = max(np.abs(y - y_ort).max(), np.abs(y_torch - y_ort).max()) / scale
                t_mc, t_ort, t_torch = (float(r[f"ms{batch}"]) for r in (ours, theirs, torchs))
                spreads.append(_spread_line(key, batch, _round_ratios(ours, theirs, batch)))
                rows.append((key, batch, _ms(t_mc), _ms(t_ort), _ms(t_torch),
                             f"{_paired_ratio(ours, theirs, batch):.2f}",
                             f"{_paired_ratio(ours, torchs, batch):.2f}", f"{agree:.0e}"))
                print(markdown_table(("model", "batch", "minconv ms", "onnxruntime ms",
                                      "PyTorch ms", "/ ort", "/ torch", "max diff"),
                                     rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(markdown_table(("model", "batch", "minconv ms", "onnxruntime ms", "PyTorch ms",
                          "minconv / ort", "minconv / torch", "max rel. diff"), rows))
    if args.rounds > 1:
        print("\nminconv / onnxruntime in each round, sorted:")
        print("\n".join(spreads))


if __name__ == "__main__":
    main()
