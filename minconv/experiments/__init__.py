"""The paper's quantitative experiments in miniature, each a module with printed tables.

    python -m minconv.experiments ablations        # Table 3: layers removed or widened
    python -m minconv.experiments first_layers     # Fig. 6: AlexNet's vs ZFNet's first layer
    python -m minconv.experiments correspondence   # Table 1: occluding the same part
    python -m minconv.experiments probes           # Table 6: a linear softmax per layer
    python -m minconv.experiments ensembles        # Table 2: averaging several nets

(also ``minconv experiment NAME``). Each states its dataset, budget and seed, runs in
minutes on 2 cores at its default size, and takes ``--quick`` for a budget of seconds.
"""
import importlib

EXPERIMENTS = ("ablations", "first_layers", "correspondence", "probes", "ensembles")


def module(name):
    key = name.replace("-", "_")
    if key not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f"{__name__}.{key}")


def main(argv):
    """Run the experiment named by argv[0] with the options that follow; exit status."""
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    experiment = module(argv[0])
    parser = experiment.parser()
    parser.prog = f"minconv experiment {experiment.__name__.rsplit('.', 1)[-1]}"
    experiment.run(parser.parse_args(argv[1:]))
    return 0


def register(add):
    """Called by :mod:`minconv.cli` to add ``minconv experiment NAME [options]``."""
    import argparse

    def configure(p):
        p.add_argument("name", choices=EXPERIMENTS, help="which experiment")
        p.add_argument("options", nargs=argparse.REMAINDER,
                       help="its options (--quick, --epochs, --seed, ...; NAME --help)")

    add("experiment", "the paper's tables in miniature: ablations, first_layers, "
        "correspondence, probes, ensembles", configure,
        lambda args: main([args.name] + list(args.options)))
