"""Training: SGD against PyTorch, renormalisation, schedules, steps that learn,
checkpoints that resume bit for bit, atomic writes, divergence and bad data."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import minconv as mc
from minconv import data, models, train
from minconv.data import DataError
from minconv.train import SGD, Trainer, TrainingDiverged

FASHION = data.FASHION_MNIST
has_fashion = pytest.mark.skipif(not data.is_idx_dir(FASHION), reason="no Fashion-MNIST here")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_net(seed=0, classes=10):
    return models.zfnet_mini(num_classes=classes, widths=(4, 6, 8, 8, 6), fc_width=16,
                             rng=np.random.default_rng(seed))


def synthetic(n=96, seed=0, classes=10):
    """Images whose class is a bright square at a class-dependent place: learnable."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for image, label in zip(images, labels):
        r, c = 2 + 8 * (label // 4), 2 + 6 * (label % 4)
        image[r:r + 6, c:c + 6] = 250
    return images, labels


def make_trainer(seed=0, out_dir=None, schedule="cosine", epochs=3, lr=0.05, **kwargs):
    mc.nn.set_seed(seed)
    net = tiny_net(seed)
    images, labels = synthetic()
    loader = data.ArrayLoader(images, labels, 32, shuffle=True, augment=True, seed=seed)
    val = data.ArrayLoader(*synthetic(64, seed=9), 64)
    opt = SGD(net, lr=lr, momentum=0.9, weight_decay=5e-4, **kwargs)
    sched = train.make_schedule(schedule, lr, epochs=epochs, warmup=0.5, patience=1)
    return Trainer(net, opt, loader, val, sched, out_dir=out_dir, progress=False,
                   verbose=False)


# ------------------------------------------------------------------ the optimiser

def test_sgd_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    net = mc.nn.Sequential([("conv1", mc.nn.Conv2D(2, 3, 3)), ("flatten", mc.nn.Flatten()),
                            ("fc2", mc.nn.Linear(12, 4))])
    tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in net.params.items()}
    groups = [{"params": [tparams["conv1.W"], tparams["conv1.b"]], "lr": 0.1 * 3.0},
              {"params": [tparams["fc2.W"], tparams["fc2.b"]], "lr": 0.1}]
    topt = torch.optim.SGD(groups, lr=0.1, momentum=0.9, weight_decay=0.01)
    opt = SGD(net, lr=0.1, momentum=0.9, weight_decay=0.01, lr_mult={"conv1": 3.0})
    for _ in range(4):
        grads = {k: rng.standard_normal(v.shape).astype(np.float32)
                 for k, v in net.params.items()}
        for key, g in grads.items():
            layer, name = key.split(".")
            net[layer].grads[name] = g
            tparams[key].grad = torch.tensor(g)
        opt.step()
        topt.step()
    for key, value in net.params.items():
        np.testing.assert_allclose(value, tparams[key].detach().numpy(), rtol=1e-5, atol=1e-6)


def test_sgd_update_is_chunked_in_place(monkeypatch):
    monkeypatch.setattr(train.optim, "CHUNK", 7)  # many chunks, one ragged
    net = mc.nn.Sequential([("fc1", mc.nn.Linear(5, 9))])
    w0 = net["fc1"].params["W"]
    before = w0.copy()
    g = np.random.default_rng(1).standard_normal((9, 5)).astype(np.float32)
    net["fc1"].grads.update(W=g, b=np.ones(9, np.float32))
    SGD(net, lr=0.5, momentum=0.0, weight_decay=0.1).step()
    assert net["fc1"].params["W"] is w0  # updated in place
    np.testing.assert_allclose(w0, before - 0.5 * (g + 0.1 * before), rtol=1e-6)


def test_frozen_layers_and_lr_multipliers():
    net = tiny_net()
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    trainer = Trainer(net, SGD(net, lr=0.1, frozen=["conv1", "conv2"], lr_mult={"fc6": 0.0}),
                      [(x, np.arange(4))], progress=False, verbose=False)
    before = {k: v.copy() for k, v in net.params.items()}
    trainer.train_step(x, np.arange(4))
    for key, value in net.params.items():
        changed = not np.array_equal(value, before[key])
        assert changed == (key.split(".")[0] not in ("conv1", "conv2", "fc6")), key
    assert trainer.optimizer.lowest_trainable_layer() == net.index("conv3")
    with pytest.raises(ValueError, match="unknown layer 'conv9'"):
        SGD(net, frozen=["conv9"])


