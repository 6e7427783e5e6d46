"""Layer-by-layer features (the paper's Table 6 style): how linearly separable are the
classes in the output of each layer?

The paper trains a linear classifier on the frozen features of each layer of its
ImageNet-trained net and finds the accuracy rising with depth. Here: a zfnet_mini trained
briefly on Fashion-MNIST (or any checkpoint), and for each layer a linear softmax on its
flattened, standardised outputs, trained on a training subset and scored on test images:

    p = softmax(W z + b),  z = (f_l(x) - mean) / std,  cross-entropy + weight decay, SGD

    python -m minconv.experiments probes [--checkpoint c.npz] [--quick]
"""
import numpy as np

from ..vis._common import chunks, like_net, to_numpy
from . import _common

LAYERS = ("input", "norm1", "norm2", "relu3", "relu4", "pool5", "relu6", "relu7")

DEFAULT = dict(train=500, test=2000, epochs=3, probe_train=300, probe_epochs=30)
QUICK = dict(train=10, test=50, epochs=1, probe_train=10, probe_epochs=3)


def features(net, x, layer, batch_size=250):
    """The output of ``layer`` for x, flattened to (N, D) float32 NumPy ("input": x itself)."""
    if layer == "input":
        return np.asarray(to_numpy(x)).reshape(len(x), -1).astype(np.float32)
    x = like_net(x, net)
    out = [to_numpy(net.forward(x[part], train=False, until=layer)).reshape(
        part.stop - part.start, -1).astype(np.float32) for part in chunks(len(x), batch_size)]
    net.clear_cache()
    return np.concatenate(out)


def linear_probe(train_z, train_y, test_z, test_y, num_classes=None, epochs=30, lr=0.1,
                 weight_decay=1e-4, batch_size=128, seed=0):
    """Train a softmax classifier on features (N, D); returns its test accuracy."""
    if train_z.ndim != 2 or test_z.ndim != 2 or train_z.shape[1] != test_z.shape[1]:
        raise ValueError(f"linear_probe: features must be (N, D) with the same D, got "
                         f"{train_z.shape} and {test_z.shape}")
    K = int(num_classes or max(train_y.max(), test_y.max()) + 1)
    mean, std = train_z.mean(axis=0), train_z.std(axis=0) + 1e-6
    z, zt = (train_z - mean) / std, (test_z - mean) / std
    rng = np.random.default_rng(seed)
    W = np.zeros((z.shape[1], K), np.float32)
    b = np.zeros(K, np.float32)
    vW, vb = np.zeros_like(W), np.zeros_like(b)
    steps = epochs * -(-len(z) // batch_size)
    step = 0
    for _ in range(epochs):
        order = rng.permutation(len(z))
        for part in chunks(len(z), batch_size):
            rows = order[part]
            logits = z[rows] @ W + b                                   # (B, K)
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(rows)), train_y[rows]] -= 1                # dL/dlogits * B
            rate = lr * 0.5 * (1 + np.cos(np.pi * step / steps))      # cosine decay
            vW = 0.9 * vW - rate * (z[rows].T @ p / len(rows) + weight_decay * W)
            vb = 0.9 * vb - rate * p.mean(axis=0)
            W += vW
            b += vb
            step += 1
    return float(np.mean((zt @ W + b).argmax(axis=1) == test_y))


def run(args):
    chosen = _common.budget(args)
    from .correspondence import _net
    net, source = _net(args, chosen)
    images, labels, test_images, test_labels = _common.load(
        args.data, chosen["probe_train"], chosen["test"], args.seed + 1)
    x, xt = _common.normalise(images), _common.normalise(test_images)
    print(_common.preamble("Layer-by-layer linear probes (Table 6 style)", args, chosen,
                           f"; the net: {source}; each probe: {chosen['probe_train']} images "
                           f"per class (another draw), {chosen['probe_epochs']} epochs of "
                           "SGD on standardised features"))
    rows = []
    for layer in LAYERS:
        z, zt = features(net, x, layer), features(net, xt, layer)
        accuracy = linear_probe(z, labels, zt, test_labels, 10, epochs=chosen["probe_epochs"],
                                seed=args.seed)
        rows.append([layer, z.shape[1], accuracy])
        print(f"  {layer}: {z.shape[1]} features, test accuracy {accuracy:.4f}", flush=True)
    print()
    print(_common.table(["layer", "features", "linear probe test accuracy"], rows))
    return rows


def parser():
    p = _common.arguments(__doc__.splitlines()[0], QUICK, DEFAULT)
    p.add_argument("--checkpoint", help="a trained zfnet_mini, .npz or .onnx (default: train "
                   "one briefly)")
    return p
