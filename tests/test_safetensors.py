"""Weights in and out: safetensors (torchvision's names for its families, minconv's
otherwise) and PyTorch .pth state dicts read with weights_only; every mismatch a clear
error that leaves the net as it was."""
import pickle

import numpy as np
import pytest

import minconv as mc

st = pytest.importorskip("safetensors.numpy")
torch = pytest.importorskip("torch")


def torchvision_resnet18():
    import torchvision
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    for module in model.modules():  # non-trivial statistics, so BatchNorm is really tested
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def test_torch_safetensors_into_minconv_equals_torch(tmp_path, rng):
    import safetensors.torch
    model = torchvision_resnet18()
    path = tmp_path / "resnet18.safetensors"
    safetensors.torch.save_file(model.state_dict(), str(path))
    net = mc.io.load_safetensors(mc.models.resnet18(num_classes=10), path)
    x = rng.standard_normal((2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(net.forward(x), expected, rtol=1e-4, atol=1e-4)


def test_minconv_safetensors_into_torchvision(tmp_path, rng):
    import safetensors.torch
    net = mc.models.resnet18(num_classes=10)
    source = torchvision_resnet18()
    mc.io.from_torch_state_dict(net, source.state_dict())
    path = tmp_path / "net.safetensors"
    names = mc.io.save_safetensors(net, path)
    assert "layer1.0.conv1.weight" in names and "bn1.running_var" in names
    import torchvision
    model = torchvision.models.resnet18(num_classes=10).eval()
    model.load_state_dict(safetensors.torch.load_file(str(path)))
    x = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(net.forward(x), expected, rtol=1e-4, atol=1e-4)


def test_minconv_names_round_trip(tmp_path, rng):
    net = mc.models.zfnet_mini(num_classes=10)
    path = tmp_path / "mini.safetensors"
    names = mc.io.save_safetensors(net, path)
    assert "conv1.W" in names
    other = mc.models.zfnet_mini(num_classes=10, rng=np.random.default_rng(5))  # other weights
    assert not np.array_equal(other.params["conv1.W"], net.params["conv1.W"])
    mc.io.load_safetensors(other, path)
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(other.forward(x), net.forward(x))


def test_pth_through_weights_only(tmp_path, rng):
    model = torchvision_resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, path)
    net = mc.io.load_torch_weights(mc.models.resnet18(num_classes=10), path)
    x = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(net.forward(x), expected, rtol=1e-4, atol=1e-4)


class Payload:
    """An arbitrary object: weights_only refuses to unpickle it."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_pth_with_objects_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"conv1.weight": Payload()}, handle)
    with pytest.raises(ValueError, match="evil.pth.*weights_only"):
        mc.io.read_torch_state_dict(path)
    assert "must never run" not in capsys.readouterr().out


def _snapshot(net):
    return {k: v.copy() for k, v in net.state_dict().items()}


def test_names_or_shapes_that_do_not_fit(tmp_path):
    net = mc.models.zfnet_mini(num_classes=10)
    before = _snapshot(net)
    state = {k: np.asarray(v) for k, v in net.state_dict().items()}
    wrong_shape = dict(state, **{"fc8.W": np.zeros((7, 512), np.float32)})
    path = tmp_path / "shape.safetensors"
    st.save_file(wrong_shape, str(path))
    with pytest.raises(ValueError, match=r"shape.safetensors.*fc8.W \(7, 512\)"):
        mc.io.load_safetensors(net, path)
    renamed = {("conv9.W" if k == "conv1.W" else k): v for k, v in state.items()}
    path = tmp_path / "names.safetensors"
    st.save_file(renamed, str(path))
    with pytest.raises(ValueError, match=r"names.safetensors.*conv1.W|conv9"):
        mc.io.load_safetensors(net, path)
    for key, value in _snapshot(net).items():  # nothing was half-loaded
        np.testing.assert_array_equal(value, before[key])


def test_torchvision_weights_of_another_architecture(tmp_path):
    import safetensors.torch
    import torchvision
    path = tmp_path / "vgg.safetensors"
    safetensors.torch.save_file(torchvision.models.vgg11(num_classes=10).state_dict(), str(path))
    net = mc.models.resnet18(num_classes=10)
    before = _snapshot(net)
    with pytest.raises(ValueError, match="vgg.safetensors"):
        mc.io.load_safetensors(net, path)
    for key, value in _snapshot(net).items():
        np.testing.assert_array_equal(value, before[key])


def test_corrupt_safetensors(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\xff" * 40)
    with pytest.raises(ValueError, match="bad.safetensors"):
        mc.io.load_safetensors(mc.models.zfnet_mini(num_classes=10), path)
    with pytest.raises(FileNotFoundError):
        mc.io.load_safetensors(mc.models.zfnet_mini(num_classes=10), tmp_path / "none")


def test_pth_without_torch_says_what_to_install(tmp_path):
    import subprocess
    import sys
    path = tmp_path / "w.pth"
    torch.save({"conv1.weight": torch.zeros(2, 1, 3, 3)}, path)
    code = ("import sys\nsys.modules['torch'] = None\nimport minconv as mc\n"
            f"try:\n    mc.io.read_torch_state_dict({str(path)!r})\n"
            "except ImportError as error:\n    print(error)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "needs PyTorch" in result.stdout and "w.pth" in result.stdout, result.stderr
