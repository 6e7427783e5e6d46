"""Ensembles (the paper's Table 2): several nets trained alike from different seeds, their
softmax outputs averaged.

The paper's best ImageNet error came from averaging the softmax of several ZFNets. Here M
zfnet_mini are trained with ``minconv train`` on the same Fashion-MNIST subset, each from
its own seed, and ``minconv evaluate --checkpoint a.npz b.npz ...`` prints each net's test
error beside the ensemble's:

    python -m minconv.experiments ensembles [--models 3] [--quick] [--out runs/ens]
"""
import os
import tempfile

from . import _common

DEFAULT = dict(train=500, test=2000, epochs=3, models=3)
QUICK = dict(train=10, test=50, epochs=1, models=2)


def run(args):
    from ..cli import main
    chosen = _common.budget(args)
    M = args.models or chosen["models"]
    print(_common.preamble(f"Ensemble of {M} zfnet_mini (Table 2 style)", args, chosen,
                           f"; seeds {args.seed}..{args.seed + M - 1}, the zfnet_mini recipe "
                           "(flip views at test time)"))
    root = args.out or tempfile.mkdtemp(prefix="minconv-ensemble-")
    paths = []
    for m in range(M):
        out = os.path.join(root, f"seed{args.seed + m}")
        status = main(["train", "--model", "zfnet-mini", "--data", args.data, "--out", out,
                       "--per-class", str(chosen["train"]), "--epochs", str(chosen["epochs"]),
                       "--seed", str(args.seed + m), "--val-subset", str(chosen["test"]),
                       "--no-progress", "--overwrite"])
        if status:
            raise RuntimeError(f"minconv train failed for seed {args.seed + m}")
        paths.append(os.path.join(out, "last.npz"))
    print()
    main(["evaluate", "--checkpoint", *paths, "--limit", str(chosen["test"])])
    return paths


def parser():
    p = _common.arguments(__doc__.splitlines()[0], QUICK, DEFAULT)
    p.add_argument("--models", type=_common.positive_int, help="how many nets (default 3)")
    return p
