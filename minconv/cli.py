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
Errors the user can fix (bad data, a missing file, a diverged run) are
printed as one line, without a traceback, and give exit status 1 (set
MINCONV_DEBUG=1 to see the traceback).
"""
import argparse
import importlib
import os
import sys

COMMAND_MODULES = [
    "minconv.cli",              # summary
    "minconv.train.commands",   # train, evaluate
    "minconv.vis.commands",     # visualize, occlude, project, invariance, demo
]


def add_summary_arguments(p):
    p.add_argument("--model", required=True, help="zfnet, zfnet-mini, alexnet or lenet5")
    p.add_argument("--input", help="input shape C,H,W (default: the model's own)")
    p.add_argument("--num-classes", type=int, help="classes of the last layer")


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
    parser = argparse.ArgumentParser(
        prog="minconv", description="Zeiler & Fergus's convnet from scratch: train, evaluate, "
                                    "inspect and visualise.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    runners = {}

    def add(name, help, configure, run):
        if name in runners:
            raise ValueError(f"minconv: subcommand {name!r} registered twice")
        configure(sub.add_parser(name, help=help, description=help))
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


def main(argv=None):
    """Entry point of the console script; returns the exit status."""
    from .data import DataError
    from .train import TrainingDiverged
    parser, runners = build_parser()
    args = parser.parse_args(argv)
    try:
        return runners[args.command](args) or 0
    except (DataError, TrainingDiverged, ValueError, FileNotFoundError) as error:
        if os.environ.get("MINCONV_DEBUG"):
            raise
        print(f"minconv {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"minconv {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
