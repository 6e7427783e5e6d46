"""``minconv train`` and ``minconv evaluate``: data from a folder, the model's recipe,
the Trainer, and what they print.

``--data`` is either a folder of MNIST-style IDX files (Fashion-MNIST) or a
folder with ``train/`` and ``val/`` (or ``test/``) image sub-folders, one
sub-folder per class inside each.

A run folder is never clobbered: ``train --out`` onto a folder that holds a run
refuses unless ``--resume`` continues it or ``--overwrite`` replaces it (the old
run's files stay until the new run has written its first checkpoint), and the
folder is checked writable before any data are read.
"""
import argparse
import json
import math
import os
import tempfile

import numpy as np

from .. import data, distributed, models, nn
from .._cli_args import (fraction, int_list, json_object, nonnegative_float, nonnegative_int,
                         positive_float, positive_int, strict_json)
from .checkpoint import load_checkpoint
from .metrics import evaluate
from .optim import SGD
from .recipes import recipe
from .schedule import make_schedule
from .trainer import Trainer


RUN_FILES = ("last.npz", "best.npz", "log.json", "log.csv", "curves.png", "snapshots")


def _radius(text):
    return False if str(text).lower() in ("none", "off", "0") else positive_float(text)


def _milestones(text):
    return int_list(text, low=1)


def _classes(text):
    values = int_list(text, low=0)
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"lists a class twice: {text}")
    return values


def _lr_mult(items):
    mult = {}
    for item in items or []:
        name, _, value = item.partition("=")
        try:
            mult[name] = float(value)
        except ValueError:
            raise ValueError(f"--lr-mult expects LAYER=FACTOR, got {item!r}") from None
        if not math.isfinite(mult[name]) or mult[name] < 0:
            raise ValueError(f"--lr-mult {item}: the factor must be finite and >= 0")
    return mult


def add_train_arguments(p):
    p.add_argument("--model", required=True,
                   help="zfnet, zfnet-mini, alexnet, lenet5, lenet5-original, mnist-cnn, "
                        "resnet-mini, vgg-mini, resnet18/34/50, vgg11/16/19, googlenet, "
                        "densenet121")
    p.add_argument("--data", default=data.FASHION_MNIST,
                   help="IDX folder, or a folder with train/ and val/ image folders")
    p.add_argument("--out", required=True, help="run folder: checkpoints, logs, curves")
    p.add_argument("--epochs", type=positive_int, help="number of epochs (default: the recipe's)")
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=positive_float, help="peak learning rate")
    p.add_argument("--momentum", type=fraction, help="in [0, 1)")
    p.add_argument("--weight-decay", type=nonnegative_float)
    p.add_argument("--schedule", choices=("plateau", "step", "cosine", "constant"))
    p.add_argument("--warmup", type=nonnegative_float, help="epochs of linear warm-up")
    p.add_argument("--patience", type=positive_int, help="plateau: epochs without improvement")
    p.add_argument("--milestones", type=_milestones, help="step: epochs, e.g. 30,60")
    p.add_argument("--gamma", type=positive_float, help="factor at each annealing (0.1)")
    p.add_argument("--renorm-radius", type=_radius,
                   help="RMS radius of conv filters after each update, or 'none'")
    p.add_argument("--no-augment", action="store_true", help="no random crops or flips")
    p.add_argument("--pad", type=nonnegative_int,
                   help="zero padding before random crops (IDX data)")
    p.add_argument("--tta", choices=("none", "flip", "ten"),
                   help="views averaged at evaluation (ten: image folders only)")
    p.add_argument("--val-split", type=nonnegative_int, default=0,
                   help="hold out this many training images for validation "
                        "(0: validate on the test split)")
    p.add_argument("--subset", type=positive_int, help="use only the first N training images")
    p.add_argument("--val-subset", type=positive_int,
                   help="use only the first N validation images")
    p.add_argument("--classes", type=_classes, help="keep these classes (relabelled 0..K-1)")
    p.add_argument("--per-class", type=positive_int,
                   help="at most this many training images per class")
    p.add_argument("--init-from", help="checkpoint (.npz), .onnx model or .safetensors/.pth "
                   "weights whose parameters start the net (a new fc8 is drawn when the class "
                   "count differs)")
    p.add_argument("--freeze", type=lambda s: s.split(","), default=[],
                   help="layers kept fixed, e.g. conv1,conv2,conv3,conv4,conv5,fc6,fc7")
    p.add_argument("--lr-mult", nargs="*", help="per-layer rate factors, e.g. fc8=10")
    p.add_argument("--model-kwargs", type=json_object, default={},
                   help='model arguments as JSON, over the recipe\'s own (zfnet-mini: dropout '
                   '0), e.g. \'{"widths": [32,64,96,96,64]}\'')
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--snapshot-every", type=positive_int, metavar="K",
                   help="also keep OUT/snapshots/epochNNN.npz every K epochs (for the "
                   "feature-evolution figure)")
    p.add_argument("--resume", nargs="?", const="last", help="continue from OUT/last.npz "
                   "(or the checkpoint given)")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in "
                   "--out (its files are kept until the new run writes its first checkpoint)")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip unreadable images with a warning instead of stopping")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--no-progress", action="store_true")


