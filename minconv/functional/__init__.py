"""Pure forward/backward functions: the math of every layer, with no state.

Shapes follow NCHW and PyTorch's weight layouts (docs/architecture.md). Every function
checks its inputs and raises ``ValueError`` naming the op and the shapes.
"""
from .activation import RULES, dropout, dropout_backward, relu, relu_backward
from .conv import (col2im, conv2d, conv2d_backward, conv2d_planned, conv_matrix,
                   conv_transpose2d, conv_transpose2d_backward, choose_transpose_plan, im2col,
                   set_workspace_limit, workspace_limit)
from .conv_plan import PLANS, Plan, choose_plan, using_plan
from .conv_pool import conv2d_maxpool_planned
from .linear import linear, linear_backward
from .loss import log_softmax, softmax, softmax_cross_entropy, softmax_cross_entropy_backward
from .lrn import lrn, lrn_backward
from .pool import max_pool2d, max_unpool2d
from .avgpool import (adaptive_avg_pool2d, adaptive_avg_pool2d_backward, avg_pool2d,
                      avg_pool2d_backward, plane_means)
from .merge import add, concat, concat_backward
from .norm import batch_norm, batch_norm_backward
from .saturating import sigmoid, sigmoid_backward, tanh, tanh_backward
from ..geometry import conv_output_size, conv_transpose_output_size, pool_output_size

__all__ = [
    "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward", "add", "avg_pool2d",
    "avg_pool2d_backward", "batch_norm", "batch_norm_backward", "concat", "concat_backward",
    "sigmoid", "sigmoid_backward", "tanh", "tanh_backward",
    "PLANS", "Plan", "choose_plan", "choose_transpose_plan", "using_plan",
    "RULES", "col2im", "conv2d", "conv2d_backward", "conv2d_maxpool_planned", "conv2d_planned",
    "conv_matrix",
    "conv_output_size",
    "conv_transpose2d", "conv_transpose2d_backward", "conv_transpose_output_size", "dropout",
    "dropout_backward", "im2col", "linear", "linear_backward", "log_softmax", "lrn",
    "lrn_backward", "max_pool2d", "max_unpool2d", "plane_means", "pool_output_size", "relu",
    "relu_backward",
    "set_workspace_limit", "softmax", "softmax_cross_entropy", "softmax_cross_entropy_backward",
    "workspace_limit",
]