def test_renormalisation_rescales_exactly_the_filters_over_the_radius():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((6, 3, 5, 5)).astype(np.float32)
    W[[0, 2, 5]] *= 0.05  # RMS about 0.05: under the radius
    W[[1, 3, 4]] *= 0.5   # RMS about 0.5: over
    before = W.copy()
    assert train.renormalize_filters(W, 0.1) == 3
    rms = np.sqrt((W.reshape(6, -1) ** 2).mean(axis=1))
    np.testing.assert_allclose(rms[[1, 3, 4]], 0.1, rtol=1e-5)
    np.testing.assert_array_equal(W[[0, 2, 5]], before[[0, 2, 5]])
    for f in (1, 3, 4):  # direction kept
        np.testing.assert_allclose(W[f] / np.linalg.norm(W[f]),
                                   before[f] / np.linalg.norm(before[f]), rtol=1e-5, atol=1e-7)


def test_step_renormalises_conv_filters_only():
    net = tiny_net()
    for name in ("conv2", "conv4", "conv5"):
        net[name].params["W"] *= 0.1  # well under the radius
    for layer in (net["conv1"], net["conv3"], net["fc6"]):
        layer.params["W"] *= 50.0
    opt = SGD(net, lr=0.0, renorm_radius=0.1, frozen=["conv3"])
    for name, layer in net.items():
        for key, value in layer.params.items():
            layer.grads[key] = np.zeros_like(value)
    opt.step()
    rms = lambda W: np.sqrt((W.reshape(len(W), -1) ** 2).mean(axis=1))  # noqa: E731
    assert rms(net["conv1"].params["W"]).max() <= 0.1 + 1e-6
    assert rms(net["conv3"].params["W"]).min() > 0.1   # frozen: left alone
    assert rms(net["fc6"].params["W"]).min() > 0.1     # not a convolution
    assert opt.renormalized == net["conv1"].out_channels


# ------------------------------------------------------------------ schedules

def test_plateau_divides_at_the_right_epoch():
    s = train.Plateau(0.01, patience=2)
    errors = [0.5, 0.4, 0.41, 0.40, 0.39, 0.39, 0.39, 0.39, 0.39]
    rates = []
    for epoch, error in enumerate(errors):
        rates.append(s.lr(epoch))
        s.end_epoch(epoch, error)
    # no improvement after epochs 2 and 3 -> divided from epoch 4; again after 5, 6 -> from 7
    assert rates == pytest.approx([0.01] * 4 + [0.001] * 3 + [0.0001] * 2)


def test_step_cosine_and_warmup():
    s = train.Step(1.0, milestones=(2, 4), gamma=0.1)
    assert [s.lr(e) for e in (0, 1.9, 2, 3.5, 4, 9)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])
    c = train.Cosine(1.0, epochs=5, warmup=1.0)
    assert c.lr(0) == pytest.approx(0.1) and c.lr(0.5) == pytest.approx(0.55)
    assert c.lr(1) == pytest.approx(1.0) and c.lr(3) == pytest.approx(0.5)
    assert c.lr(5) == pytest.approx(0.0, abs=1e-12)
    restored = train.schedule_from_state(c.state_dict())
    assert restored.lr(2.2) == c.lr(2.2)


def test_trainer_lowers_the_rate_on_a_plateau():
    mc.nn.set_seed(0)
    net = tiny_net()
    images, labels = synthetic(64)
    loader = data.ArrayLoader(images, labels, 32)
    everything = [name for name, layer in net.items() if layer.params]
    opt = SGD(net, lr=0.1, frozen=everything)  # nothing moves: the error stays flat
    trainer = Trainer(net, opt, loader, data.ArrayLoader(images, labels, 64),
                      train.Plateau(0.1, patience=2), progress=False, verbose=False)
    history = trainer.fit(5)
    assert [r["lr"] for r in history] == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.01])
    assert [r["lr_lowered"] for r in history] == [False, False, True, False, True]


# ------------------------------------------------------------------ learning

