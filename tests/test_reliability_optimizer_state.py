"""A strict optimiser state: resuming needs every momentum buffer, of the right shape and
dtype; --init-from reports which tensors it copied and refuses when none fit; --resume
with a different --epochs extends the schedule explicitly or refuses."""
import io
import zipfile

import numpy as np
import pytest

import minconv as mc
from minconv import cli, data, models, train

from _reliability_data import TINY, write_idx


def trained(path):
    mc.nn.set_seed(0)
    net = models.lenet5()
    opt = train.SGD(net, lr=0.1, momentum=0.9)
    for layer in net.layers:
        layer.grads = {k: np.ones_like(v) for k, v in layer.params.items()}
    opt.step()
    train.save_checkpoint(path, net, opt, epoch=1)
    return net


def drop_entry(path, name):
    with zipfile.ZipFile(path) as z:
        kept = {i.filename: z.read(i) for i in z.infolist() if i.filename != name}
    with zipfile.ZipFile(path, "w") as z:
        for key, raw in kept.items():
            z.writestr(key, raw)


def replace_entry(path, name, array):
    with zipfile.ZipFile(path) as z:
        kept = {i.filename: z.read(i) for i in z.infolist()}
    buf = io.BytesIO()
    np.save(buf, array)
    kept[name] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as z:
        for key, raw in kept.items():
            z.writestr(key, raw)


def restore_into_fresh(path):
    net = models.lenet5()
    opt = train.SGD(net, lr=0.1, momentum=0.9)
    train.load_checkpoint(path, net=net).restore(opt)
    return opt


def test_complete_state_restores(tmp_path):
    trained(tmp_path / "c.npz")
    assert len(restore_into_fresh(tmp_path / "c.npz").velocity) == 10


def test_a_missing_momentum_buffer_is_refused(tmp_path):
    trained(tmp_path / "c.npz")
    drop_entry(tmp_path / "c.npz", "velocity/fc5.W.npy")
    with pytest.raises(ValueError, match=r"c\.npz: optimiser state incomplete: momentum "
                                         r"buffers missing \['fc5\.W'\]"):
        restore_into_fresh(tmp_path / "c.npz")


def test_a_momentum_buffer_of_another_dtype_is_refused(tmp_path):
    trained(tmp_path / "c.npz")
    replace_entry(tmp_path / "c.npz", "velocity/fc5.b.npy", np.zeros(10, np.float64))
    with pytest.raises(ValueError, match=r"momentum buffer fc5\.b is float64 \(10,\), the "
                                         r"parameter float32 \(10,\)"):
        restore_into_fresh(tmp_path / "c.npz")


def run(argv, capsys):
    status = cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def base(data_dir, out, *extra):
    return ["train", "--model", "zfnet-mini", "--data", data_dir, "--out", str(out),
            "--batch-size", "32", "--no-progress", "--val-subset", "32"] + TINY + list(extra)


def test_init_from_reports_what_it_copied_and_refuses_when_nothing_fits(tmp_path, capsys):
    data_dir = write_idx(tmp_path / "idx")
    assert run(base(data_dir, tmp_path / "a", "--epochs", "1"), capsys)[0] == 0
    status, out, err = run(base(data_dir, tmp_path / "b", "--epochs", "1", "--init-from",
                                str(tmp_path / "a" / "last.npz")), capsys)
    assert status == 0, err
    assert "initialised 14 tensors (conv1, conv2, conv3, conv4, conv5, fc6, fc7)" in out
    assert "fc8 drawn anew" in out
    other = tmp_path / "lenet.npz"
    train.save_checkpoint(other, models.lenet5())
    status, out, err = run(base(data_dir, tmp_path / "c", "--epochs", "1", "--init-from",
                                str(other)), capsys)
    assert status == 1 and "none of its parameters fit zfnet_mini" in err
    assert "epoch 1" not in out


def test_resume_with_more_epochs_extends_and_with_fewer_refuses(tmp_path, capsys):
    data_dir = write_idx(tmp_path / "idx")
    run_dir = tmp_path / "r"
    cosine = ["--schedule", "cosine", "--warmup", "0"]
    assert run(base(data_dir, run_dir, "--epochs", "2", *cosine), capsys)[0] == 0
    status, out, err = run(base(data_dir, run_dir, "--epochs", "2", "--resume", *cosine),
                           capsys)
    assert status == 1 and "already trained 2 epochs; --epochs 2 leaves nothing" in err
    status, out, err = run(base(data_dir, run_dir, "--epochs", "3", "--resume", *cosine),
                           capsys)
    assert status == 0, err
    assert "extending the schedule (cosine) from 2 to 3 epochs" in out and "epoch 3 |" in out
    checkpoint = train.load_checkpoint(run_dir / "last.npz")
    assert checkpoint.meta["schedule"]["epochs"] == 3.0
    assert checkpoint.extra["settings"]["epochs"] == 3
    # without --epochs, a resumed run keeps its own plan, not the recipe's 27 epochs
    status, out, err = run(base(data_dir, run_dir, "--resume", *cosine), capsys)
    assert status == 1 and "already trained 3 epochs; --epochs 3" in err


def test_a_frozen_layer_needs_no_buffer_and_a_nested_net_resumes(tmp_path):
    mc.nn.set_seed(0)
    inner = mc.nn.Sequential([("conv", mc.nn.Conv2D(1, 2, 3)), ("relu", mc.nn.ReLU())])
    net = mc.nn.Sequential([("block", inner), ("flatten", mc.nn.Flatten()),
                            ("fc", mc.nn.Linear(2 * 26 * 26, 3))])
    opt = train.SGD(net, lr=0.1, momentum=0.9, frozen=["block"])
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    net.forward(x, train=True)
    net.backward(np.ones((2, 3), np.float32))
    opt.step()
    assert sorted(opt.velocity) == ["fc.W", "fc.b"]
    train.save_checkpoint(tmp_path / "c.npz", net, opt, epoch=1)
    fresh = train.SGD(net, lr=0.1, momentum=0.9)
    train.load_checkpoint(tmp_path / "c.npz", net=net).restore(fresh)
    assert fresh.frozen == ["block"] and sorted(fresh.velocity) == ["fc.W", "fc.b"]
