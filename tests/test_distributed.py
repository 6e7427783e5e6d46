"""Data-parallel training and sharded scans over MPI equal one process (minconv.distributed).

Each test launches ``mpirun -n 2`` (and a plain process for the reference) on
tests/_distributed_worker.py or the ``minconv`` command, with a small zfnet_mini on
generated 28x28 images. Subprocess timeouts are generous for a loaded machine, but a
job that hangs still fails the test; MINCONV_MPI_TIMEOUT makes a stuck collective abort
well before them.
"""
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

try:
    import mpi4py  # noqa: F401
except ImportError:
    mpi4py = None

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "_distributed_worker.py")
MPIRUN = shutil.which("mpirun", path=os.path.dirname(sys.executable)) or shutil.which("mpirun")
JOB_SECONDS = 240         # a hung job fails here instead of hanging the suite

pytestmark = pytest.mark.skipif(
    mpi4py is None or MPIRUN is None,
    reason="distributed tests need mpi4py and mpirun (pip install 'minconv[mpi]')")


def launch(args, ranks=None, env=None):
    """Run ``python args`` alone (ranks None) or under ``mpirun -n ranks``."""
    command = [sys.executable] + list(args)
    if ranks is not None:
        flags = ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
        command = [MPIRUN, "-n", str(ranks)] + flags + command
    extra = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "PMI_"))}
    env.update(MINCONV_MPI_TIMEOUT="60", PYTHONPATH=ROOT)
    env.update(extra)
    if ranks is not None:  # mpirun passes the environment on to its ranks only when asked
        command[3:3] = [a for k in extra for a in ("-x", k)]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           cwd=ROOT, env=env, start_new_session=True)
    try:
        out, err = job.communicate(timeout=JOB_SECONDS)
    except subprocess.TimeoutExpired:  # a hang is a failure; no rank is left behind
        os.killpg(job.pid, signal.SIGKILL)
        out, err = job.communicate()
        pytest.fail(f"{' '.join(command)} still ran after {JOB_SECONDS} s\n{out}\n{err}")
    return subprocess.CompletedProcess(command, job.returncode, out, err)


def worker(mode, out, ranks=None, env=None, **options):
    args = [WORKER, mode, str(out)]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        args += [flag] if value is True else [flag, str(value)]
    return launch(args, ranks, env)


def ok(done):
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def relative(a, b):
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30))


