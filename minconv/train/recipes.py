"""Default training settings per model: the paper's for ZFNet and AlexNet, and our own,
recorded here, for the small nets on 28x28 images.

The paper (Section 3): mini-batches of 128, SGD with learning rate 1e-2 and
momentum 0.9, the rate annealed by hand when the validation error plateaus,
dropout 0.5 in fc6/fc7, weights from N(0, 0.01^2), zero biases, conv filters
renormalised to RMS 0.1, 70 epochs. Weight decay is not stated in the paper;
5e-4 is AlexNet's, whose training code the paper builds on.

zfnet_mini on Fashion-MNIST (fixed budget of epochs, so a cosine decay rather
than annealing by hand): He-normal initialisation, SGD momentum 0.9, weight
decay 5e-4, batch 128, a one-epoch linear warm-up to the peak rate and a
cosine decay to zero, random crops (zero padding 2) and horizontal flips,
dropout 0.5 in fc6/fc7 (the model's default; 0.2 measures better, see the
README), no filter renormalisation (He-initialised filters start above RMS
0.1), and evaluation averaging the softmax over each image and its mirror.
Twenty epochs of about 70 s (2 cores) and their evaluations fit in half an
hour; on a slower machine, lower ``--epochs`` to fit the budget.
"""

PAPER = dict(lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=128, schedule="plateau",
             patience=3, gamma=0.1, warmup=0.0, min_lr=0.0, milestones=(), epochs=70,
             renorm_radius=0.1, augment=True, pad=0, tta="ten")

RECIPES = {
    "zfnet": dict(PAPER),
    "alexnet": dict(PAPER, renorm_radius=None),
    "zfnet_mini": dict(PAPER, lr=0.05, schedule="cosine", warmup=1.0, epochs=20,
                       renorm_radius=None, pad=2, tta="flip"),
    "lenet5": dict(PAPER, lr=0.05, schedule="cosine", warmup=1.0, epochs=15,
                   renorm_radius=None, pad=2, tta="none"),
}


def recipe(model):
    """A copy of the default settings for ``model`` (a canonical model name)."""
    return dict(RECIPES[model])
