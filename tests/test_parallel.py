"""Batch parallelism on the CPU: the shares, the workers' settings, and results that
equal the one-thread computation."""
import threading

import numpy as np
import pytest

import minconv as mc
from minconv import _kernels
from minconv import runtime as _parallel
from conftest import rel_error

F = mc.functional

needs_two_cores = pytest.mark.skipif(_parallel.cpu_threads() < 2,
                                     reason="batch parallelism needs at least 2 threads")


@pytest.fixture
def one_thread():
    """Run with the batch split turned off: the sequential computation to compare with."""
    before = mc.runtime.settings()

    def serial():
        mc.runtime.configure(threads=1)
    yield serial
    mc.runtime.configure(threads=before["threads"])


@pytest.mark.parametrize("N,count", [(1, 2), (2, 2), (7, 2), (128, 2), (10, 3), (5, 8)])
def test_shares_cover_the_batch_in_order(N, count):
    parts = _parallel.shares(N, count)
    assert len(parts) == min(N, count)
    assert parts[0].start == 0 and parts[-1].stop == N
    assert all(a.stop == b.start for a, b in zip(parts, parts[1:]))
    sizes = [p.stop - p.start for p in parts]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


@needs_two_cores
def test_work_runs_on_single_threaded_workers():
    main_threads = _kernels.cpu.kernel_threads() if _kernels.CPU_BUILT else 1
    blas = _parallel._blas_controller()
    blas_threads = [lib["num_threads"] for lib in blas.info()] if blas else []
    seen = []

    def work(part):
        blas_on_one = all(lib["num_threads"] == 1 for lib in blas.info()) if blas else True
        seen.append((part, threading.get_ident(), _parallel.in_worker(),
                     _kernels.cpu.kernel_threads() if _kernels.CPU_BUILT else 1, blas_on_one))
        return part.stop - part.start

    assert _parallel.map_shares(work, 9) == [4, 5]  # in share order
    assert sorted(s[0].start for s in seen) == [0, 4]
    assert len({s[1] for s in seen}) == 2  # two threads
    for _, _, in_worker, kernel_threads, blas_on_one in seen:
        assert in_worker and kernel_threads == 1 and blas_on_one
    # the caller's own settings are back as they were
    assert not _parallel.in_worker()
    if _kernels.CPU_BUILT:
        assert _kernels.cpu.kernel_threads() == main_threads
    if blas:
        assert [lib["num_threads"] for lib in blas.info()] == blas_threads


@needs_two_cores
def test_a_worker_never_splits_again():
    inner = []

    def work(part):
        inner.append(_parallel.map_shares(lambda p: (p.start, p.stop), part.stop - part.start))
    _parallel.map_shares(work, 8)
    assert sorted(inner) == [[(0, 4)], [(0, 4)]]


def test_a_batch_of_one_runs_on_the_caller():
    assert _parallel.map_shares(lambda part: threading.current_thread().name, 1) == [
        threading.current_thread().name]


def test_error_in_a_share_reaches_the_caller():
    def work(part):
        if part.start > 0:
            raise ValueError(f"share {part} failed")
        return 0
    with pytest.raises(ValueError, match="failed"):
        _parallel.map_shares(work, 6)


# (N, C, H, W, F, k, stride, padding): zfnet_mini's conv2 and conv4, a strided one, and a
# large map on the one-GEMM-per-image path
CASES = [(16, 32, 14, 14, 64, 5, 1, 2), (20, 64, 7, 7, 96, 3, 1, 1),
         (9, 3, 23, 19, 8, 7, 2, 1), (5, 3, 40, 40, 4, 3, 1, 1)]


@needs_two_cores
@pytest.mark.parametrize("case", CASES)
def test_split_convolution_equals_one_thread(case, one_thread):
    N, C, H, W_, Fo, k, s, p = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, W_)).astype(np.float32)
    W = rng.standard_normal((Fo, C, k, k)).astype(np.float32)
    y = F.conv2d(x, W, None, s, p)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, dW, _ = F.conv2d_backward(dy, x, W, s, p)
    again = F.conv2d_backward(dy, x, W, s, p)
    assert np.array_equal(again[0], dx) and np.array_equal(again[1], dW)  # deterministic
    one_thread()
    y1 = F.conv2d(x, W, None, s, p)
    dx1, dW1, _ = F.conv2d_backward(dy, x, W, s, p)
    assert rel_error(y, y1) < 1e-6
    assert rel_error(dx, dx1) < 1e-6
    assert rel_error(dW, dW1) < 1e-5


