"""Building blocks shared by the model builders: initialised convolutions and linear
layers, and the conv-BatchNorm-ReLU unit of the modern families."""
import math

from .. import nn


def check_init(init):
    if init not in ("paper", "he"):
        raise ValueError(f"init must be 'paper' (N(0, 0.01^2)) or 'he', got {init!r}")


def conv(c_in, c_out, k, stride=1, padding=0, init="he", rng=None, bias=True, groups=1):
    """A Conv2D with N(0, 0.01^2) weights ("paper") or He's std sqrt(2 / fan_in) ("he"),
    which keeps the variance of ReLU activations from layer to layer."""
    kh, kw = (k, k) if isinstance(k, int) else k
    fan_in = c_in // groups * kh * kw
    std = 0.01 if init == "paper" else math.sqrt(2.0 / fan_in)
    return nn.Conv2D(c_in, c_out, k, stride=stride, padding=padding, bias=bias, groups=groups,
                     init_std=std, rng=rng)


def fc(n_in, n_out, init="he", rng=None, last=False):
    """A Linear layer: He's std for layers feeding a ReLU, variance 1/fan_in for the logits."""
    if init == "paper":
        std = 0.01
    else:
        std = math.sqrt((1.0 if last else 2.0) / n_in)
    return nn.Linear(n_in, n_out, init_std=std, rng=rng)


def conv_bn_relu(c_in, c_out, k, stride=1, padding=0, eps=1e-5, rng=None, inplace=True):
    """``conv`` (no bias: the BatchNorm's shift takes its place), ``bn``, ``relu``:
    torchvision's BasicConv2d of GoogLeNet."""
    return nn.Sequential([("conv", conv(c_in, c_out, k, stride, padding, rng=rng, bias=False)),
                          ("bn", nn.BatchNorm2D(c_out, eps=eps)),
                          ("relu", nn.ReLU(inplace=inplace))])


def named(net, model, **kwargs):
    """Tag ``net`` with the config that rebuilds it (checkpoints store it)."""
    net.config = {"model": model, "kwargs": kwargs}
    return net
