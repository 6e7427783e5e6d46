"""The ``minconv`` command.

    minconv train --model zfnet-mini --data /usr/share/datasets/fashion-mnist \
        --epochs 15 --out runs/fm
    minconv evaluate --checkpoint runs/fm/last.npz
    minconv summary --model zfnet

Subcommands come from the modules in ``COMMAND_MODULES``. Each defines
``register(add)`` and calls ``add(name, help, configure, run)`` once per
subcommand: ``configure(parser)`` adds its arguments, ``run(args)`` does the
work and returns the exit status. A module that is not there (yet) is
skipped, so the command works with whatever parts of minconv are installed.
Errors the user can fix (a bad argument, bad data, a missing or unwritable
file, a diverged run, memory exhausted) are printed as one line, without a
traceback, and give exit status 1; Ctrl-C gives 130 (set MINCONV_DEBUG=1 to
see the traceback). Argument types that check ranges are in
:mod:`minconv._cli_args`.
"""
import argparse
import importlib
import os
import sys

from ._cli_args import finite_float, nonnegative_int, positive_int

COMMAND_MODULES = [
    "minconv.cli",              # summary
    "minconv.train.commands",   # train, evaluate
    "minconv.vis.commands",     # visualize, occlude, project, invariance, demo
    "minconv.vis.attribute",    # attribute
    "minconv.experiments",      # experiment (the paper's tables)
    "minconv.io.commands",      # convert (.npz, .onnx, .safetensors)
]


def add_summary_arguments(p):
    p.add_argument("--model", required=True, help="zfnet, zfnet-mini, alexnet or lenet5")
    p.add_argument("--input", help="input shape C,H,W (default: the model's own)")
    p.add_argument("--num-classes", type=positive_int, help="classes of the last layer")


def run_summary(args):
    from . import models
    kwargs = {} if args.num_classes is None else {"num_classes": args.num_classes}
    net = models.build(args.model, **kwargs)
    shape = tuple(int(v) for v in args.input.split(",")) if args.input \
        else models.input_shape_of(net)
    print(f"{models.canonical_name(args.model)}, input {'x'.join(map(str, shape))}")
    models.summary(net, shape)
    return 0


def register(add):
    add("summary", "per-layer output shapes, parameters, FLOPs and receptive fields",
        add_summary_arguments, run_summary)


def build_parser():
    parser = _Parser(
        prog="minconv", description="Zeiler & Fergus's convnet from scratch: train, evaluate, "
                                    "inspect and visualise.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    runners = {}

    def add(name, help, configure, run):
        if name in runners:
            raise ValueError(f"minconv: subcommand {name!r} registered twice")
        command = sub.add_parser(name, help=help, description=help)
        configure(command)
        _no_negative_or_non_finite(command)
        runners[name] = run

    for module_name in COMMAND_MODULES:
        try:
            module = sys.modules[__name__] if module_name == __name__ \
                else importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name and module_name.startswith(error.name):
                continue  # that part of minconv is not there
            raise
        module.register(add)
    return parser, runners


def _no_negative_or_non_finite(parser):
    """Every plain ``type=int`` option of every subcommand refuses negative values and every
    ``type=float`` NaN and infinity (counts, sizes, indices and seeds are never negative
    here); options that need tighter ranges use the types of :mod:`minconv._cli_args`."""
    for action in parser._actions:
        if action.type is int:
            action.type = nonnegative_int
        elif action.type is float:
            action.type = finite_float


class UsageError(ValueError):
    """A command line argparse refuses (unknown option, a value out of range)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit status 1, through main(), not SystemExit(2)
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def _one_line(error):
    """The message of an error the user can fix, on one line."""
    if isinstance(error, OSError) and error.strerror:
        where = f" {error.filename!r}" if error.filename is not None else ""
        text = f"{error.strerror}{where}"
    elif isinstance(error, MemoryError):
        text = f"out of memory ({error or 'allocation failed'}); try a smaller batch or model"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def _check_device(args):
    if getattr(args, "device", None) == "cuda":
        from .backend import cupy_available
        if not cupy_available():
            raise ValueError("--device cuda needs CuPy and a CUDA GPU (pip install "
                             "cupy-cuda12x); use --device cpu")


def main(argv=None):
    """Entry point of the console script; returns the exit status.

    Every error the user can fix ends here as one line on stderr and exit status 1:
    a bad argument, bad data, a diverged run, a missing, unreadable or unwritable
    file, a full disk, memory exhausted. Ctrl-C gives 130.
    """
    from .data import DataError
    from .train import TrainingDiverged
    parser, runners = build_parser()
    command = "minconv"
    try:
        args = parser.parse_args(argv)
        command = f"minconv {args.command}"
        _check_device(args)
        return runners[args.command](args) or 0
    except UsageError as error:
        print(_one_line(error), file=sys.stderr)
        return 1
    except (DataError, TrainingDiverged, ValueError, OSError, MemoryError) as error:
        if os.environ.get("MINCONV_DEBUG"):
            raise
        from .distributed import report_error  # under mpirun: no rank left waiting
        return report_error(f"{command}: error: {_one_line(error)}", error)
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
