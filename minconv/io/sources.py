"""Nets from anywhere for the command line: minconv's .npz checkpoints, ONNX models, and
``--model NAME --weights FILE`` with safetensors or PyTorch weights.

    minconv visualize --checkpoint model.onnx --data IMAGE_FOLDER
    minconv visualize --model resnet18 --weights resnet18.safetensors --data IMAGE_FOLDER \
        --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225

An imported net comes without the record of its training data that a minconv
checkpoint carries, so its images are prepared here: the folder's images (class
sub-folders, or ``val/``/``test/`` and ``train/`` splits of them) resized to ``--resize``
on the shorter side and centre-cropped to the net's input, then either Zeiler & Fergus's
preprocessing (the per-pixel mean image of the folder subtracted, the default) or the
``--mean``/``--std`` normalisation the net was trained with, ``(p/255 - mean) / std`` per
channel. Each image is labelled with the net's own top-1 class (the folder's classes
need not be the net's). A trailing Softmax of an imported graph is left out, and scores
of shape (N, K, 1, 1) are flattened to (N, K), so the visualisations see logits as they
do for minconv's nets.
"""
import os
from dataclasses import dataclass, field

import numpy as np

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")


@dataclass
class ImportedNet:
    """A net that did not come from ``minconv train``: the Checkpoint fields the commands
    read, with no training record."""
    path: str
    net: object
    input_shape: tuple
    meta: dict = field(default_factory=lambda: {"epoch": 0, "best_val_error": None,
                                                "history": [], "extra": {}})
    arrays: dict = field(default_factory=dict)
    velocity: dict = field(default_factory=dict)

    @property
    def epoch(self):
        return self.meta["epoch"]

    @property
    def extra(self):
        return self.meta["extra"]

    @property
    def history(self):
        return self.meta["history"]


def add_source_arguments(p):
    """--model/--weights and the preprocessing options of imported nets."""
    p.add_argument("--model", help="with --weights: the architecture (resnet18, vgg16, ...)")
    p.add_argument("--weights", help="with --model: its weights, .safetensors or .pth/.pt")
    p.add_argument("--mean", help="imported nets: per-channel mean R,G,B in [0, 1] (with "
                   "--std); default: Zeiler & Fergus's mean image of the folder")
    p.add_argument("--std", help="imported nets: per-channel std R,G,B (with --mean)")
    p.add_argument("--resize", type=int, help="imported nets: shorter side before the centre "
                   "crop (default: the input size * 8/7, 256 for 224)")


def is_imported(checkpoint):
    return isinstance(checkpoint, ImportedNet)


def load_source(args, device="cpu"):
    """The net the arguments name: ``--checkpoint`` (.npz or .onnx) or ``--model`` with
    ``--weights``. Sets ``args.checkpoint`` to the file read."""
    checkpoint = getattr(args, "checkpoint", None)
    if isinstance(checkpoint, list):
        checkpoint = checkpoint[0]
    model, weights = getattr(args, "model", None), getattr(args, "weights", None)
    if checkpoint and (model or weights):
        raise ValueError("give either --checkpoint or --model with --weights, not both")
    if checkpoint:
        return load_net_file(checkpoint, device)
    if not (model and weights):
        raise ValueError("name the net: --checkpoint FILE (.npz or .onnx), or --model NAME "
                         "--weights FILE (.safetensors, .pth)")
    args.checkpoint = weights
    return load_weights(model, weights, device)


def load_net_file(path, device="cpu"):
    """A .npz checkpoint (minconv's Checkpoint) or an .onnx model (an ImportedNet)."""
    if str(path).lower().endswith(".onnx"):
        from . import load_onnx
        net = load_onnx(path)
        shape = _onnx_input_shape(path)
        _drop_final_softmax(net)
        _flat_scores(net, shape)
        return ImportedNet(os.fspath(path), net.to(device), shape)
    if str(path).lower().endswith(WEIGHT_SUFFIXES):
        raise ValueError(f"{path}: weights alone do not say the architecture; use --model NAME "
                         f"--weights {path}")
    from ..train import load_checkpoint
    return load_checkpoint(path, device=device)


def load_weights(model, weights, device="cpu"):
    """``mc.models.build(model)`` with the weights of a .safetensors or .pth/.pt file."""
    from .. import models
    from . import load_safetensors, load_torch_weights
    lower = str(weights).lower()
    if not lower.endswith(WEIGHT_SUFFIXES):
        raise ValueError(f"--weights {weights}: expected a .safetensors, .pth or .pt file")
    state = _read_weights(weights)
    kwargs = {}
    classes = _classes_in(state)
    if classes is not None:
        kwargs["num_classes"] = classes
    net = models.build(model, **kwargs)
    if lower.endswith(".safetensors"):
        load_safetensors(net, weights)
    else:
        load_torch_weights(net, weights)
    shape = (1,) + tuple(models.input_shape_of(net))
    return ImportedNet(os.fspath(weights), net.to(device), shape)


