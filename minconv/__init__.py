"""minconv: Zeiler & Fergus's convnet, readable and runnable, from im2col up.

    import minconv as mc
    F = mc.functional                 # pure ops: conv2d, max_pool2d, lrn, ...
    net = mc.models.zfnet_mini()      # a Sequential of mc.nn layers
    dn = mc.vis.DeconvNet(net)        # the paper's visualisations
"""
from . import runtime  # first: process-wide settings (the OpenMP wait policy) precede the kernels
from . import backend, functional, geometry, nn  # noqa: E402
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


__all__ = ["backend", "functional", "geometry", "nn", "runtime", "models", "data", "train", "vis",
           "get_array_module", "to_device", "__version__"]
