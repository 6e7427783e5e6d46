"""``minconv convert IN OUT``: a net between minconv's .npz checkpoints, ONNX models and
safetensors weights.

    minconv convert runs/fm/best.npz zfnet_mini.onnx          # serve it anywhere
    minconv convert model.onnx model.safetensors              # the weights alone
    minconv convert resnet18.pth resnet18.safetensors --model resnet18
    minconv convert resnet18.safetensors resnet18.npz --model resnet18

A .safetensors or .pth input names its architecture with ``--model``. An .npz holds
minconv's own architectures (it records the builder and its arguments), so a graph
imported from ONNX converts to .onnx or .safetensors, not .npz. :mod:`minconv.cli` calls
:func:`register`.
"""
import os

from .sources import WEIGHT_SUFFIXES, ImportedNet, load_net_file, load_weights


def add_convert_arguments(p):
    p.add_argument("input", help="a .npz checkpoint, an .onnx model, or .safetensors/.pth "
                   "weights (with --model)")
    p.add_argument("output", help="the file to write: .npz, .onnx or .safetensors")
    p.add_argument("--model", help="the architecture of .safetensors/.pth input (resnet18, ...)")
    p.add_argument("--input-shape", help="C,H,W of the ONNX model's input (default: the "
                   "model's own)")


def _shape(text, checkpoint):
    if text:
        try:
            shape = tuple(int(v) for v in text.split(","))
        except ValueError:
            shape = ()
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"--input-shape expects C,H,W (three positive integers), got "
                             f"{text!r}")
        return (1,) + shape
    if isinstance(checkpoint, ImportedNet):
        return (1,) + tuple(checkpoint.input_shape[1:])
    from .. import models
    return (1,) + tuple(models.input_shape_of(checkpoint.net))


def run_convert(args):
    source, target = os.fspath(args.input), os.fspath(args.output)
    if os.path.abspath(source) == os.path.abspath(target):
        raise ValueError(f"convert: input and output are the same file ({source})")
    if source.lower().endswith(WEIGHT_SUFFIXES):
        if not args.model:
            raise ValueError(f"{source}: weights alone do not say the architecture; add "
                             "--model NAME")
        checkpoint = load_weights(args.model, source)
    else:
        if args.model:
            raise ValueError(f"--model applies to .safetensors/.pth input, not {source}")
        checkpoint = load_net_file(source)
    net = checkpoint.net
    lower = target.lower()
    if lower.endswith(".onnx"):
        from . import save_onnx
        save_onnx(net, target, _shape(args.input_shape, checkpoint))
    elif lower.endswith(".safetensors"):
        from . import save_safetensors
        save_safetensors(net, target)
    elif lower.endswith(".npz"):
        if getattr(net, "config", None) is None:
            raise ValueError(f"{source}: a graph imported from ONNX has no minconv model "
                             "config, which an .npz checkpoint needs; write .onnx or "
                             ".safetensors instead")
        from ..train import save_checkpoint
        save_checkpoint(target, net, epoch=checkpoint.epoch)
    else:
        raise ValueError(f"convert: {target}: the output must end in .npz, .onnx or "
                         ".safetensors")
    print(f"{source} -> {target} ({net.num_params() if hasattr(net, 'num_params') else '?'} "
          "parameters)")
    return 0


def register(add):
    add("convert", "convert a net between .npz, .onnx and .safetensors (and read .pth)",
        add_convert_arguments, run_convert)
