"""The command line with nets from elsewhere: ``minconv convert`` between .npz, .onnx and
.safetensors (and .pth in), and the visualisation commands on an .onnx model or on
``--model NAME --weights FILE``."""
import os

import numpy as np
import pytest

import minconv as mc
from minconv.cli import main
from minconv.nn import arith

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("safetensors")


@pytest.fixture
def image_folder(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        os.makedirs(tmp_path / "images" / name)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (40, 46, 3), dtype=np.uint8)).save(
                tmp_path / "images" / name / f"{i}.png")
    return str(tmp_path / "images")


def small_imagenet_style_graph():
    """conv-relu-pool, a residual conv, global pooling, a classifier and a final Softmax,
    as exported nets end."""
    nn = mc.nn
    g = nn.Graph()
    g.add("conv1", nn.Conv2D(3, 8, 3, padding=1))
    g.add("relu1", nn.ReLU())
    g.add("pool1", nn.MaxPool2D(2))
    g.add("conv2", nn.Conv2D(8, 8, 3, padding=1))
    g.add("relu2", nn.ReLU())
    g.add("add", nn.Add(), inputs=["relu2", "pool1"])
    g.add("gap", nn.AdaptiveAvgPool2D(1))
    g.add("flatten", nn.Flatten())
    g.add("fc", nn.Linear(8, 5))
    g.add("prob", arith.Softmax(1))
    return g


def test_convert_npz_onnx_safetensors(tmp_path, capsys, rng):
    from minconv.train import save_checkpoint
    net = mc.models.zfnet_mini(num_classes=10)
    npz, onnx_path = tmp_path / "run.npz", tmp_path / "net.onnx"
    save_checkpoint(npz, net)
    assert main(["convert", str(npz), str(onnx_path)]) == 0
    x = rng.standard_normal((3, 1, 28, 28)).astype(np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x})[0], net.forward(x), rtol=1e-4,
                               atol=1e-5)
    weights = tmp_path / "net.safetensors"
    assert main(["convert", str(npz), str(weights)]) == 0
    back = tmp_path / "back.npz"
    assert main(["convert", str(weights), str(back), "--model", "zfnet_mini"]) == 0
    again = mc.train.load_checkpoint(back).net
    np.testing.assert_allclose(again.forward(x), net.forward(x), rtol=1e-6)
    assert main(["convert", str(onnx_path), str(tmp_path / "graph.npz")]) == 1
    assert "no minconv model config" in capsys.readouterr().err
    assert main(["convert", str(weights), str(tmp_path / "x.onnx")]) == 1
    assert "--model" in capsys.readouterr().err


