"""BatchNorm2D: batch normalisation over the channels of (N, C, H, W) maps."""
import numpy as np

from .. import functional as F
from ..functional.activation import check_rule
from .base import Layer


class BatchNorm2D(Layer):
    """Per-channel normalisation (see :mod:`minconv.functional.norm`).

    params  : gamma (C,) = 1, beta (C,) = 0
    buffers : running_mean (C,) = 0, running_var (C,) = 1

    ``forward(x, train=True)`` normalises by the batch's statistics and moves the
    running ones towards them (PyTorch's update, unbiased variance); with
    ``train=False`` the running statistics normalise. Under the ``deconv`` and
    ``guided`` rules the signal goes down by the per-channel scale
    ``gamma / sqrt(running_var + eps)`` (the shift beta is not added, like a bias).
    ``forward(x, train, relu=True)`` returns max(y, 0) from the same pass (a
    :class:`~minconv.nn.Graph` asks for it where a ReLU alone reads the output).
    """
    fuses_relu = True

    def __init__(self, num_features, eps=1e-5, momentum=0.1, dtype="float32"):
        super().__init__()
        C = int(num_features)
        if C < 1:
            raise ValueError(f"BatchNorm2D: num_features must be >= 1, got {num_features}")
        self.num_features, self.eps, self.momentum = C, float(eps), float(momentum)
        self.params["gamma"] = np.ones(C, dtype=dtype)
        self.params["beta"] = np.zeros(C, dtype=dtype)
        self.buffers["running_mean"] = np.zeros(C, dtype=dtype)
        self.buffers["running_var"] = np.ones(C, dtype=dtype)

    def forward(self, x, train=False, relu=False):
        if x.ndim == 4 and x.shape[1] != self.num_features:
            raise ValueError(f"{self._label()}: input {tuple(x.shape)} has {x.shape[1]} channels, "
                             f"the layer normalises {self.num_features}")
        y, (mean, invstd) = F.batch_norm(x, self.params["gamma"], self.params["beta"],
                                         self.buffers["running_mean"],
                                         self.buffers["running_var"], train=train,
                                         momentum=self.momentum, eps=self.eps, relu=relu)
        self._cache = (x, mean, invstd, bool(train))
        return y

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        check_rule(rule)
        x, mean, invstd, train = self._saved()
        gamma = self.params["gamma"]
        if rule != "grad":  # the fixed per-channel scale of evaluation
            return dy * (gamma * invstd).reshape(1, -1, 1, 1)
        dx, dgamma, dbeta = F.batch_norm_backward(dy, x, gamma, mean, invstd, train=train)
        if self._wants_param_grads(rule, param_grads):
            self.grads["gamma"], self.grads["beta"] = dgamma, dbeta
        return dx if input_grad else None

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"