def test_one_step_lowers_the_loss():
    mc.nn.set_seed(0)
    net = models.lenet5(rng=np.random.default_rng(0))
    x, y = next(iter(data.ArrayLoader(*synthetic(64), 64)))
    trainer = Trainer(net, SGD(net, lr=0.05, momentum=0.0), [], progress=False, verbose=False)
    loss = mc.nn.SoftmaxCrossEntropy()
    before = loss.forward(net.forward(x), y)
    first, _ = trainer.train_step(x, y)
    after = loss.forward(net.forward(x), y)
    assert first == pytest.approx(before, rel=1e-5)
    assert after < before - 1e-3


def test_first_conv_skips_only_the_input_gradient():
    net = tiny_net()
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    dz = np.random.default_rng(1).standard_normal((3, 10)).astype(np.float32)
    net.forward(x, train=False)
    assert net.backward(dz) is not None
    full = {k: v.copy() for k, v in net.grads.items()}
    net.grads = {}
    net.forward(x, train=False)
    assert net.backward(dz, stop=net.names[0], release=True) is None  # no input gradient
    for key, value in full.items():
        np.testing.assert_allclose(net.grads[key], value, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="before forward"):  # release freed every cache
        net[net.names[-1]].backward(dz)


@has_fashion
def test_a_few_hundred_steps_on_real_data_beat_chance():
    # one thread in a child process: tiny matrices gain nothing from threads, and a busy
    # machine makes threaded BLAS stall
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {ROOT!r})
        import numpy as np
        import minconv as mc
        from minconv import data, models, train
        mc.nn.set_seed(0)
        images, labels = data.load_idx({FASHION!r}, "train")
        test_images, test_labels = data.load_idx({FASHION!r}, "test")
        net = models.lenet5(rng=np.random.default_rng(0))
        loader = data.ArrayLoader(images[:3000], labels[:3000], 32, shuffle=True, seed=0)
        trainer = train.Trainer(net, train.SGD(net, lr=0.05, momentum=0.9), loader,
                                schedule=train.Cosine(0.05, 3, warmup=0.3), progress=False,
                                verbose=False)
        trainer.fit(3)  # 282 steps
        result = train.evaluate(net, data.ArrayLoader(test_images[:1000], test_labels[:1000],
                                                      500))
        print(result["top1_error"], result["top5_error"])
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    top1, top5 = map(float, out.stdout.split())
    assert top1 < 0.35 and top5 < 0.05, (top1, top5)  # chance: 0.9 and 0.5


def test_evaluate_averages_softmax_over_views():
    net = tiny_net()
    x = np.random.default_rng(0).standard_normal((5, 1, 28, 28)).astype(np.float32)
    views = np.stack([x, x[..., ::-1]], axis=1)
    p = train.predict_proba(net, views)
    expected = (mc.functional.softmax(net.forward(x)) +
                mc.functional.softmax(net.forward(np.ascontiguousarray(x[..., ::-1])))) / 2
    np.testing.assert_allclose(p, expected, rtol=1e-5)
    y = np.array([0, 1, 2, 3, 4])
    result = train.evaluate(net, [(views, y)])
    assert result["count"] == 5
    assert result["loss"] == pytest.approx(float(-np.log(expected[np.arange(5), y]).mean()),
                                           rel=1e-5)
    assert result["top1_error"] == pytest.approx(1 - train.topk_correct(expected, y, 1) / 5)


# ------------------------------------------------------------------ checkpoints

def test_checkpoint_round_trip(tmp_path):
    trainer = make_trainer()
    trainer.fit(1)
    path = trainer.save(tmp_path / "c.npz")
    loaded = train.load_checkpoint(path)
    assert loaded.net.config == trainer.net.config and loaded.epoch == 1
    for key, value in trainer.net.params.items():
        np.testing.assert_array_equal(loaded.net.params[key], value)
    for key, value in trainer.optimizer.velocity.items():
        np.testing.assert_array_equal(loaded.velocity[key], value)
    assert loaded.meta["rng"]["layers"]["drop6"] == trainer.net["drop6"].rng.bit_generator.state
    assert loaded.meta["rng"]["extra"]["data"] == trainer.train_loader.rng.bit_generator.state
    assert loaded.history == trainer.history
    with np.load(path, allow_pickle=False) as archive:  # no pickled objects inside
        assert all(archive[k].dtype != object for k in archive.files)