def assert_same_run(one, other, tol):
    a, b = np.load(one), np.load(other)
    for key in a.files:
        if key.startswith("param/"):
            assert relative(a[key], b[key]) <= tol, (key, relative(a[key], b[key]))
    for key in ("losses", "val_losses"):
        np.testing.assert_allclose(b[key], a[key], rtol=tol, atol=0)
    np.testing.assert_array_equal(b["errors"], a["errors"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Two epochs of one process, global batch 10 (45 images: the last batch has 5)."""
    out = tmp_path_factory.mktemp("one")
    ok(worker("train", out, epochs=2, batch=10))
    return out


# ------------------------------------------------------------------ training

def test_two_ranks_train_as_one_process_float64(reference, tmp_path):
    ok(worker("train", tmp_path, ranks=2, epochs=2, batch=10))
    assert_same_run(reference / "result.npz", tmp_path / "result.npz", 1e-10)


@pytest.mark.parametrize("overlap", ["0", "1"])
def test_a_rank_without_images_in_the_last_batch_adds_zeros(tmp_path, overlap):
    # batch 4 over 45 images: the last batch has one image, rank 0 of 2 gets none; buckets
    # of 4 kB summed after the backward pass (blocking) or during it (non-blocking)
    env = dict(MINCONV_MPI_OVERLAP=overlap, MINCONV_MPI_BUCKET_BYTES="4096")
    ok(worker("train", tmp_path / "one", epochs=1, batch=4))
    ok(worker("train", tmp_path / "two", ranks=2, epochs=1, batch=4, env=env))
    assert_same_run(tmp_path / "one" / "result.npz", tmp_path / "two" / "result.npz", 1e-10)


def test_a_graph_net_trains_as_one_process(tmp_path):
    ok(worker("train", tmp_path / "one", epochs=1, batch=10, net="graph"))
    ok(worker("train", tmp_path / "two", ranks=2, epochs=1, batch=10, net="graph"))
    assert_same_run(tmp_path / "one" / "result.npz", tmp_path / "two" / "result.npz", 1e-10)


def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def test_minconv_train_under_mpirun_float32(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from _distributed_worker import dataset
    folder = tmp_path / "data"
    folder.mkdir()
    for prefix, n, seed in (("train", 50, 0), ("t10k", 20, 1)):
        images, labels = dataset(n, seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    runs = {}
    for ranks in (None, 2):
        out = tmp_path / f"run{ranks}"
        args = ["-m", "minconv.cli", "train", "--model", "zfnet-mini", "--data", str(folder),
                "--out", str(out), "--epochs", "2", "--batch-size", "16", "--no-progress",
                "--model-kwargs", json.dumps({"widths": [4, 6, 8, 8, 6], "fc_width": 16})]
        done = ok(launch(args, ranks))
        runs[ranks] = out
        assert done.stdout.count("epoch 2 |") == 1, done.stdout  # rank 0 alone prints
    from minconv.train import load_checkpoint
    one, two = (load_checkpoint(runs[r] / "last.npz") for r in (None, 2))
    for name, value in one.net.params.items():
        assert value.dtype == np.float32
        assert relative(value, two.net.params[name]) <= 1e-5, name
    for a, b in zip(one.history, two.history):
        for key in ("train_loss", "val_loss"):
            assert abs(a[key] - b[key]) <= 1e-5 * abs(a[key]), key
        for key in ("train_error", "val_top1_error", "val_top5_error"):
            assert a[key] == pytest.approx(b[key], abs=1e-12), key


def test_two_ranks_train_as_one_process_on_the_gpu(tmp_path):
    from minconv.backend import cupy_available
    if not cupy_available():
        pytest.skip("needs CuPy and a CUDA GPU (the all-reduce then runs over NCCL, or over "
                    "MPI on host copies where NCCL cannot be set up)")
    ok(worker("train", tmp_path / "one", epochs=1, batch=10, device="cuda"))
    ok(worker("train", tmp_path / "two", ranks=2, epochs=1, batch=10, device="cuda"))
    assert_same_run(tmp_path / "one" / "result.npz", tmp_path / "two" / "result.npz", 1e-10)


# ------------------------------------------------------------------ resume

@pytest.mark.parametrize("first, then", [(2, None), (None, 2)])
def test_resume_with_another_number_of_ranks(reference, tmp_path, first, then):
    ok(worker("train", tmp_path, ranks=first, epochs=1, batch=10))
    ok(worker("train", tmp_path, ranks=then, epochs=2, batch=10, resume=True))
    assert_same_run(reference / "result.npz", tmp_path / "result.npz", 1e-10)


# ------------------------------------------------------------------ scans

def test_sharded_scans_equal_one_process_exactly(tmp_path):
    ok(worker("scan", tmp_path / "one"))
    ok(worker("scan", tmp_path / "two", ranks=2))
    one, two = np.load(tmp_path / "one" / "scan.npz"), np.load(tmp_path / "two" / "scan.npz")
    assert sorted(one.files) == sorted(two.files)
    ties = 0
    for key in one.files:
        np.testing.assert_array_equal(two[key], one[key], err_msg=key)
        if key.endswith("/values"):
            v = one[key]
            ties += int((v[:, 1:] == v[:, :-1]).sum())
    assert ties > 0  # the data make ties, so their order is tested too


# ------------------------------------------------------------------ faults

def intact_checkpoint(out, epoch):
    from minconv.train import load_checkpoint
    checkpoint = load_checkpoint(out / "last.npz")
    assert checkpoint.epoch == epoch
    assert all(np.isfinite(v).all() for v in checkpoint.net.params.values())
    assert not [f for f in os.listdir(out) if ".tmp" in f]


def test_a_killed_rank_stops_the_job_and_names_itself(tmp_path):
    done = worker("train", tmp_path, ranks=2, epochs=3, batch=10, fault="kill")
    assert done.returncode != 0
    text = done.stdout + done.stderr
    assert "rank 1" in text, text
    intact_checkpoint(tmp_path, 1)


def test_a_rank_that_raises_stops_every_rank(tmp_path):
    done = worker("train", tmp_path, ranks=2, epochs=3, batch=10, fault="raise")
    assert done.returncode != 0
    assert "rank 1 of 2" in done.stderr and "RuntimeError" in done.stderr, done.stderr
    intact_checkpoint(tmp_path, 1)


def test_a_nan_on_one_rank_stops_all_ranks_cleanly(tmp_path):
    done = worker("train", tmp_path, ranks=2, epochs=3, batch=10, fault="nan")
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("training diverged at epoch 2, step 3/5") == 1, done.stderr
    assert "MPI_ABORT" not in done.stderr
    intact_checkpoint(tmp_path, 1)


@pytest.mark.parametrize("where", ["hang", "hang-backward"])
def test_a_rank_that_hangs_stops_the_job_at_the_deadline(tmp_path, where):
    # stuck before the batch's loss is summed (a non-blocking collective waits) or after it,
    # in the backward pass (the blocking gradient all-reduce waits, under the watchdog)
    done = worker("train", tmp_path, ranks=2, epochs=3, batch=10, fault=where,
                  env=dict(MINCONV_MPI_TIMEOUT="4"))
    assert done.returncode != 0
    assert "rank 0 of 2: no answer from the other ranks after 4 s" in done.stderr, done.stderr
    intact_checkpoint(tmp_path, 1)
