"""Kernel dispatch: the compiled twin of each reference kernel where there is one.

``kernels_for(x)`` returns a namespace with ``im2col``, ``col2im``,
``im2row``, ``row2im``, ``im2row_matmul``, ``im2row_t_matmul``, ``conv2d_direct``,
``conv2d_direct_weight_grad``, ``maxpool_forward``, ``maxpool_values``,
``maxpool_backward``, ``lrn_forward``, ``lrn_backward``, ``relu_forward``,
``relu_backward``, ``reversed_axes``, ``padded_channels_last``, ``channels_first``,
``concatenate`` and the Winograd transforms (with the batch-norm and average-pooling
kernels) for the device and dtype of ``x``:

- CuPy arrays get the CUDA kernels of :mod:`minconv._kernels.cuda`, ``cuda_norm``
  and ``cuda_avgpool``;
- float32/float64 NumPy arrays get the Cython kernels when the extension is
  built, else the NumPy reference (with one warning at import);
- anything else gets the reference.
"""
import types
import warnings

import numpy as np

from . import reference, reference_avgpool, reference_norm, reference_winograd
from ..backend import get_array_module

NAMES = ("im2col", "col2im", "im2row", "row2im", "im2row_matmul", "im2row_t_matmul",
         "conv2d_direct", "conv2d_direct_weight_grad", "maxpool_forward", "maxpool_values",
         "maxpool_backward", "lrn_forward", "lrn_backward", "relu_forward", "relu_backward",
         "batchnorm_stats", "batchnorm_apply", "batchnorm_backward",
         "avgpool_forward", "avgpool_backward", "plane_means", "adaptive_avgpool_forward",
         "adaptive_avgpool_backward", "reversed_axes", "padded_channels_last",
         "channels_first", "concatenate", "winograd_weights", "winograd_tiles",
         "winograd_output", "winograd_grad_tiles", "winograd_weight_grad")
# the Cython kernels' OpenMP controls, whether their tiles run, the instruction-set cap
# of the tiles, the tiles' 1x1 and shifted products, the direct tiles' kinds and weight
# layout and the direct tiles with a max pooling, the 1x1 and direct products prepared for
# one input shape (absent from the reference and CUDA namespaces; minconv.runtime, the
# convolution planner and the paths ask them)
THREAD_CONTROLS = ("kernel_threads", "set_kernel_threads", "fused_kernels", "fuses_im2row",
                   "isa", "set_isa_cap", "pointwise_matmul", "conv2d_shifted",
                   "direct_filter_tiles", "direct_block_filters", "direct_filter_blocks",
                   "conv2d_direct_maxpool",
                   "PreparedPointwise", "PreparedDirect")


def _namespace(*modules):
    functions = {}
    # the batch-norm, average-pooling and Winograd specifications run on any array
    # module: wherever no twin is built they serve
    modules = modules + (reference_norm, reference_avgpool, reference_winograd)
    for name in NAMES + THREAD_CONTROLS:
        for module in modules:
            if hasattr(module, name):
                functions[name] = getattr(module, name)
                break
    return types.SimpleNamespace(**functions)


def _optional(name):
    """The kernel module ``name`` as a one-item list, or [] where it is not built."""
    import importlib
    try:
        return [importlib.import_module(f".{name}", __name__)]
    except ImportError:
        return []


try:
    from . import (cpu_activation, cpu_conv, cpu_direct, cpu_layout, cpu_lrn, cpu_pool,
                   cpu_tiles)
    CPU_BUILT = True
    cpu = _namespace(cpu_conv, cpu_tiles, cpu_direct, cpu_layout, cpu_pool, cpu_lrn,
                     cpu_activation,
                     *_optional("cpu_norm"), *_optional("cpu_avgpool"),
                     *_optional("cpu_winograd"),
                     *_optional("cpu_pointwise"))
except ImportError as error:  # not compiled: stay usable, but say so once
    CPU_BUILT = False
    cpu = _namespace(reference)
    warnings.warn(
        f"minconv: the Cython kernels are not built ({error}); using the NumPy "
        "reference kernels, which are correct but slower. Build them with "
        "`pip install -e .` (or `python setup.py build_ext --inplace`).",
        RuntimeWarning, stacklevel=2)

_cuda = None


def kernels_for(x):
    """The kernel namespace for the device and dtype of array ``x``."""
    global _cuda
    if get_array_module(x) is not np:
        if _cuda is None:
            from . import cuda as _cuda_module
            _cuda = _namespace(_cuda_module, *_optional("cuda_norm"),
                               *_optional("cuda_avgpool"), reference)
        return _cuda
    if x.dtype in (np.float32, np.float64):
        return cpu
    return reference
