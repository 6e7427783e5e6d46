"""The nets: the paper's, the families of the seeds, and ``summary`` to check them.

``zfnet`` is Zeiler & Fergus's Figure 3 (Table 2's wider "(b)" with ``widths``);
``alexnet`` the baseline it improves on (``groups=2``: the two towers); ``zfnet_mini``
keeps ZFNet's structure and layer names for 28x28 images; ``lenet5``, ``lenet5_original``
and ``mnist_cnn`` are the small nets of the seeds. ``vgg11/16/19``, ``resnet18/34/50``,
``googlenet`` and ``densenet121`` carry torchvision's module names, so its state dicts
load one to one (:mod:`minconv.io`); ``resnet_mini`` and ``vgg_mini`` are their members
for 28x28 images.

Every builder returns a :class:`minconv.nn.Sequential` or :class:`minconv.nn.Graph`
and sets ``net.config = {"model": name, "kwargs": {...}}``, from which :func:`build`
(and so a checkpoint) makes the same net again.
"""
from .densenet import densenet121
from .googlenet import googlenet
from .lenet import lenet5, lenet5_original, mnist_cnn
from .resnet import resnet18, resnet34, resnet50, resnet_mini
from .summary import format_summary, summary
from .vgg import vgg11, vgg16, vgg19, vgg_mini
from .zfnet import MINI_WIDTHS, WIDE_WIDTHS, alexnet, zfnet, zfnet_mini

MODELS = {"zfnet": zfnet, "alexnet": alexnet, "zfnet_mini": zfnet_mini, "lenet5": lenet5,
          "lenet5_original": lenet5_original, "mnist_cnn": mnist_cnn,
          "vgg11": vgg11, "vgg16": vgg16, "vgg19": vgg19, "vgg_mini": vgg_mini,
          "resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50,
          "resnet_mini": resnet_mini, "googlenet": googlenet, "densenet121": densenet121}

# the input each model is built for: (C, H, W)
_SMALL = (1, 28, 28)
_IMAGENET = (3, 224, 224)
INPUT_SHAPES = {name: _SMALL if name in ("zfnet_mini", "lenet5", "lenet5_original",
                                         "mnist_cnn", "vgg_mini", "resnet_mini")
                else _IMAGENET for name in MODELS}


def canonical_name(name):
    """'zfnet-mini' -> 'zfnet_mini'; ValueError for an unknown model."""
    key = str(name).replace("-", "_").lower()
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return key


def build(name, **kwargs):
    """The model called ``name`` ('zfnet', 'zfnet-mini', 'resnet18', ...) built with ``kwargs``."""
    key = canonical_name(name)
    try:
        return MODELS[key](**kwargs)
    except TypeError as error:
        raise ValueError(f"model {key!r}: bad arguments {kwargs}: {error}") from None


def transfer_parameters(source, target, skip=()):
    """Copy into ``target`` the parameters (and buffers) of ``source`` under the same names
    and shapes, except those of the layers in ``skip``; returns the names of the layers
    copied.

    The transfer setting of the paper's Section 5: take conv1..fc7 of a trained net and
    give the new task its own freshly drawn classifier (``skip=("fc8",)``).
    """
    own, theirs = target.state_dict(), source.state_dict()
    state = {k: v for k, v in theirs.items() if k in own and k.rsplit(".", 1)[0] not in skip
             and tuple(v.shape) == tuple(own[k].shape)}
    target.load_state_dict(state, strict=False)
    return sorted({k.rsplit(".", 1)[0] for k in state})


def input_shape_of(net):
    """(C, H, W) that ``net`` expects, from its config."""
    config = getattr(net, "config", None) or {}
    shape = INPUT_SHAPES.get(config.get("model"))
    if shape is None:
        raise ValueError("input_shape_of: the net has no known model config")
    kwargs = config.get("kwargs", {})
    c = kwargs.get("in_channels", shape[0])
    side = kwargs.get("size", shape[1])
    return (c, side, side)


__all__ = ["INPUT_SHAPES", "MINI_WIDTHS", "MODELS", "WIDE_WIDTHS", "alexnet", "build",
           "canonical_name", "densenet121", "format_summary", "googlenet", "input_shape_of",
           "lenet5", "lenet5_original", "mnist_cnn", "resnet18", "resnet34", "resnet50",
           "resnet_mini", "summary", "transfer_parameters", "vgg11", "vgg16", "vgg19",
           "vgg_mini", "zfnet", "zfnet_mini"]