# ------------------------------------------------------------------ data

def _idx_loaders(args, settings, seed):
    images, labels = data.load_idx(args.data, "train")
    if args.classes is not None or args.per_class is not None:
        images, labels = data.select(images, labels, args.classes, args.per_class, rng=seed)
    if args.subset:
        images, labels = images[:args.subset], labels[:args.subset]
    if args.val_split:
        if args.val_split >= len(labels):
            raise ValueError(f"--val-split {args.val_split} leaves no training images "
                             f"(there are {len(labels)})")
        order = np.random.default_rng(seed).permutation(len(labels))
        held, kept = np.sort(order[:args.val_split]), np.sort(order[args.val_split:])
        val_images, val_labels = images[held], labels[held]
        images, labels = images[kept], labels[kept]
    else:
        val_images, val_labels = data.load_idx(args.data, "test")
        if args.classes is not None:
            val_images, val_labels = data.select(val_images, val_labels, args.classes)
    if args.val_subset:
        val_images, val_labels = val_images[:args.val_subset], val_labels[:args.val_subset]
    if not len(labels):
        raise ValueError(f"--data {args.data}: no training images left to train on")
    # the class table: the training split's labels 0..K-1 (or --classes, relabelled)
    num_classes = len(args.classes) if args.classes else int(labels.max()) + 1
    data.check_labels(labels, f"--data {args.data} (train labels)", num_classes)
    data.check_labels(val_labels, f"--data {args.data} (validation labels; the training "
                      f"split has {num_classes} classes)", num_classes)
    train = data.ArrayLoader(images, labels, settings["batch_size"], shuffle=True,
                             augment=settings["augment"], pad=settings["pad"], seed=seed)
    views = "flip" if settings["tta"] == "flip" else None
    val = data.ArrayLoader(val_images, val_labels, 500, views=views) if len(val_labels) \
        else None
    spec = dict(train.spec(), root=os.path.abspath(args.data), classes=args.classes,
                num_classes=num_classes)
    return train, val, num_classes, (1,) + images.shape[1:], spec, {}


