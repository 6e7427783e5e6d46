"""Receptive fields: ZFNet's by hand, and by perturbation on small nets."""
import numpy as np
import pytest

import minconv as mc
from minconv.vis import crop, receptive_field, receptive_fields

nn = mc.nn


@pytest.fixture(scope="module")
def zfnet_fields():
    net = mc.models.zfnet(num_classes=10)
    return receptive_fields(net, (3, 224, 224))


def test_zfnet_fields_match_hand_computation(zfnet_fields):
    # size' = size + (k - 1) * jump, jump' = jump * s, start' = start - p * jump
    # conv1 7/2 p1: 7, 2, -1;   pool1 3/2: 7 + 2*2 = 11, 4, -1
    # conv2 5/2 p0: 11 + 4*4 = 27, 8, -1;   pool2 3/2: 27 + 2*8 = 43, 16, -1
    # conv3..5 3/1 p1: 75, 107, 139 with jump 16, start -17, -33, -49;  pool5: 171, 32, -49
    want = {"conv1": (7, 2, -1, (96, 110, 110)), "pool1": (11, 4, -1, (96, 55, 55)),
            "norm1": (11, 4, -1, (96, 55, 55)), "conv2": (27, 8, -1, (256, 26, 26)),
            "pool2": (43, 16, -1, (256, 13, 13)), "conv3": (75, 16, -17, (384, 13, 13)),
            "conv4": (107, 16, -33, (384, 13, 13)), "conv5": (139, 16, -49, (256, 13, 13)),
            "relu5": (139, 16, -49, (256, 13, 13)), "pool5": (171, 32, -49, (256, 6, 6))}
    for name, (size, jump, start, shape) in want.items():
        f = zfnet_fields[name]
        assert f.size == (size, size), name
        assert f.jump == (jump, jump), name
        assert f.start == (start, start), name
        assert f.output_shape == shape, name
    # fc layers see the union of pool5's fields: 171 + 5 * 32 = 331 pixels from -49
    assert zfnet_fields["fc6"].size == (331, 331)
    assert zfnet_fields["fc8"].output_shape == (10,)


def _moved(net, x, layers):
    """{layer: (C*H*W pixels, F, Ho, Wo) bool}: which units each input pixel moves, with
    every pixel perturbed in its own copy of x and all copies in one batch."""
    n = x[0].size
    copies = np.repeat(x, n, axis=0)
    copies.reshape(n, -1)[np.arange(n), np.arange(n)] += 0.5
    net.forward(x, record=layers, until=layers[-1])
    base = {k: v.copy() for k, v in net.outputs.items()}
    net.forward(copies, record=layers, until=layers[-1])
    return {k: np.abs(net.outputs[k] - base[k]) > 1e-12 for k in layers}


def _check_fields(net, x, layers, exact):
    C, H, W = x.shape[1:]
    moved = _moved(net, x, layers)
    for layer in layers:
        field = receptive_field(net, layer, x.shape)
        m = moved[layer].reshape((C, H, W) + moved[layer].shape[1:]).any(axis=0)
        assert m.any(), layer
        F, Ho, Wo = field.output_shape
        for h in range(Ho):
            for w in range(Wo):
                top, left, bottom, right = field.box((h, w), x.shape)
                inside = np.zeros((H, W), bool)
                inside[top:bottom, left:right] = True
                for f in range(F):
                    pixels = m[:, :, f, h, w]
                    if exact:
                        assert (pixels == inside).all(), (layer, f, h, w)
                    else:
                        assert not (pixels & ~inside).any(), (layer, f, h, w)
                patch = crop(x[0], layer, (h, w), net=net)
                assert patch.shape == (C, bottom - top, right - left)


def test_linear_stack_field_is_exact():
    """Without ReLU or pooling every pixel of the field moves the unit, and no other."""
    rng = np.random.default_rng(0)
    net = nn.Sequential(nn.Conv2D(1, 2, 3, stride=2, padding=1, init_std=1.0, rng=rng,
                                  dtype="float64"),
                        nn.Conv2D(2, 2, (3, 2), padding=(2, 0), init_std=1.0, rng=rng,
                                  dtype="float64"),
                        nn.Conv2D(2, 1, 2, stride=2, init_std=1.0, rng=rng, dtype="float64"))
    _check_fields(net, rng.standard_normal((1, 1, 23, 21)), ["conv1", "conv2", "conv3"], True)


def test_dilated_field_is_the_bounding_box():
    """A dilated convolution over a strided one sees pixels with gaps between them; the
    field is their bounding box."""
    rng = np.random.default_rng(2)
    net = nn.Sequential(nn.Conv2D(1, 2, 3, stride=2, padding=1, init_std=1.0, rng=rng,
                                  dtype="float64"),
                        nn.Conv2D(2, 2, (3, 2), padding=(2, 0), dilation=(2, 1), init_std=1.0,
                                  rng=rng, dtype="float64"))
    x = rng.standard_normal((1, 1, 23, 21))
    _check_fields(net, x, ["conv1", "conv2"], False)
    moved = _moved(net, x, ["conv2"])["conv2"].reshape(23, 21, 2, 12, 10)[:, :, 0, 5, 5]
    rows = np.flatnonzero(moved.any(axis=1))
    top, _, bottom, _ = receptive_field(net, "conv2", x.shape).box((5, 5))
    assert (rows.min(), rows.max() + 1) == (top, bottom)


def test_patch_holds_every_pixel_that_moves_the_unit():
    rng = np.random.default_rng(1)
    net = nn.Sequential(nn.Conv2D(2, 4, 5, stride=2, padding=2, init_std=0.5, rng=rng,
                                  dtype="float64"),
                        nn.ReLU(), nn.MaxPool2D(3, 2, ceil_mode=True), nn.LRN(3),
                        nn.Conv2D(4, 3, 3, padding=1, init_std=0.5, rng=rng, dtype="float64"),
                        nn.ReLU(), nn.MaxPool2D(2, 2))
    _check_fields(net, rng.standard_normal((1, 2, 26, 22)),
                  ["conv1", "pool1", "norm1", "conv2", "relu2", "pool2"], False)


def test_crop_clips_at_the_border_and_pads_on_request():
    net = nn.Sequential(nn.Conv2D(1, 1, 5, padding=2))
    image = np.arange(100.0).reshape(1, 10, 10)
    assert crop(image, "conv1", (0, 0), net=net).shape == (1, 3, 3)      # rows -2..2
    np.testing.assert_array_equal(crop(image, "conv1", (5, 5), net=net), image[:, 3:8, 3:8])
    padded = crop(image, "conv1", (0, 9), net=net, pad=True, fill=-1)
    assert padded.shape == (1, 5, 5)
    np.testing.assert_array_equal(padded[:, 2:, :3], image[:, :3, 7:])   # aligned, clipped part
    assert (padded[:, :2] == -1).all() and (padded[:, :, 3:] == -1).all()
    with pytest.raises(ValueError, match="valid names"):
        crop(image, "conv9", (0, 0), net=net)