@pytest.mark.parametrize("blas_threads_sleep", [False, True])   # shared out, or one call
@pytest.mark.parametrize("shape", [(128, 576, 512), (512, 128, 300), (3, 4, 5), (1, 700, 900)])
def test_matmul_equals_numpy(shape, blas_threads_sleep, monkeypatch):
    monkeypatch.setattr(_parallel, "_BLAS_THREADS_SLEEP", blas_threads_sleep)
    M, K, P = shape
    rng = np.random.default_rng(1)
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, P)).astype(np.float32)
    assert rel_error(_parallel.matmul(a, b), a @ b) < 1e-6
    assert rel_error(_parallel.matmul(b.T, a.T), b.T @ a.T) < 1e-6  # transposed views
    wide = np.full((M, P + 3), 7.0, np.float32)
    out = wide[:, 1:P + 1]                                         # a strided view
    assert _parallel.matmul(a, b, out=out) is out
    assert rel_error(out, a @ b) < 1e-6
    assert np.all(wide[:, 0] == 7.0) and np.all(wide[:, P + 1:] == 7.0)


@needs_two_cores
def test_split_linear_layer_equals_one_thread(one_thread):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((128, 576)).astype(np.float32)
    W = rng.standard_normal((512, 576)).astype(np.float32) * 0.05
    dy = rng.standard_normal((128, 512)).astype(np.float32)
    y, grads = F.linear(x, W), F.linear_backward(dy, x, W)
    one_thread()
    y1, grads1 = F.linear(x, W), F.linear_backward(dy, x, W)
    assert rel_error(y, y1) < 1e-6
    for g, g1 in zip(grads, grads1):
        assert rel_error(g, g1) < 1e-6


@needs_two_cores
def test_elementwise_shares_the_first_axis_and_equals_one_call(rng):
    x = rng.standard_normal((33, 8, 32, 32)).astype(np.float32)   # 270,336 elements
    assert x.size >= _parallel._SMALL_ELEMENTWISE
    rows = []

    def negate(a, out):
        rows.append((a.shape[0], threading.current_thread() is threading.main_thread()))
        return np.negative(a, out=out)

    out = np.empty_like(x)
    assert _parallel.elementwise(negate, out, x) is out
    np.testing.assert_array_equal(out, -x)
    on_team = _parallel.settings()["team"]  # the caller takes the first share there
    assert sorted(rows) == [(16, on_team), (17, False)]
    rows.clear()                                                  # small: one call, here
    _parallel.elementwise(negate, np.empty_like(x[:2]), x[:2])
    assert rows == [(2, True)]
    # a per-channel constant (first axis 1) and a vector broadcast: whole to every share
    for c in (rng.standard_normal((1, 8, 1, 1)).astype(np.float32),
              rng.standard_normal(32).astype(np.float32)):
        out = np.empty_like(x)
        assert _parallel.elementwise(np.multiply, out, x, c) is out
        np.testing.assert_array_equal(out, x * c)


@pytest.mark.parametrize("shape", [(64, 32, 28, 28), (5, 7)])
def test_relu_and_its_gradient_split_equal_the_serial_ones(shape, rng, one_thread):
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    y, dx = F.relu(x), F.relu_backward(dy, x)
    in_place = x.copy()
    assert F.relu(in_place, out=in_place) is in_place
    np.testing.assert_array_equal(in_place, y)
    one_thread()
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    np.testing.assert_array_equal(dx, dy * (x > 0))
    np.testing.assert_array_equal(F.relu_backward(dy, x), dx)


def test_sgd_update_shared_among_cores_equals_the_formula(rng):
    from minconv import nn, train
    from minconv.train import optim
    net = nn.Sequential([("fc", nn.Linear(1000, 700))])    # 700,000 weights: 3 chunks
    assert net["fc"].params["W"].size > 2 * optim.CHUNK
    opt = train.SGD(net, lr=0.1, momentum=0.9, weight_decay=1e-3)
    w0 = net["fc"].params["W"].copy()
    v = np.zeros_like(w0)
    for _ in range(2):
        g = rng.standard_normal(w0.shape).astype(np.float32)
        net["fc"].grads = {"W": g, "b": np.zeros(700, np.float32)}
        opt.step()
        v = np.float32(0.9) * v + (g + w0 * np.float32(1e-3))
        w0 = w0 - v * np.float32(0.1)
        np.testing.assert_array_equal(opt.velocity["fc.W"], v)
        np.testing.assert_array_equal(net["fc"].params["W"], w0)