def _mean_image(args, folder, fresh):
    """The training images' mean, from the run folder's cache unless ``fresh``."""
    cached = os.path.join(args.out, "mean_image.npy")
    shape = (3, folder.size, folder.size)
    if not fresh and os.path.isfile(cached):
        try:
            mean = np.load(cached, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            mean = None
        if mean is not None and mean.shape == shape and np.isfinite(mean).all():
            return mean.astype(np.float32)
    mean = data.compute_mean_image(folder, progress=not args.no_progress)
    np.save(cached, mean)
    return mean


def _folder_loaders(args, settings, seed, crop, fresh_mean):
    root = args.data
    val_root = next((os.path.join(root, d) for d in ("val", "test")
                     if os.path.isdir(os.path.join(root, d))), None)
    size = crop * 8 // 7  # the paper's 256 for 224 crops
    folder = data.ImageFolder(os.path.join(root, "train"), size=size, skip_bad=args.skip_bad)
    mean = _mean_image(args, folder, fresh_mean)
    train = data.FolderLoader(folder, mean, settings["batch_size"], train=True, crop=crop,
                              seed=seed)
    val = None
    if val_root:
        views = "ten" if settings["tta"] == "ten" else "center"
        # numbered through the training split's class table, never its own
        val_folder = data.ImageFolder(val_root, size=size, skip_bad=args.skip_bad,
                                      classes=folder.classes)
        val = data.FolderLoader(val_folder, mean, settings["batch_size"], crop=crop,
                                views=views)
    spec = dict(train.spec(), root=os.path.abspath(root), class_names=list(folder.classes),
                num_classes=len(folder.classes))
    return train, val, len(folder.classes), (3, crop, crop), spec, {"mean_image": mean}


# ------------------------------------------------------------------ the run folder

def _existing_run(out):
    return [name for name in RUN_FILES if os.path.lexists(os.path.join(out, name))]


def _prepare_out(args):
    """Refuse to clobber a run; make --out and check that it takes a file, before any
    data are read or any epoch is trained. Returns the old run's files (to replace)."""
    out = args.out
    if os.path.lexists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} exists and is not a folder")
    existing = _existing_run(out) if os.path.isdir(out) else []
    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite contradict each other: pick one")
    if existing and not (args.resume or args.overwrite):
        raise ValueError(f"--out {out} already holds a run ({', '.join(existing)}); pass "
                         "--resume to continue it, --overwrite to replace it, or choose "
                         "another --out")
    os.makedirs(out, exist_ok=True)  # OSError (read-only, below a file, ...) -> one line
    with tempfile.TemporaryFile(dir=out) as probe:  # writable, with room for a block
        probe.write(b"\0" * 4096)
        probe.flush()
        os.fsync(probe.fileno())
    return existing if args.overwrite else []


def _settings(args, model):
    settings = recipe(model)
    for key in ("epochs", "batch_size", "lr", "momentum", "weight_decay", "schedule", "warmup",
                "patience", "milestones", "gamma", "pad", "tta"):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    if args.renorm_radius is not None:  # 'none' parses to False: off
        settings["renorm_radius"] = args.renorm_radius or None
    if args.no_augment:
        settings["augment"] = False
    return settings


def _check_fits_in_memory(model, kwargs):
    """Refuse a model whose parameters, gradients and momentum buffers alone would not fit
    in this machine's memory, before drawing any weight (its shapes come from a build
    that allocates nothing)."""
    with nn.shapes_only():
        probe = models.build(model, **kwargs)
    need = 3 * sum(v.size * v.dtype.itemsize for v in probe.params.values())
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > have:
        raise ValueError(f"model {model} with {json.dumps(kwargs)} has "
                         f"{probe.num_params():,} parameters: {need / 2**30:.1f} GiB with their "
                         f"gradients and momentum, more than this machine's {have / 2**30:.1f} "
                         "GiB of memory")


def _init_from(args, net):
    """Copy the parameters of --init-from that fit (same names and shapes) into ``net``,
    except the last fully connected layer; report what was copied, refuse when nothing was."""
    linear = [name for name, layer in net.named_layers() if isinstance(layer, nn.Linear)]
    last = linear[-1] if linear else None
    from ..io.sources import load_init_source  # .npz, .onnx, .safetensors or .pth
    source = load_init_source(args.init_from, net)
    skip = (last,) if last else ()
    copied = models.transfer_parameters(source, net, skip=skip)
    if not copied:
        raise ValueError(f"--init-from {args.init_from}: none of its parameters fit "
                         f"{net.config['model'] if net.config else 'the net'} (no layer has "
                         "the same name and shapes); nothing to start from")
    own = {name.rsplit(".", 1)[0] for name in net.params}
    fresh = sorted(own - set(copied))
    tensors = [k for k in net.params if k.rsplit(".", 1)[0] in set(copied)]
    print(f"initialised {len(tensors)} tensors ({', '.join(copied)}) from {args.init_from}"
          f"{'; ' + ', '.join(fresh) + ' drawn anew' if fresh else ''}")


