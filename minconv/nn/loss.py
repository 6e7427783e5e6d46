"""The softmax cross-entropy loss as a layer."""
from .. import functional as F
from .base import Layer


class SoftmaxCrossEntropy(Layer):
    """Mean cross-entropy of softmax(logits) against integer labels.

    ``forward(logits (N, K), labels (N,))`` returns the loss (a float) and keeps
    the probabilities in ``self.probs``; ``backward()`` returns dL/dlogits (N, K).
    """

    def forward(self, logits, labels):
        loss, probs = F.softmax_cross_entropy(logits, labels)
        self._cache = (probs, labels)
        self.probs = probs
        return float(loss)

    def backward(self, dy=None, rule="grad", param_grads=None, input_grad=True):
        probs, labels = self._saved()
        dz = F.softmax_cross_entropy_backward(probs, labels)
        return dz if dy is None else dz * dy
