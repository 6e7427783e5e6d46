"""``minconv train`` and ``minconv evaluate``: data from a folder, the model's recipe,
the Trainer, and what they print.

``--data`` is either a folder of MNIST-style IDX files (Fashion-MNIST) or a
folder with ``train/`` and ``val/`` (or ``test/``) image sub-folders, one
sub-folder per class inside each.
"""
import json
import os

import numpy as np

from .. import data, models, nn
from .checkpoint import load_checkpoint
from .metrics import evaluate
from .optim import SGD
from .recipes import recipe
from .schedule import make_schedule
from .trainer import Trainer


def _ints(text):
    return [int(v) for v in text.split(",") if v.strip()] if text else None


def _radius(text):
    return False if str(text).lower() in ("none", "off", "0") else float(text)


def _lr_mult(items):
    mult = {}
    for item in items or []:
        name, _, value = item.partition("=")
        try:
            mult[name] = float(value)
        except ValueError:
            raise ValueError(f"--lr-mult expects LAYER=FACTOR, got {item!r}") from None
    return mult


def add_train_arguments(p):
    p.add_argument("--model", required=True, help="zfnet, zfnet-mini, alexnet or lenet5")
    p.add_argument("--data", default=data.FASHION_MNIST,
                   help="IDX folder, or a folder with train/ and val/ image folders")
    p.add_argument("--out", required=True, help="run folder: checkpoints, logs, curves")
    p.add_argument("--epochs", type=int, help="number of epochs (default: the recipe's)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--momentum", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--schedule", choices=("plateau", "step", "cosine", "constant"))
    p.add_argument("--warmup", type=float, help="epochs of linear warm-up")
    p.add_argument("--patience", type=int, help="plateau: epochs without improvement")
    p.add_argument("--milestones", type=_ints, help="step: epochs, e.g. 30,60")
    p.add_argument("--gamma", type=float, help="factor at each annealing (0.1)")
    p.add_argument("--renorm-radius", type=_radius,
                   help="RMS radius of conv filters after each update, or 'none'")
    p.add_argument("--no-augment", action="store_true", help="no random crops or flips")
    p.add_argument("--pad", type=int, help="zero padding before random crops (IDX data)")
    p.add_argument("--tta", choices=("none", "flip", "ten"),
                   help="views averaged at evaluation (ten: image folders only)")
    p.add_argument("--val-split", type=int, default=0,
                   help="hold out this many training images for validation "
                        "(0: validate on the test split)")
    p.add_argument("--subset", type=int, help="use only the first N training images")
    p.add_argument("--val-subset", type=int, help="use only the first N validation images")
    p.add_argument("--classes", type=_ints, help="keep these classes (relabelled 0..K-1)")
    p.add_argument("--per-class", type=int, help="at most this many training images per class")
    p.add_argument("--init-from", help="checkpoint whose parameters start the net (a new "
                   "fc8 is drawn when the class count differs)")
    p.add_argument("--freeze", type=lambda s: s.split(","), default=[],
                   help="layers kept fixed, e.g. conv1,conv2,conv3,conv4,conv5,fc6,fc7")
    p.add_argument("--lr-mult", nargs="*", help="per-layer rate factors, e.g. fc8=10")
    p.add_argument("--model-kwargs", type=json.loads, default={},
                   help='model arguments as JSON, over the recipe\'s own (zfnet-mini: dropout '
                   '0), e.g. \'{"widths": [32,64,96,96,64]}\'')
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", nargs="?", const="last", help="continue from OUT/last.npz "
                   "(or the checkpoint given)")
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
            raise ValueError(f"--val-split {args.val_split} leaves no training images")
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
    num_classes = len(args.classes) if args.classes else int(labels.max()) + 1
    train = data.ArrayLoader(images, labels, settings["batch_size"], shuffle=True,
                             augment=settings["augment"], pad=settings["pad"], seed=seed)
    views = "flip" if settings["tta"] == "flip" else None
    val = data.ArrayLoader(val_images, val_labels, 500, views=views)
    spec = dict(train.spec(), root=os.path.abspath(args.data), classes=args.classes)
    return train, val, num_classes, (1,) + images.shape[1:], spec, {}