def _resume(args, trainer, settings):
    """Continue the run in --out (or the checkpoint given); a different --epochs extends the
    schedule to the new end, explicitly, or is refused when it would train nothing."""
    path = os.path.join(args.out, "last.npz") if args.resume == "last" else args.resume
    checkpoint = trainer.resume(path)
    planned = checkpoint.extra.get("settings", {}).get("epochs")
    if args.epochs is None and isinstance(planned, int):
        settings["epochs"] = planned
    epochs = settings["epochs"]
    if epochs <= trainer.epoch:
        raise ValueError(f"{path} has already trained {trainer.epoch} epochs; --epochs "
                         f"{epochs} leaves nothing to train (pass a larger --epochs)")
    if isinstance(planned, int) and epochs != planned:
        if hasattr(trainer.schedule, "epochs"):
            trainer.schedule.epochs = float(epochs)
        print(f"extending the schedule ({trainer.schedule.kind}) from {planned} to {epochs} "
              "epochs")
    trainer.extra["settings"] = dict(trainer.extra.get("settings", {}), epochs=epochs)
    print(f"resumed from {path} after epoch {trainer.epoch}")


def run_train(args):
    model = models.canonical_name(args.model)
    replaced = _prepare_out(args)  # before any data are read or any epoch is trained
    settings = _settings(args, model)
    seed = args.seed
    nn.set_seed(seed)
    comm = distributed.data_parallel()  # under mpirun: this rank of a data-parallel run
    if comm is not None:
        comm.quiet_unless_root()  # rank 0 prints for all
    if data.is_idx_dir(args.data):
        train, val, num_classes, shape, spec, arrays = _idx_loaders(args, settings, seed)
    elif os.path.isdir(os.path.join(args.data, "train")):
        crop = models.INPUT_SHAPES[model][-1]
        train, val, num_classes, shape, spec, arrays = _folder_loaders(
            args, settings, seed, crop, fresh_mean=not args.resume)
    else:
        raise FileNotFoundError(f"--data {args.data}: expected IDX files (train-images-idx3-"
                                "ubyte.gz, ...) or train/ and val/ image folders")
    settings["model_kwargs"] = dict(settings["model_kwargs"], **args.model_kwargs)
    kwargs = dict(num_classes=num_classes, in_channels=shape[0], **settings["model_kwargs"])
    if model in ("zfnet_mini", "resnet_mini", "vgg_mini"):
        kwargs.setdefault("size", shape[-1])
    _check_fits_in_memory(model, kwargs)
    net = models.build(model, **kwargs)
    expected = models.input_shape_of(net)
    if tuple(expected) != tuple(shape):
        raise ValueError(f"model {model} takes {'x'.join(map(str, expected))} inputs but "
                         f"--data {args.data} gives {'x'.join(map(str, shape))}")
    if args.init_from:
        _init_from(args, net)
    net.to(args.device)
    optimizer = SGD(net, lr=settings["lr"], momentum=settings["momentum"],
                    weight_decay=settings["weight_decay"], lr_mult=_lr_mult(args.lr_mult),
                    frozen=[f for f in args.freeze if f], renorm_radius=settings["renorm_radius"])
    schedule = make_schedule(settings["schedule"], settings["lr"], epochs=settings["epochs"],
                             warmup=settings["warmup"], patience=settings["patience"],
                             milestones=settings["milestones"] or (), gamma=settings["gamma"],
                             min_lr=settings["min_lr"])
    settings["milestones"] = list(settings["milestones"] or ())
    extra = {"data": spec, "settings": settings, "seed": seed, "model": model,
             "val": "split" if args.val_split else "test"}
    trainer = Trainer(net, optimizer, train, val, schedule, out_dir=args.out,
                      progress=not args.no_progress and (comm is None or comm.is_root),
                      device=args.device, extra=extra, arrays=arrays, comm=comm)
    trainer.replaces = [os.path.join(args.out, name) for name in replaced]
    trainer.snapshot_every = args.snapshot_every
    if args.resume:
        _resume(args, trainer, settings)
    print(f"{model}: {net.num_params():,} parameters, {train.num_samples} training images, "
          f"{settings['epochs']} epochs; settings {strict_json(settings)}")
    trainer.fit(settings["epochs"])
    final = trainer.history[-1] if trainer.history else {}
    if "val_top1_error" in final:
        print(f"final: top-1 error {final['val_top1_error']:.4f} (accuracy "
              f"{1 - final['val_top1_error']:.4f}), top-5 error {final['val_top5_error']:.4f}; "
              f"best top-1 error {trainer.best_val_error:.4f}; run folder {args.out}")
    skipped = trainer._skipped()
    if skipped:
        print(f"skipped {skipped} unreadable files (see the warnings above)")
    return 0


# ------------------------------------------------------------------ evaluate

