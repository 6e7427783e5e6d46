"""Top-k per feature map against a brute-force search; projections, patches, the sheet."""
import numpy as np
import pytest

import minconv as mc
from minconv.vis import (DeconvNet, evolution_figure, feature_evolution, project_top_k,
                         receptive_field, top9, top_k, top_k_patches, top_k_sheet)

nn = mc.nn


def net_with_ties(rng):
    """A small conv net (in-place ReLUs, as the model zoo builds them) whose conv2 has a
    dead map (all zeros after the ReLU), so that ties must be broken like the brute force."""
    net = nn.Sequential(nn.Conv2D(1, 4, 3, padding=1, init_std=0.5, rng=rng),
                        nn.ReLU(inplace=True), nn.MaxPool2D(3, 2, ceil_mode=True),
                        nn.Conv2D(4, 5, 3, init_std=0.5, rng=rng), nn.ReLU(inplace=True),
                        nn.Flatten(), nn.Linear(5 * 3 * 3, 3, init_std=0.5, rng=rng))
    net["conv2"].params["b"][2] = -100.0
    return net


def brute_force(net, images, layer, k, distinct):
    """Sort every candidate by (-value, image, position) and keep the first k."""
    out = []
    for i in range(len(images)):
        a = net.forward(images[i:i + 1], until=layer)[0]
        out.append(a.reshape(a.shape[0], -1).astype(np.float64).copy())
    a = np.stack(out)                                                  # (N, F, L)
    result = []
    for f in range(a.shape[1]):
        if distinct:
            cand = [(-a[i, f].max(), i, int(a[i, f].argmax())) for i in range(len(a))]
        else:
            cand = [(-a[i, f, p], i, p) for i in range(len(a)) for p in range(a.shape[2])]
        result.append(sorted(cand)[:k])
    return result


@pytest.mark.parametrize("distinct", [True, False])
def test_top_k_equals_brute_force(distinct):
    rng = np.random.default_rng(0)
    net = net_with_ties(rng)
    images = rng.standard_normal((37, 1, 10, 10)).astype(np.float32)
    layers = ["conv1", "relu2", "fc1"]
    found = top_k(net, images, layers, k=9, batch_size=8, distinct_images=distinct,
                  show_progress=False)
    for layer in layers:
        r = found[layer]
        want = brute_force(net, images, layer, 9, distinct)
        W = net.forward(images[:1], until=layer).shape[-1] if layer != "fc1" else 1
        for f, best in enumerate(want):
            np.testing.assert_allclose(r.values[f], [-c[0] for c in best], rtol=1e-6)
            assert r.images[f].tolist() == [c[1] for c in best], (layer, f)
            if layer != "fc1":
                assert r.positions[f].tolist() == [[c[2] // W, c[2] % W] for c in best]
            else:
                assert (r.positions[f] == -1).all()
    assert (found["relu2"].values[2] == 0).all()               # the dead map: ties at 0
    assert found["relu2"].images[2].tolist() == (list(range(9)) if distinct else [0] * 9)


def test_fewer_candidates_than_k_and_default_layers():
    rng = np.random.default_rng(1)
    net = net_with_ties(rng)
    images = rng.standard_normal((4, 1, 10, 10)).astype(np.float32)
    found = top9(net, images, show_progress=False)
    assert list(found) == ["conv1", "conv2"]
    r = found["conv1"]
    assert r.values.shape == (4, 9)
    assert (r.images[:, 4:] == -1).all() and np.isinf(r.values[:, 4:]).all()
    proj = project_top_k(net, images, r)
    assert proj.shape == (4, 9, 1, 10, 10)
    assert (proj[:, 4:] == 0).all()


def test_projections_and_patches_follow_the_entries():
    rng = np.random.default_rng(2)
    net = net_with_ties(rng)
    images = rng.standard_normal((20, 1, 10, 10)).astype(np.float32)
    r = top_k(net, images, ["conv2"], k=3, show_progress=False)["conv2"]
    maps = [0, 4]
    proj = project_top_k(net, images, r, maps=maps, batch_size=4)
    for m, f in enumerate(maps):
        for j in range(3):
            i = r.images[f, j]
            alone = DeconvNet(net).project(images[i:i + 1], "conv2", f, tuple(r.positions[f, j]))
            np.testing.assert_allclose(proj[m, j], alone[0], rtol=1e-5, atol=1e-6)
    patches, crops = top_k_patches(net, images, r, maps=maps, projections=proj)
    assert patches[0][0].shape == (1, 9, 9) == crops[0][0].shape    # conv2 sees 9x9 pixels
    sheet = top_k_sheet(crops, patches, ["a", "b"], columns=2, zoom=3)
    # 2 maps side by side, each 2 grids of 2x2 tiles (k = 3) of 9x9 pixels zoomed 3 times
    assert sheet.mode == "RGB" and sheet.size[0] > 2 * 2 * 2 * 27


def test_top_k_errors():
    net = net_with_ties(np.random.default_rng(3))
    images = np.zeros((3, 1, 10, 10), np.float32)
    with pytest.raises(ValueError, match="valid names"):
        top_k(net, images, ["conv7"], show_progress=False)
    with pytest.raises(ValueError, match="k must be"):
        top_k(net, images, k=0, show_progress=False)
    with pytest.raises(ValueError, match="empty"):
        top_k(net, images[:0], show_progress=False)


def test_feature_evolution_follows_each_snapshot():
    rng = np.random.default_rng(4)
    first = net_with_ties(rng)
    second = net_with_ties(rng)                     # other weights: another "epoch"
    images = rng.standard_normal((12, 1, 10, 10)).astype(np.float32)
    evo = feature_evolution([first, second], images, ["conv1", "conv2"], maps=3,
                            labels=["early", "late"])
    assert list(evo) == ["conv1", "conv2"]
    e = evo["conv2"]
    assert e.maps.tolist() == [0, 1, 2] and e.labels == ["early", "late"]
    assert len(e.crops) == 2 and len(e.crops[0]) == 3
    for s, net in enumerate([first, second]):
        best = top_k(net, images, ["conv2"], k=1, show_progress=False)["conv2"]
        np.testing.assert_array_equal(e.images[s], best.images[:3, 0])
        i, pos = best.images[1, 0], tuple(best.positions[1, 0])
        proj = DeconvNet(net).project(images[i:i + 1], "conv2", 1, pos)[0]
        field = receptive_field(net, "conv2", images.shape)
        np.testing.assert_allclose(e.crops[s][1], field.crop(proj, pos, pad=True), rtol=1e-5,
                                   atol=1e-7)
    assert evolution_figure(e).size[0] > 0
    with pytest.raises(ValueError, match="out of range for layer 'conv1' with 4 maps"):
        feature_evolution([first], images, "conv1", maps=[4])