def _read_weights(path):
    from .safetensors_io import read_safetensors
    from .torch_files import read_torch_state_dict
    if str(path).lower().endswith(".safetensors"):
        return read_safetensors(path)[0]
    return read_torch_state_dict(path)


def _classes_in(state):
    """The class count of the last fully connected layer in a state dict (fc, classifier)."""
    for key in ("fc.weight", "classifier.weight", "classifier.6.weight", "fc8.W", "fc.W",
                "fc8.weight"):
        if key in state and np.ndim(state[key]) == 2:
            return int(state[key].shape[0])
    return None


def _onnx_input_shape(path):
    import onnx
    model = onnx.load(os.fspath(path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        if value.name not in initializers:
            dims = value.type.tensor_type.shape.dim
            return tuple(d.dim_value if d.HasField("dim_value") else 1 for d in dims)
    raise ValueError(f"{path}: the model has no graph input")


def _flat_scores(net, input_shape):
    """Class scores as (N, K): a net ending in global pooling (SqueezeNet's (N, K, 1, 1))
    gets a Flatten node, ``scores``, as its output."""
    from ..nn import Flatten
    dtype = next(iter(net.params.values())).dtype if net.params else np.float32
    y = net.forward(np.zeros((1,) + tuple(input_shape[1:]), dtype=dtype))
    net.clear_cache()
    if y.ndim > 2 and all(n == 1 for n in y.shape[2:]):
        name = "scores" if "scores" not in net.names else f"{net.output}_scores"
        net.add(name, Flatten(), inputs=[net.output])
        net.output = name


def _drop_final_softmax(net):
    from ..nn.arith import Softmax
    output = net.output
    if isinstance(net[output], Softmax):
        inputs = net.inputs_of(output)
        if inputs[0] != "input":
            net.output = inputs[0]


# ------------------------------------------------------------------ images

class Normalize:
    """x = (p / 255 - mean) / std per channel, as float32, for a batch of uint8 pixels."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(1, -1, 1, 1)

    def __call__(self, pixels):
        return (np.asarray(pixels).astype(np.float32) / np.float32(255) - self.mean) / self.std


def _triple(text, what):
    try:
        values = [float(v) for v in str(text).split(",")]
    except ValueError:
        values = []
    if len(values) != 3 or (what == "--std" and min(values) <= 0):
        raise ValueError(f"{what} expects three numbers R,G,B{' > 0' if what == '--std' else ''}"
                         f", got {text!r}")
    return values


def source_data(checkpoint, args):
    """The images of ``--data`` prepared for an imported net (see the module docstring);
    a :class:`minconv.vis.datasets.VisData`."""
    from .. import data
    from ..vis.datasets import FolderImages, SubtractMean, VisData
    root = getattr(args, "data", None)
    if not root:
        raise ValueError(f"{checkpoint.path}: an imported net records no data; pass --data "
                         "IMAGE_FOLDER (class sub-folders of images)")
    split = getattr(args, "split", "test")
    sub = "train" if split == "train" else next(
        (d for d in ("val", "test") if os.path.isdir(os.path.join(root, d))), None)
    folder_root = os.path.join(root, sub) if sub and os.path.isdir(os.path.join(root, sub)) \
        else root
    C, H = checkpoint.input_shape[1], checkpoint.input_shape[2]
    if C != 3:
        raise ValueError(f"{checkpoint.path}: the net takes {C}-channel input; image folders "
                         "give RGB (3 channels)")
    size = getattr(args, "resize", None) or int(round(H * 8 / 7))
    if size < H:
        raise ValueError(f"--resize {size} is smaller than the net's input {H}")
    folder = data.ImageFolder(folder_root, size=size, skip_bad=True)
    limit = getattr(args, "limit", None)
    if limit:
        folder.samples = folder.samples[:limit]
    images = FolderImages(folder, H)
    mean, std = getattr(args, "mean", None), getattr(args, "std", None)
    if (mean is None) != (std is None):
        raise ValueError("--mean and --std go together")
    if mean is not None:
        preprocess = Normalize(_triple(mean, "--mean"), _triple(std, "--std"))
        fill = 0.0
    else:  # Zeiler & Fergus: the per-pixel mean image, over this folder
        total = np.zeros((3, size, size), np.float64)
        for i in range(len(folder)):
            image = folder.load(i)
            if image is not None:
                total += image
        preprocess = SubtractMean((total / max(len(folder), 1)).astype(np.float32), H)
        fill = 0.0
    labels, classes = predicted_labels(checkpoint.net, images, preprocess)
    return VisData(images, labels, preprocess, [str(k) for k in range(classes)], fill, split)


def predicted_labels(net, images, preprocess, batch=16):
    """The net's top-1 class of every image, and the number of classes."""
    from ..backend import to_device
    labels, classes = [], 0
    device = net.device or "cpu"
    for start in range(0, len(images), batch):
        x = preprocess(images[start:start + batch])
        y = net.forward(to_device(x, device))
        scores = np.asarray(to_device(y.reshape(y.shape[0], -1), "cpu"))
        labels.append(scores.argmax(axis=1))
        classes = scores.shape[1]
    net.clear_cache()
    return (np.concatenate(labels) if labels else np.zeros(0, np.int64)), classes


# ------------------------------------------------------------------ evaluate

def evaluate_imported(args, paths=None):
    """``minconv evaluate --checkpoint model.onnx --data DIR``: loss and errors of an
    imported net against the data's own labels (IDX files standardised with the
    Fashion-MNIST statistics, or an image folder whose sorted class names are the net's
    classes, prepared as in the module docstring). Several .onnx files: each and their
    ensemble (softmax averaged), on the images prepared for the first."""
    from .. import data
    from ..train import evaluate
    from ..vis.datasets import Standardize
    paths = [p for p in (paths or []) if p is not None]
    if len(paths) > 1:
        plain = [p for p in paths if not str(p).lower().endswith(".onnx")]
        if plain:
            raise ValueError(f"{plain[0]}: an ensemble with .onnx models takes .onnx models "
                             "only (a .npz carries its own data preparation)")
    checkpoint = load_source(args, device=args.device)
    others = [load_net_file(p, args.device) for p in paths[1:]]
    for other in others:
        if tuple(other.input_shape[1:]) != tuple(checkpoint.input_shape[1:]):
            raise ValueError(f"{other.path}: input {tuple(other.input_shape[1:])} differs from "
                             f"{checkpoint.path}'s {tuple(checkpoint.input_shape[1:])}; an "
                             "ensemble needs nets that read the same inputs")
    root = args.data
    if not root:
        raise ValueError(f"{checkpoint.path}: an imported net records no data; pass --data")
    if data.is_idx_dir(root):
        images, labels = data.load_idx(root, args.split)
        images, prepare = images[:, None], Standardize(*data.FASHION_MNIST_STATS)
    else:
        args.resize = getattr(args, "resize", None)
        view = source_data(checkpoint, args)
        images, labels, prepare = view.images, view.images.folder.labels, view.preprocess
    if args.limit:
        images, labels = images[:args.limit], labels[:args.limit]
    batches = [(prepare(images[i:i + args.batch_size]), np.asarray(labels[i:i + args.batch_size]))
               for i in range(0, len(labels), args.batch_size)]
    if others:
        from ..train.ensemble import evaluate_ensemble, print_ensemble_table
        result = evaluate_ensemble([checkpoint.net] + [o.net for o in others], batches,
                                   device=args.device)
        print_ensemble_table(paths, result, args.split, "none", getattr(args, "json", False))
        return 0
    result = evaluate(checkpoint.net, batches, device=args.device)
    if getattr(args, "json", False):
        from .._cli_args import strict_json
        print(strict_json(dict(result, checkpoint=checkpoint.path, split=args.split)))
        return 0
    print(f"{checkpoint.path} on {result['count']} {args.split} images\n  loss "
          f"{result['loss']:.4f}  top-1 error {result['top1_error']:.4f} (accuracy "
          f"{1 - result['top1_error']:.4f})  top-5 error {result['top5_error']:.4f}")
    return 0


# ------------------------------------------------------------------ train --init-from

class _Weights:
    """Named arrays standing in for a net where only ``state_dict()`` is read."""

    def __init__(self, state):
        self._state = state

    def state_dict(self):
        return self._state


def load_init_source(path, net):
    """What ``minconv train --init-from PATH`` copies parameters from: a .npz checkpoint or
    an .onnx model (a net), or .safetensors/.pth weights under minconv's or torchvision's
    names (read as names mapped onto ``net``'s layers; those that map nowhere are left out)."""
    if not str(path).lower().endswith(WEIGHT_SUFFIXES):
        return load_net_file(path).net
    from .torch_state import torch_to_minconv_key
    state = _read_weights(path)
    own = net.state_dict()
    mapped = {}
    for key, value in state.items():
        if key in own:
            mapped[key] = value
            continue
        try:
            name = torch_to_minconv_key(net, key)
        except ValueError:
            name = None
        if name is not None:
            mapped[name] = value
    return _Weights(mapped)
