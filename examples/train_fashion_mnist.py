"""Train ZFNet-mini on Fashion-MNIST with the recipe reported in the README.

    python examples/train_fashion_mnist.py                       # the full run
    python examples/train_fashion_mnist.py --epochs 1 --subset 2048 --out runs/smoke

The same run from the command line:

    minconv train --model zfnet-mini --data /usr/share/datasets/fashion-mnist \\
        --out runs/fashion_mnist

The recipe (minconv/train/recipes.py): He-normal initialisation; SGD with
momentum 0.9, weight decay 5e-4, batch 128; the learning rate rises linearly
to 0.05 over the first epoch and then follows a half cosine to zero at the
27th; every training image is zero-padded by 1 pixel, cropped back to 28x28
at a random offset and mirrored with probability 1/2; no dropout; the test
images are classified by averaging the softmax of each image and its mirror.
The test set is only evaluated, never used to choose anything:
the figure reported is the last epoch's.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import minconv as mc  # noqa: E402
from minconv import data, models, train  # noqa: E402
from minconv.train.recipes import recipe  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    settings = recipe("zfnet_mini")
    p.add_argument("--data", default=data.FASHION_MNIST)
    p.add_argument("--out", default="runs/fashion_mnist")
    p.add_argument("--epochs", type=int, default=settings["epochs"])
    p.add_argument("--lr", type=float, default=settings["lr"])
    p.add_argument("--subset", type=int, help="train on the first N images only (smoke runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dropout", type=float, default=settings["model_kwargs"]["dropout"],
                   help="in fc6 and fc7")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.npz")
    args = p.parse_args()

    mc.nn.set_seed(args.seed)
    images, labels = data.load_idx(args.data, "train")          # (60000, 28, 28) uint8
    test_images, test_labels = data.load_idx(args.data, "test")  # (10000, 28, 28)
    if args.subset:
        images, labels = images[:args.subset], labels[:args.subset]
    train_batches = data.ArrayLoader(images, labels, settings["batch_size"], shuffle=True,
                                     augment=True, pad=settings["pad"], seed=args.seed)
    test_batches = data.ArrayLoader(test_images, test_labels, 500, views="flip")

    net = models.zfnet_mini(num_classes=10, dropout=args.dropout)
    models.summary(net, (1, 28, 28))
    optimizer = train.SGD(net, lr=args.lr, momentum=settings["momentum"],
                          weight_decay=settings["weight_decay"])
    schedule = train.Cosine(args.lr, epochs=args.epochs, warmup=min(settings["warmup"],
                                                                    args.epochs / 2))
    trainer = train.Trainer(net, optimizer, train_batches, test_batches, schedule,
                            out_dir=args.out,
                            extra={"data": dict(train_batches.spec(), root=args.data),
                                   "settings": dict(settings, lr=args.lr, epochs=args.epochs),
                                   "seed": args.seed, "model": "zfnet_mini", "val": "test"})
    if args.resume:
        trainer.resume(os.path.join(args.out, "last.npz"))
    trainer.fit(args.epochs)

    last = trainer.history[-1]
    seconds = sum(r["train_seconds"] + r.get("eval_seconds", 0) for r in trainer.history)
    print(f"\nZFNet-mini on Fashion-MNIST after {args.epochs} epochs ({seconds / 60:.1f} min): "
          f"test accuracy {1 - last['val_top1_error']:.4f} (image + mirror), "
          f"top-5 error {last['val_top5_error']:.4f}")
    plain = train.evaluate(net, data.ArrayLoader(test_images, test_labels, 500))
    print(f"without the mirror: test accuracy {1 - plain['top1_error']:.4f}")
    print(f"curves: {os.path.join(args.out, 'curves.png')}, log: "
          f"{os.path.join(args.out, 'log.csv')}")


if __name__ == "__main__":
    main()
