"""The paper's Section 5 on Fashion-MNIST: features learnt on one task help another.

    python examples/transfer_learning.py                 # prints the table below
    python examples/transfer_learning.py --pretrain-epochs 1 --draws 1   # quicker

1. Pre-train ZFNet-mini on classes 0-4 (T-shirt, trouser, pullover, dress, coat).
2. On classes 5-9 (sandal, shirt, sneaker, bag, ankle boot), with only 10 or 50
   training images per class, compare
   - the same net trained from scratch on those few images;
   - the pre-trained net with conv1..fc7 kept fixed and a new softmax layer (fc8)
     trained on top, as the paper does with its ImageNet net on Caltech-101;
   - the pre-trained net fine-tuned: every layer trains, conv1..fc7 at a tenth of
     the rate of the new fc8.
   Accuracy on the 5000 test images of classes 5-9, mean and spread over
   ``--draws`` random draws of the few training images, as in the paper's table.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import minconv as mc  # noqa: E402
from minconv import data, models, train  # noqa: E402

OLD, NEW = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
FEATURES = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")


def pretrain(args, images, labels, test_images, test_labels):
    """ZFNet-mini on classes 0-4 (cached in OUT/pretrained/last.npz)."""
    out = os.path.join(args.out, "pretrained")
    path = os.path.join(out, "last.npz")
    if os.path.exists(path):
        checkpoint = train.load_checkpoint(path)
        if checkpoint.epoch >= args.pretrain_epochs:
            print(f"using the pre-trained net in {path}")
            return checkpoint.net
    mc.nn.set_seed(args.seed)
    x, y = data.select(images, labels, OLD)
    if args.pretrain_subset:
        x, y = x[:args.pretrain_subset], y[:args.pretrain_subset]
    tx, ty = data.select(test_images, test_labels, OLD)
    net = models.zfnet_mini(num_classes=len(OLD))
    optimizer = train.SGD(net, lr=0.05, momentum=0.9, weight_decay=5e-4)
    trainer = train.Trainer(
        net, optimizer, data.ArrayLoader(x, y, 128, shuffle=True, augment=True, seed=args.seed),
        data.ArrayLoader(tx, ty, 500), train.Cosine(0.05, args.pretrain_epochs,
                                                    warmup=min(1.0, args.pretrain_epochs / 2)),
        out_dir=out, progress=not args.quiet)
    trainer.fit(args.pretrain_epochs)
    return net


def few_shot(args, pretrained, x, y, test_loader, mode, seed):
    """Train on the few images (x, y) and return the test accuracy."""
    mc.nn.set_seed(seed)
    net = models.zfnet_mini(num_classes=len(NEW))  # a fresh fc8 in every case
    lr_mult, frozen = {}, []
    if mode != "scratch":
        models.transfer_parameters(pretrained, net, skip=("fc8",))
        if mode == "frozen":
            frozen = list(FEATURES)
        else:
            lr_mult = {name: 0.1 for name in FEATURES}
    # the same number of updates whatever the number of images: 16 images a batch
    batch = 16
    epochs = max(1, args.steps * batch // len(y))
    loader = data.ArrayLoader(x, y, batch, shuffle=True, augment=True, seed=seed)
    optimizer = train.SGD(net, lr=0.01, momentum=0.9, weight_decay=5e-4, lr_mult=lr_mult,
                          frozen=frozen)
    trainer = train.Trainer(net, optimizer, loader, None, train.Cosine(0.01, epochs),
                            progress=False, verbose=False)
    trainer.fit(epochs)
    return 1.0 - train.evaluate(net, test_loader)["top1_error"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=data.FASHION_MNIST)
    p.add_argument("--out", default="runs/transfer")
    p.add_argument("--pretrain-epochs", type=int, default=4)
    p.add_argument("--pretrain-subset", type=int, help="pre-train on N images (smoke runs)")
    p.add_argument("--shots", type=lambda s: [int(v) for v in s.split(",")], default=[10, 50])
    p.add_argument("--draws", type=int, default=3, help="random draws of the few images")
    p.add_argument("--steps", type=int, default=300, help="updates per few-shot run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()

    images, labels = data.load_idx(args.data, "train")
    test_images, test_labels = data.load_idx(args.data, "test")
    pretrained = pretrain(args, images, labels, test_images, test_labels)
    tx, ty = data.select(test_images, test_labels, NEW)
    test_loader = data.ArrayLoader(tx, ty, 500)

    modes = (("scratch", "Non-pretrained convnet"),
             ("frozen", "Pre-trained conv1-fc7 fixed, new softmax"),
             ("finetune", "Pre-trained, fine-tuned (conv1-fc7 at lr x0.1)"))
    results = {mode: {n: [] for n in args.shots} for mode, _ in modes}
    for n in args.shots:
        for draw in range(args.draws):
            seed = args.seed + 1000 * n + draw
            x, y = data.select(images, labels, NEW, per_class=n, rng=seed)
            for mode, _ in modes:
                accuracy = few_shot(args, pretrained, x, y, test_loader, mode, seed)
                results[mode][n].append(accuracy)
                print(f"{n:>3}/class draw {draw + 1}: {mode:<8} accuracy {accuracy:.4f}",
                      flush=True)

    head = "| Fashion-MNIST classes 5-9, accuracy % | " + \
        " | ".join(f"{n}/class" for n in args.shots) + " |"
    lines = [head, "| --- |" + " ---: |" * len(args.shots)]
    for mode, title in modes:
        cells = [f"{100 * np.mean(v):.1f} ± {100 * np.std(v):.1f}"
                 for v in (results[mode][n] for n in args.shots)]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    print(f"\npre-trained {args.pretrain_epochs} epochs on classes 0-4; "
          f"{args.draws} draws per column\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