def add_evaluate_arguments(p):
    p.add_argument("--checkpoint", nargs="+",
                   help="a .npz written by minconv train, or an .onnx model (or give --model "
                   "and --weights); several: each and their ensemble (softmax averaged)")
    from ..io.sources import add_source_arguments
    add_source_arguments(p)
    p.add_argument("--data", help="data folder (default: the one the run was trained on)")
    p.add_argument("--split", default="test", choices=("test", "train"),
                   help="IDX split (image folders: test means val/ or test/)")
    p.add_argument("--tta", choices=("none", "flip", "ten"), help="views to average")
    p.add_argument("--batch-size", type=positive_int, default=250)
    p.add_argument("--limit", type=positive_int, help="evaluate only the first N images")
    p.add_argument("--skip-bad", action="store_true")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))


def run_evaluate(args):
    paths = args.checkpoint if isinstance(args.checkpoint, list) else [args.checkpoint]
    args.checkpoint = paths[0]
    if paths[0] is None or any(str(p).lower().endswith(".onnx") for p in paths):
        from ..io.sources import evaluate_imported  # .onnx, or --model with --weights
        return evaluate_imported(args, paths)
    checkpoint = load_checkpoint(args.checkpoint, device=args.device)
    spec = checkpoint.extra.get("data", {})
    settings = checkpoint.extra.get("settings", {})
    root = args.data or spec.get("root")
    if not root:
        raise ValueError(f"{args.checkpoint}: no data folder recorded; pass --data")
    tta = args.tta or settings.get("tta", "none")
    if spec.get("kind", "array") == "array":
        images, labels = data.load_idx(root, args.split)
        if spec.get("classes"):
            images, labels = data.select(images, labels, spec["classes"])
        if args.limit:
            images, labels = images[:args.limit], labels[:args.limit]
        loader = data.ArrayLoader(images, labels, args.batch_size, mean=spec.get("mean", 0.0),
                                  std=spec.get("std", 1.0),
                                  views="flip" if tta == "flip" else None)
    else:
        if "mean_image" not in checkpoint.arrays:
            raise ValueError(f"{args.checkpoint}: no mean image recorded (array/mean_image); "
                             "image-folder data need the checkpoint of minconv train")
        sub = "train" if args.split == "train" else next(
            (d for d in ("val", "test") if os.path.isdir(os.path.join(root, d))), "val")
        folder = data.ImageFolder(os.path.join(root, sub), size=spec.get("size", 256),
                                  skip_bad=args.skip_bad,
                                  classes=data.class_table(spec, root, args.checkpoint))
        if args.limit:
            folder.samples = folder.samples[:args.limit]
        loader = data.FolderLoader(folder, checkpoint.arrays["mean_image"], args.batch_size,
                                   crop=spec.get("crop", 224),
                                   views="ten" if tta == "ten" else "center")
    if len(paths) > 1:
        from .ensemble import print_ensemble
        others = [load_checkpoint(path, device=args.device) for path in paths[1:]]
        print_ensemble(paths, [checkpoint] + others, loader, args.split, tta, args.json,
                       args.device)
        return 0
    comm = distributed.data_parallel()  # under mpirun: each rank evaluates its rows
    if comm is not None:
        comm.quiet_unless_root()
    result = evaluate(checkpoint.net, comm.shard_loader(loader) if comm else loader,
                      device=args.device)
    if comm is not None:
        result = comm.merge_evaluation(result)
    result.update(checkpoint=args.checkpoint, epoch=checkpoint.epoch, split=args.split, tta=tta)
    if args.json:
        print(strict_json(result))
    else:
        print(f"{args.checkpoint} (epoch {checkpoint.epoch}) on {result['count']} {args.split} "
              f"images, views: {tta}\n  loss {result['loss']:.4f}  top-1 error "
              f"{result['top1_error']:.4f} (accuracy {1 - result['top1_error']:.4f})  "
              f"top-5 error {result['top5_error']:.4f}")
    return 0


def register(add):
    """Called by :mod:`minconv.cli` to add this module's subcommands."""
    add("train", "train a model (the paper's recipe for zfnet)", add_train_arguments, run_train)
    add("evaluate", "loss, top-1 and top-5 error of a checkpoint", add_evaluate_arguments,
        run_evaluate)