def test_visualize_an_onnx_model(tmp_path, image_folder, capsys):
    path = tmp_path / "net.onnx"
    mc.io.save_onnx(small_imagenet_style_graph(), path, (1, 3, 32, 32))
    out = tmp_path / "report"
    status = main(["visualize", "--checkpoint", str(path), "--data", image_folder,
                   "--out", str(out), "--images", "1", "--steps", "1", "--maps", "4",
                   "--no-progress", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25"])
    assert status == 0, capsys.readouterr().err
    assert (out / "index.html").exists()
    assert any(name.startswith("top9") for name in os.listdir(out))


def test_project_with_model_and_weights(tmp_path, image_folder, capsys):
    net = mc.models.zfnet_mini(num_classes=10)
    weights = tmp_path / "mini.safetensors"
    mc.io.save_safetensors(net, weights)
    out = tmp_path / "projection.png"
    # zfnet_mini takes 1x28x28 greyscale: a colour folder is refused with the reason
    status = main(["project", "--model", "zfnet_mini", "--weights", str(weights), "--data",
                   image_folder, "--layer", "conv2", "--out", str(out)])
    assert status == 1 and "3 channels" in capsys.readouterr().err
    assert main(["project", "--weights", str(weights), "--data", image_folder,
                 "--layer", "conv2"]) == 1
    assert "--model" in capsys.readouterr().err


def test_project_resnet18_from_safetensors(tmp_path, image_folder, capsys):
    weights = tmp_path / "resnet18.safetensors"
    mc.io.save_safetensors(mc.models.resnet18(num_classes=7, rng=np.random.default_rng(3)),
                           weights)
    out = tmp_path / "projection.png"
    status = main(["project", "--model", "resnet18", "--weights", str(weights), "--data",
                   image_folder, "--limit", "2", "--index", "1", "--layer", "layer1.0.conv1",
                   "--out", str(out)])
    assert status == 0, capsys.readouterr().err
    assert out.exists()


def test_evaluate_an_onnx_model(tmp_path, capsys):
    from minconv import data
    from minconv.train import evaluate
    from minconv.vis.datasets import Standardize
    root = data.FASHION_MNIST
    if not data.is_idx_dir(root):
        pytest.skip("Fashion-MNIST is not installed")
    net = mc.models.zfnet_mini(num_classes=10)
    path = tmp_path / "mini.onnx"
    mc.io.save_onnx(net, path, (1, 1, 28, 28))
    assert main(["evaluate", "--checkpoint", str(path), "--data", root, "--limit", "64"]) == 0
    images, labels = data.load_idx(root, "test")
    x = Standardize(*data.FASHION_MNIST_STATS)(images[:64, None])
    expected = evaluate(net, [(x, labels[:64])])
    assert f"top-1 error {expected['top1_error']:.4f}" in capsys.readouterr().out


def test_evaluate_an_ensemble_of_onnx_models(tmp_path, image_folder, capsys):
    """Several .onnx files: each net and their mean softmax, on the same prepared images,
    equal to evaluate_ensemble on the nets themselves."""
    import json
    from minconv.io.sources import load_net_file
    from minconv.train.ensemble import evaluate_ensemble
    paths = []
    for seed in (0, 1):
        net = small_imagenet_style_graph()
        for p in net.params.values():
            p[...] = np.random.default_rng(seed).standard_normal(p.shape).astype(p.dtype)
        paths.append(str(tmp_path / f"net{seed}.onnx"))
        mc.io.save_onnx(net, paths[-1], (1, 3, 32, 32))
    args = ["evaluate", "--checkpoint", *paths, "--data", image_folder, "--mean",
            "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", "--json"]
    assert main(args) == 0, capsys.readouterr().err
    printed = json.loads(capsys.readouterr().out)
    assert [row["checkpoint"] for row in printed["single"]] == paths
    singles = []
    for path in paths:
        assert main(args[:2] + [path] + args[4:]) == 0
        singles.append(json.loads(capsys.readouterr().out))
    for row, single in zip(printed["single"], singles):
        assert row["top1_error"] == single["top1_error"]
        assert row["loss"] == pytest.approx(single["loss"], rel=1e-6)
    assert printed["single"][0]["loss"] != printed["single"][1]["loss"]
    from argparse import Namespace
    from minconv.io.sources import source_data
    first = load_net_file(paths[0])
    view = source_data(first, Namespace(data=image_folder, split="test", mean="0.5,0.5,0.5",
                                        std="0.25,0.25,0.25", resize=None))
    batches = [(view.preprocess(view.images[0:4]), np.asarray(view.images.folder.labels))]
    expected = evaluate_ensemble([first.net, load_net_file(paths[1]).net], batches)
    assert printed["ensemble"]["count"] == expected["ensemble"]["count"] == 4
    assert printed["ensemble"]["loss"] == pytest.approx(expected["ensemble"]["loss"], rel=1e-6)
    assert printed["ensemble"]["top1_error"] == expected["ensemble"]["top1_error"]
    # an .npz among .onnx models is refused, naming it
    assert main(["evaluate", "--checkpoint", paths[0], str(tmp_path / "run.npz"), "--data",
                 image_folder]) == 1
    assert "run.npz" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".onnx", ".safetensors", ".pth"])