def test_resume_is_bit_identical(tmp_path):
    straight = make_trainer(seed=3)
    straight.fit(3)
    first = make_trainer(seed=3, out_dir=str(tmp_path))
    first.fit(2)
    resumed = make_trainer(seed=99)  # other weights, generators, everything
    resumed.resume(tmp_path / "last.npz")
    assert resumed.epoch == 2
    resumed.fit(3)
    for key, value in straight.net.params.items():
        np.testing.assert_array_equal(resumed.net.params[key], value, err_msg=key)
    assert [r["train_loss"] for r in resumed.history] == \
        [r["train_loss"] for r in straight.history]


def test_trainer_writes_logs_plot_and_best(tmp_path):
    trainer = make_trainer(out_dir=str(tmp_path), epochs=2)
    trainer.fit(2)
    for name in ("last.npz", "best.npz", "log.csv", "log.json", "curves.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert len(rows) == 3 and "val_top1_error" in rows[0]
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_failed_write_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    trainer = make_trainer()
    path = tmp_path / "last.npz"
    trainer.save(path)
    good = path.read_bytes()

    def dies_half_way(f, **entries):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", dies_half_way)
    trainer.fit(1)
    with pytest.raises(OSError, match="disk full"):
        trainer.save(path)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["last.npz"]  # the temporary file is gone too


def test_killed_mid_write_never_replaces_the_checkpoint(tmp_path):
    script = textwrap.dedent(f"""
        import sys, numpy as np
        sys.path.insert(0, {ROOT!r})
        import minconv as mc
        from minconv.train import save_checkpoint
        net = mc.nn.Sequential([("fc1", mc.nn.Linear(3000, 4000))])
        save_checkpoint(sys.argv[1], net)
        print("ready", flush=True)
        while True:
            net["fc1"].params["W"] += 1.0
            save_checkpoint(sys.argv[1], net)
    """)
    path = tmp_path / "big.npz"
    child = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.3)  # somewhere inside a 48 MB write
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    loaded = train.load_checkpoint(path, net=mc.nn.Sequential([("fc1", mc.nn.Linear(3000, 4000))]))
    W = loaded.net["fc1"].params["W"]
    assert np.all(np.isfinite(W)) and W.shape == (4000, 3000)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "no-meta", "wrong-shapes"])
def test_corrupt_checkpoints_are_named(tmp_path, damage):
    trainer = make_trainer()
    path = tmp_path / "c.npz"
    trainer.save(path)
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[:len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(2000))
    elif damage == "no-meta":
        np.savez(path, **{"param/conv1.W": np.zeros(3)})
    else:
        other = models.lenet5()
        train.save_checkpoint(path, other)
        with pytest.raises(ValueError, match=r"c\.npz.*do not fit"):
            train.load_checkpoint(path, net=tiny_net())
        return
    with pytest.raises(ValueError, match=r"c\.npz"):
        train.load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        train.load_checkpoint(tmp_path / "nothere.npz")


# ------------------------------------------------------------------ failures

class Poisoned:
    """A loader whose epoch ``epoch`` yields a NaN image at step ``step`` (1-based)."""

    def __init__(self, inner, epoch, step, error=None):
        self.inner, self.epoch, self.step, self.error, self.count = inner, epoch, step, error, 0
        self.rng = inner.rng

    def __len__(self):
        return len(self.inner)

    def __iter__(self):
        self.count += 1
        for i, (x, y) in enumerate(self.inner):
            if self.count == self.epoch and i + 1 == self.step:
                if self.error:
                    raise self.error
                x = x.copy()
                x[0, 0, 0, 0] = np.nan
            yield x, y


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_nan_loss_stops_cleanly(tmp_path):
    trainer = make_trainer(out_dir=str(tmp_path))
    trainer.train_loader = Poisoned(trainer.train_loader, epoch=2, step=2)
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 2/3: loss is nan.*last good "
                                               r"state is in .*last\.npz \(epoch 1\)"):
        trainer.fit(3)
    assert train.load_checkpoint(tmp_path / "last.npz").epoch == 1
    assert len(trainer.history) == 1
    assert all(np.isfinite(v).all() for v in trainer.net.params.values())


def test_bad_data_mid_epoch_names_epoch_and_file():
    trainer = make_trainer()
    bad = DataError("/data/cat/7.jpg: cannot decode image (truncated)")
    trainer.train_loader = Poisoned(trainer.train_loader, epoch=1, step=2, error=bad)
    with pytest.raises(DataError, match=r"epoch 1: /data/cat/7\.jpg: cannot decode"):
        trainer.fit(1)
