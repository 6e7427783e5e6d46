"""Small nets for 28x28 digits and clothes: LeNet-5 (modern and as LeCun et al. built it)
and the Keras MNIST CNN of the CNN chapter."""
from .. import nn
from ._blocks import conv, fc, named


def lenet5(num_classes=10, in_channels=1, inplace=True, rng=None):
    """LeNet-5 for 28x28 inputs (padded to 32x32 by conv1), with ReLU and max pooling.

    conv1 6 5x5 pad 2 -> 28 -> pool 2 -> 14; conv2 16 5x5 -> 10 -> pool 2 -> 5x5x16;
    fc3 120, fc4 84, fc5 ``num_classes``: 61,706 parameters for 10 classes.
    """
    layers = [("conv1", conv(in_channels, 6, 5, 1, 2, rng=rng)),
              ("relu1", nn.ReLU(inplace=inplace)), ("pool1", nn.MaxPool2D(2, 2)),
              ("conv2", conv(6, 16, 5, 1, 0, rng=rng)),
              ("relu2", nn.ReLU(inplace=inplace)), ("pool2", nn.MaxPool2D(2, 2)),
              ("flatten", nn.Flatten()),
              ("fc3", fc(400, 120, rng=rng)), ("relu3", nn.ReLU(inplace=inplace)),
              ("fc4", fc(120, 84, rng=rng)), ("relu4", nn.ReLU(inplace=inplace)),
              ("fc5", fc(84, num_classes, rng=rng, last=True))]
    return named(nn.Sequential(layers), "lenet5", num_classes=num_classes,
                 in_channels=in_channels, inplace=inplace)


def lenet5_original(num_classes=10, in_channels=1, rng=None):
    """LeNet-5 as in LeCun et al. (1998), Figure 2: tanh squashing and average-pooling
    subsampling, for 28x28 inputs zero-padded to the paper's 32x32 by conv1.

    C1 6 5x5 -> 28x28 -> tanh -> S2 average 2x2/2 -> 14x14
    C3 16 5x5 -> 10x10 -> tanh -> S4 average 2x2/2 -> 5x5
    C5 120 5x5 -> 1x1 (a convolution, as in the paper) -> tanh
    F6 84 -> tanh -> output ``num_classes``: 61,706 parameters for 10 classes.

    Two simplifications, as in most reconstructions: the subsampling layers have no
    trainable coefficient and bias of their own, and C3 sees all six maps of S2 (the
    paper's sparse connection table would need 15 of its 16 maps to see only some), and
    the output is a linear layer for the softmax loss instead of Euclidean RBF units.
    Weights use std sqrt(1 / fan_in), which suits tanh.
    """
    def squash_conv(c_in, c_out, k, padding=0):
        return nn.Conv2D(c_in, c_out, k, padding=padding, init_std=(c_in * k * k) ** -0.5,
                         rng=rng)
    layers = [("conv1", squash_conv(in_channels, 6, 5, padding=2)), ("tanh1", nn.Tanh()),
              ("pool1", nn.AvgPool2D(2)),
              ("conv2", squash_conv(6, 16, 5)), ("tanh2", nn.Tanh()), ("pool2", nn.AvgPool2D(2)),
              ("conv3", squash_conv(16, 120, 5)), ("tanh3", nn.Tanh()),
              ("flatten", nn.Flatten()),
              ("fc4", nn.Linear(120, 84, init_std=120 ** -0.5, rng=rng)), ("tanh4", nn.Tanh()),
              ("fc5", nn.Linear(84, num_classes, init_std=84 ** -0.5, rng=rng))]
    return named(nn.Sequential(layers), "lenet5_original", num_classes=num_classes,
                 in_channels=in_channels)


def mnist_cnn(num_classes=10, in_channels=1, inplace=True, rng=None):
    """The Keras MNIST CNN of the CNN chapter, layer for layer (28x28 inputs).

    conv1 32 3x3 -> 26x26 -> relu; conv2 64 3x3 -> 24x24 -> relu; pool 2x2 -> 12x12;
    dropout 0.25; flatten 9216; fc1 128 -> relu; dropout 0.5; fc2 ``num_classes``
    (the softmax lives in the loss): 1,199,882 parameters for 10 classes.
    """
    layers = [("conv1", conv(in_channels, 32, 3, rng=rng)), ("relu1", nn.ReLU(inplace=inplace)),
              ("conv2", conv(32, 64, 3, rng=rng)), ("relu2", nn.ReLU(inplace=inplace)),
              ("pool", nn.MaxPool2D(2)), ("drop1", nn.Dropout(0.25, rng=rng)),
              ("flatten", nn.Flatten()),
              ("fc1", fc(12 * 12 * 64, 128, rng=rng)), ("relu3", nn.ReLU(inplace=inplace)),
              ("drop2", nn.Dropout(0.5, rng=rng)),
              ("fc2", fc(128, num_classes, rng=rng, last=True))]
    return named(nn.Sequential(layers), "mnist_cnn", num_classes=num_classes,
                 in_channels=in_channels, inplace=inplace)