def test_train_init_from_onnx_and_weights(suffix, tmp_path, capsys):
    """train --init-from takes an .onnx model or .safetensors/.pth weights (minconv's or
    torchvision's names) as it takes a .npz."""
    from _reliability_data import TINY, write_idx
    data_dir = write_idx(tmp_path / "idx")
    source = mc.models.zfnet_mini(num_classes=10, widths=(4, 6, 8, 8, 6), fc_width=16,
                                  rng=np.random.default_rng(7))  # TINY's widths
    path = tmp_path / f"source{suffix}"
    if suffix == ".onnx":
        mc.io.save_onnx(source, path, (1, 1, 28, 28))
    elif suffix == ".safetensors":
        mc.io.save_safetensors(source, path)
    else:
        torch = pytest.importorskip("torch")
        torch.save({k: torch.from_numpy(v) for k, v in
                    mc.io.to_torch_state_dict(source).items()}, path)
    status = main(["train", "--model", "zfnet-mini", "--data", data_dir, "--out",
                   str(tmp_path / "run"), "--batch-size", "32", "--no-progress",
                   "--val-subset", "32", "--epochs", "1", "--init-from", str(path)] + TINY)
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "initialised 14 tensors (conv1, conv2, conv3, conv4, conv5, fc6, fc7)" in out


def test_evaluate_with_model_and_weights(tmp_path, capsys):
    from minconv import data
    root = data.FASHION_MNIST
    if not data.is_idx_dir(root):
        pytest.skip("Fashion-MNIST is not installed")
    weights = tmp_path / "mini.safetensors"
    mc.io.save_safetensors(mc.models.zfnet_mini(num_classes=10), weights)
    onnx_path = tmp_path / "mini.onnx"
    assert main(["convert", str(weights), str(onnx_path), "--model", "zfnet_mini"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", "zfnet_mini", "--weights", str(weights), "--data", root,
                 "--limit", "50"]) == 0
    from_weights = capsys.readouterr().out.splitlines()[-1]
    assert main(["evaluate", "--checkpoint", str(onnx_path), "--data", root, "--limit",
                 "50"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == from_weights  # the same net, twice
    assert main(["evaluate", "--data", root]) == 1
    assert "name the net" in capsys.readouterr().err


def test_occlude_a_net_that_ends_in_global_pooling(tmp_path, image_folder, capsys):
    """SqueezeNet-style scores (N, K, 1, 1) then Softmax: the command flattens them."""
    from minconv.nn import arith, window_pool
    nn = mc.nn
    g = nn.Graph()
    g.add("conv1", nn.Conv2D(3, 6, 3, padding=1))
    g.add("relu1", nn.ReLU())
    g.add("classes", nn.Conv2D(6, 5, 1))
    g.add("gap", window_pool.GlobalAvgPool())
    g.add("prob", arith.Softmax(1))
    path = tmp_path / "squeeze_like.onnx"
    mc.io.save_onnx(g, path, (1, 3, 32, 32))
    out = tmp_path / "occlusion.png"
    status = main(["occlude", "--checkpoint", str(path), "--data", image_folder, "--index", "0",
                   "--size", "8", "--stride", "8", "--out", str(out)])
    assert status == 0, capsys.readouterr().err
    assert out.exists()


def test_experiments_take_an_onnx_zfnet_mini(tmp_path, rng):
    """The paper's experiments (correspondence, probes) read --checkpoint through the same
    loader: an exported zfnet_mini comes back with its layer names and outputs."""
    import argparse
    from minconv.experiments import correspondence
    net = mc.models.zfnet_mini(num_classes=10)
    path = tmp_path / "mini.onnx"
    mc.io.save_onnx(net, path, (1, 1, 28, 28))
    loaded, source = correspondence._net(argparse.Namespace(checkpoint=str(path)), {})
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(loaded.forward(x, until="conv5"), net.forward(x, until="conv5"),
                               rtol=1e-5, atol=1e-6)
    assert "mini.onnx" in source
