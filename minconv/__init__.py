"""minconv: Zeiler & Fergus's convnet, readable and runnable, from im2col up.

    import minconv as mc
    F = mc.functional                 # pure ops: conv2d, max_pool2d, lrn, ...
    net = mc.models.zfnet_mini()      # a Sequential of mc.nn layers
    dn = mc.vis.DeconvNet(net)        # the paper's visualisations
"""
import os

# The Cython kernels (OpenMP) and NumPy's BLAS (its own threads) take turns on
# the same cores. OpenMP's default is to spin after each parallel region,
# which starves the BLAS threads: a zfnet_mini step then takes 3.6x longer.
# Idle OpenMP threads must sleep. Set before the kernels load libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import backend, functional, nn  # noqa: E402
from .backend import get_array_module, to_device

__version__ = "0.1.0"


def __getattr__(name):
    # models, data, train and vis import lazily: the core loads fast and alone
    if name in ("models", "data", "train", "vis", "cli", "io"):
        import importlib
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module 'minconv' has no attribute {name!r}")


__all__ = ["backend", "functional", "nn", "models", "data", "train", "vis",
           "get_array_module", "to_device", "__version__"]