def _folder_loaders(args, settings, seed, crop):
    root = args.data
    val_root = next((os.path.join(root, d) for d in ("val", "test")
                     if os.path.isdir(os.path.join(root, d))), None)
    size = crop * 8 // 7  # the paper's 256 for 224 crops
    folder = data.ImageFolder(os.path.join(root, "train"), size=size, skip_bad=args.skip_bad)
    cached = os.path.join(args.out, "mean_image.npy")
    if os.path.exists(cached):
        mean = np.load(cached, allow_pickle=False)
    else:
        mean = data.compute_mean_image(folder, progress=not args.no_progress)
        os.makedirs(args.out, exist_ok=True)
        np.save(cached, mean)
    train = data.FolderLoader(folder, mean, settings["batch_size"], train=True, crop=crop,
                              seed=seed)
    val = None
    if val_root:
        views = "ten" if settings["tta"] == "ten" else "center"
        val_folder = data.ImageFolder(val_root, size=size, skip_bad=args.skip_bad)
        val = data.FolderLoader(val_folder, mean, settings["batch_size"], crop=crop,
                                views=views)
    spec = dict(train.spec(), root=os.path.abspath(root))
    return train, val, len(folder.classes), (3, crop, crop), spec, {"mean_image": mean}


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


def run_train(args):
    model = models.canonical_name(args.model)
    settings = _settings(args, model)
    seed = args.seed
    nn.set_seed(seed)
    if data.is_idx_dir(args.data):
        train, val, num_classes, shape, spec, arrays = _idx_loaders(args, settings, seed)
    elif os.path.isdir(os.path.join(args.data, "train")):
        crop = models.INPUT_SHAPES[model][-1]
        train, val, num_classes, shape, spec, arrays = _folder_loaders(args, settings, seed, crop)
    else:
        raise FileNotFoundError(f"--data {args.data}: expected IDX files (train-images-idx3-"
                                "ubyte.gz, ...) or train/ and val/ image folders")
    settings["model_kwargs"] = dict(settings["model_kwargs"], **args.model_kwargs)
    kwargs = dict(num_classes=num_classes, in_channels=shape[0], **settings["model_kwargs"])
    if model == "zfnet_mini":
        kwargs.setdefault("size", shape[-1])
    net = models.build(model, **kwargs)
    expected = models.input_shape_of(net)
    if tuple(expected) != tuple(shape):
        raise ValueError(f"model {model} takes {'x'.join(map(str, expected))} inputs but "
                         f"--data {args.data} gives {'x'.join(map(str, shape))}")
    if args.init_from:
        last = [name for name, layer in net.items() if isinstance(layer, nn.Linear)][-1]
        copied = models.transfer_parameters(load_checkpoint(args.init_from).net, net,
                                            skip=(last,))
        print(f"initialised {', '.join(copied)} from {args.init_from}; {last} drawn anew")
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
                      progress=not args.no_progress, device=args.device, extra=extra,
                      arrays=arrays)
    if args.resume:
        path = os.path.join(args.out, "last.npz") if args.resume == "last" else args.resume
        trainer.resume(path)
        print(f"resumed from {path} after epoch {trainer.epoch}")
    print(f"{model}: {net.num_params():,} parameters, {train.num_samples} training images, "
          f"{settings['epochs']} epochs; settings {json.dumps(settings)}")
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
    p.add_argument("--checkpoint", required=True, help="a .npz written by minconv train")
    p.add_argument("--data", help="data folder (default: the one the run was trained on)")
    p.add_argument("--split", default="test", choices=("test", "train"),
                   help="IDX split (image folders: test means val/ or test/)")
    p.add_argument("--tta", choices=("none", "flip", "ten"), help="views to average")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--limit", type=int, help="evaluate only the first N images")
    p.add_argument("--skip-bad", action="store_true")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))


def run_evaluate(args):
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
        sub = "train" if args.split == "train" else next(
            (d for d in ("val", "test") if os.path.isdir(os.path.join(root, d))), "val")
        folder = data.ImageFolder(os.path.join(root, sub), size=spec.get("size", 256),
                                  skip_bad=args.skip_bad)
        if args.limit:
            folder.samples = folder.samples[:args.limit]
        loader = data.FolderLoader(folder, checkpoint.arrays["mean_image"], args.batch_size,
                                   crop=spec.get("crop", 224),
                                   views="ten" if tta == "ten" else "center")
    result = evaluate(checkpoint.net, loader, device=args.device)
    result.update(checkpoint=args.checkpoint, epoch=checkpoint.epoch, split=args.split, tta=tta)
    if args.json:
        print(json.dumps(result))
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
