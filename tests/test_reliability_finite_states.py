"""Only finite states are saved: parameters and validation metrics are checked finite
before a checkpoint is written; divergence at any step (the last of an epoch included)
stops cleanly, and the message names the file that really holds the last good state."""
import os
import re

import numpy as np
import pytest

import minconv as mc
from minconv import cli, data, models, train
from minconv.train import SGD, Trainer, TrainingDiverged
from minconv.train import trainer as trainer_module

from _reliability_data import write_idx


def tiny_trainer(out_dir, epochs=3):
    mc.nn.set_seed(0)
    net = models.zfnet_mini(num_classes=4, widths=(4, 6, 8, 8, 6), fc_width=16,
                            rng=np.random.default_rng(0))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 28, 28)).astype(np.uint8)
    labels = np.arange(64) % 4
    loader = data.ArrayLoader(images, labels, 32, shuffle=True, seed=0)
    val = data.ArrayLoader(images[:32], labels[:32], 32)
    opt = SGD(net, lr=0.01, momentum=0.9)
    return Trainer(net, opt, loader, val, train.make_schedule("constant", 0.01),
                   out_dir=str(out_dir), progress=False, verbose=False)


def all_finite(path):
    checkpoint = train.load_checkpoint(path)  # refuses non-finite entries itself
    return all(np.isfinite(v).all() for v in checkpoint.net.params.values())


def test_save_checkpoint_refuses_non_finite_state(tmp_path):
    net = models.lenet5()
    net["fc3"].params["W"][0, 0] = np.inf
    with pytest.raises(ValueError, match=r"not saved: param/fc3\.W.*NaN or infinity"):
        train.save_checkpoint(tmp_path / "c.npz", net)
    with pytest.raises(ValueError, match="best_val_error is nan"):
        train.save_checkpoint(tmp_path / "c.npz", models.lenet5(), best_val_error=float("nan"))
    assert not os.listdir(tmp_path)


def test_divergence_at_the_last_step_of_an_epoch_keeps_the_last_good_state(tmp_path,
                                                                          monkeypatch):
    trainer = tiny_trainer(tmp_path)
    step = trainer.optimizer.step
    calls = []

    def step_that_blows_up_on_the_last_step_of_epoch_2():
        step()
        calls.append(1)
        if len(calls) == 4:  # 2 steps per epoch: the last step of epoch 2
            trainer.net["fc8"].params["W"][...] = 1.7e38
            trainer.net["fc8"].params["W"][0, 0] = np.nan
    monkeypatch.setattr(trainer.optimizer, "step", step_that_blows_up_on_the_last_step_of_epoch_2)
    last = os.path.join(tmp_path, "last.npz")
    with pytest.raises(TrainingDiverged, match=rf"epoch 2: parameter fc8\.W is no longer "
                                               rf"finite.*last good state is in "
                                               rf"{re.escape(last)} \(epoch 1\)"):
        trainer.fit(3)
    assert train.load_checkpoint(last).epoch == 1 and all_finite(last)
    assert all_finite(os.path.join(tmp_path, "best.npz"))


def test_non_finite_validation_metrics_stop_before_writing(tmp_path, monkeypatch):
    trainer = tiny_trainer(tmp_path)
    real = trainer_module.evaluate
    calls = []

    def evaluate(*args, **kwargs):
        calls.append(1)
        result = real(*args, **kwargs)
        return dict(result, loss=float("nan")) if len(calls) == 2 else result
    monkeypatch.setattr(trainer_module, "evaluate", evaluate)
    with pytest.raises(TrainingDiverged, match=r"epoch 2: validation loss is nan.*epoch 1"):
        trainer.fit(3)
    assert train.load_checkpoint(tmp_path / "last.npz").epoch == 1
    assert [r["epoch"] for r in trainer.history] == [1]


def test_divergence_before_any_checkpoint_says_there_is_none(tmp_path, monkeypatch):
    old = tmp_path / "last.npz"  # a file of another run must not be named as ours
    train.save_checkpoint(old, models.lenet5())
    trainer = tiny_trainer(tmp_path)
    real = trainer.train_step

    def nan_step(x, y, lr=None):
        raise TrainingDiverged("loss is nan")
    monkeypatch.setattr(trainer, "train_step", nan_step)
    with pytest.raises(TrainingDiverged, match="no checkpoint of this run was written"):
        trainer.fit(1)
    assert real


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow that diverges
def test_issue_reproducer_diverging_run_leaves_only_finite_checkpoints(tmp_path, capsys):
    data_dir = write_idx(tmp_path / "idx")
    out = tmp_path / "run"
    status = cli.main(["train", "--model", "zfnet-mini", "--data", data_dir, "--out", str(out),
                       "--subset", "64", "--val-subset", "64", "--batch-size", "64",
                       "--epochs", "4", "--lr", "0.01", "--schedule", "step", "--milestones",
                       "1", "--gamma", "1e5", "--warmup", "0", "--no-progress"])
    _, err = capsys.readouterr()
    assert status == 1 and "training diverged" in err and "Traceback" not in err, err
    named = re.search(r"last good state is in (\S+) \(epoch (\d+)\)", err)
    assert named, err
    assert train.load_checkpoint(named.group(1)).epoch == int(named.group(2))
    for name in ("last.npz", "best.npz"):
        if os.path.exists(out / name):
            assert all_finite(out / name)
