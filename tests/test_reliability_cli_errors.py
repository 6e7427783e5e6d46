"""One place where the command line turns errors into one-line messages with exit status 1
(130 for Ctrl-C): OSError, MemoryError, argument validation (positive counts and batch
sizes, hyper-parameters in range, JSON kwargs that are objects); no traceback for any user
error; --json output is strict JSON."""
import json
import os

import pytest

from minconv import backend, cli
from minconv.train import commands

from _reliability_data import TINY, write_idx


def run(argv, capsys):
    status = cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def one_line_error(status, err, *needles):
    assert status == 1, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


@pytest.fixture(scope="module")
def idx(tmp_path_factory):
    return write_idx(tmp_path_factory.mktemp("idx"))


@pytest.mark.parametrize("args, needle", [
    (["--batch-size", "0"], "--batch-size: must lie in [1, inf], got 0"),
    (["--val-split", "-1"], "--val-split: must lie in [0, inf], got -1"),
    (["--model-kwargs", "[1,2]"], "--model-kwargs: expected a JSON object"),
    (["--model-kwargs", "{bad"], "--model-kwargs: not valid JSON"),
    (["--model-kwargs", '{"dropout": NaN}'], "NaN is not a number JSON allows"),
    (["--lr", "-1"], "--lr: must lie in (0, inf], got -1"),
    (["--lr", "nan"], "--lr: expected a finite number, got 'nan'"),
    (["--lr", "inf"], "--lr: expected a finite number"),
    (["--momentum", "5"], "--momentum: must lie in [0, 1), got 5"),
    (["--subset", "-5"], "--subset: must lie in [1, inf], got -5"),
    (["--epochs", "0"], "--epochs: must lie in [1, inf]"),
    (["--weight-decay", "-0.1"], "--weight-decay: must lie in [0, inf]"),
    (["--gamma", "0"], "--gamma: must lie in (0, inf]"),
    (["--milestones", "3,-1"], "--milestones: every value must be >= 1"),
    (["--classes", "1,1"], "--classes: lists a class twice: 1,1"),
    (["--seed", "-3"], "--seed: must lie in [0, inf]"),
    (["--lr-mult", "fc8=-2"], "--lr-mult fc8=-2: the factor must be finite and >= 0"),
    (["--epochs", "x"], "--epochs: expected an integer, got 'x'"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
])
def test_train_arguments_out_of_range_are_one_line_errors(idx, tmp_path, capsys, args, needle):
    status, out, err = run(["train", "--model", "zfnet-mini", "--data", idx, "--out",
                            str(tmp_path / "r"), "--no-progress"] + TINY + args, capsys)
    one_line_error(status, err, needle)
    assert "epoch" not in out


@pytest.mark.parametrize("argv, needle", [
    (["evaluate", "--checkpoint", "x.npz", "--batch-size", "0"], "--batch-size"),
    (["evaluate", "--checkpoint", "x.npz", "--limit", "-1"], "--limit"),
    (["occlude", "--checkpoint", "x.npz", "--size", "0"], "--size"),
    (["occlude", "--checkpoint", "x.npz", "--index", "-1"], "--index"),
    (["visualize", "--checkpoint", "x.npz", "--images", "0"], "--images"),
    (["project", "--checkpoint", "x.npz", "--layer", "conv1", "--top", "0"], "--top"),
    (["demo", "--minutes", "nan"], "--minutes"),
    (["summary", "--model", "lenet5", "--num-classes", "0"], "--num-classes"),
    (["summary"], "the following arguments are required: --model"),
])
def test_other_commands_validate_their_arguments(capsys, argv, needle):
    status, _, err = run(argv, capsys)
    one_line_error(status, err, needle)


def test_cuda_without_cupy_is_a_one_line_error(idx, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(backend, "cupy_available", lambda: False)
    status, out, err = run(["train", "--model", "zfnet-mini", "--data", idx, "--out",
                            str(tmp_path / "r"), "--device", "cuda", "--no-progress"] + TINY,
                           capsys)
    one_line_error(status, err, "--device cuda needs CuPy")
    assert not os.path.exists(tmp_path / "r")


@pytest.mark.parametrize("error, needle, code", [
    (PermissionError(13, "Permission denied", "/x/last.npz"),
     "Permission denied '/x/last.npz'", 1),
    (OSError(28, "No space left on device"), "No space left on device", 1),
    (IsADirectoryError(21, "Is a directory", "/tmp"), "Is a directory '/tmp'", 1),
    (MemoryError("Unable to allocate 373. GiB for an array"), "out of memory (Unable to", 1),
    (MemoryError(), "out of memory", 1),
    (ValueError("two\nlines"), "two lines", 1),
    (KeyboardInterrupt(), "interrupted", 130),
])
def test_runner_errors_become_one_line(idx, tmp_path, capsys, monkeypatch, error, needle,
                                       code):
    def fail(*args, **kwargs):
        raise error
    monkeypatch.setattr(commands, "load_checkpoint", fail)
    status, _, err = run(["evaluate", "--checkpoint", "c.npz"], capsys)
    assert status == code and needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_json_output_is_strict(idx, tmp_path, capsys, monkeypatch):
    out_dir = tmp_path / "r"
    status, _, err = run(["train", "--model", "zfnet-mini", "--data", idx, "--out",
                          str(out_dir), "--epochs", "1", "--batch-size", "32", "--no-progress",
                          "--val-subset", "32"] + TINY, capsys)
    assert status == 0, err

    def nan_evaluate(*args, **kwargs):
        return {"loss": float("nan"), "top1_error": float("inf"), "top5_error": 0.5,
                "count": 3}
    monkeypatch.setattr(commands, "evaluate", nan_evaluate)
    status, out, err = run(["evaluate", "--checkpoint", str(out_dir / "last.npz"), "--json"],
                           capsys)
    assert status == 0, err

    def refuse(name):
        raise AssertionError(f"{name} in --json output")
    result = json.loads(out, parse_constant=refuse)
    assert result["loss"] is None and result["top1_error"] is None and result["count"] == 3
    assert commands.strict_json({"a": [float("-inf"), 1.5]}) == '{"a": [null, 1.5]}'


def test_a_model_too_large_for_memory_is_refused_before_drawing_weights(idx, tmp_path, capsys):
    status, out, err = run(["train", "--model", "zfnet-mini", "--data", idx, "--out",
                            str(tmp_path / "r"), "--no-progress", "--model-kwargs",
                            '{"fc_width": 1000000}'], capsys)
    one_line_error(status, err, "GiB with their gradients and momentum, more than this machine")


def test_every_registered_command_refuses_negative_counts_and_non_finite_numbers(capsys,
                                                                                 monkeypatch):
    def register(add):
        def configure(p):
            p.add_argument("--count", type=int)
            p.add_argument("--rate", type=float)
        add("probe", "a command registered by another part of minconv", configure,
            lambda args: print(args.count, args.rate) or 0)
    import types
    module = types.ModuleType("minconv_probe_commands")
    module.register = register
    monkeypatch.setitem(__import__("sys").modules, "minconv_probe_commands", module)
    monkeypatch.setattr(cli, "COMMAND_MODULES", cli.COMMAND_MODULES + ["minconv_probe_commands"])
    one_line_error(*run(["probe", "--count", "-1"], capsys)[::2], "--count: must lie in [0, inf]")
    one_line_error(*run(["probe", "--rate", "nan"], capsys)[::2], "--rate: expected a finite")
    status, out, _ = run(["probe", "--count", "3", "--rate", "0.5"], capsys)
    assert status == 0 and out.strip() == "3 0.5"
