"""The team that runs the cores' shares (minconv._team, minconv._kernels.cpu_team).

Products handed straight to BLAS from the OpenMP team equal NumPy's; shares run in
order of their slices, see themselves as workers, keep their threads' scratch from
call to call, and raise what they raise; the caller's thread is itself again after.
"""
import threading

import numpy as np
import pytest

import minconv as mc
from minconv import _team

runtime = mc.runtime

needs_team = pytest.mark.skipif(
    _team.team_runner() is None or runtime.cpu_threads() < 2,
    reason="the kernels are built without OpenMP, or one core is configured")


def _inside(shape, dtype, margins):
    """A view of an array of 7.0 with ``margins`` (rows, columns) of it around the view."""
    (top, bottom), (left, right) = margins
    whole = np.full((shape[0] + top + bottom, shape[1] + left + right), 7.0, dtype)
    return whole, whole[top:top + shape[0], left:left + shape[1]]


def _nothing_written_outside(whole, view):
    view[...] = 7.0
    assert (whole == 7.0).all()


def _team_product_bound():
    a = np.ones((64, 64), np.float32)
    return runtime._team_takes(a, a, np.empty_like(a))


@needs_team
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M,K,N", [(256, 1024, 196), (64, 300, 3136), (1000, 512, 8),
                                   (37, 99, 1001), (3, 2000, 90)])
def test_team_products_equal_numpy(dtype, M, K, N):
    if not _team_product_bound():
        pytest.skip("no OpenBLAS with cblas and per-thread thread counts is loaded")
    rng = np.random.default_rng(M * N)
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    got = runtime.matmul(a, b)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    assert np.allclose(got, a @ b, rtol=tol, atol=tol * np.sqrt(K))


@needs_team
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M,K,N", [(256, 1024, 196), (64, 300, 3136), (37, 99, 1001)])
def test_team_products_add_a_bias_per_row(dtype, M, K, N):
    # split by rows (M >= N) and by columns (N > M): each block gets its rows' bias
    if not _team_product_bound():
        pytest.skip("no OpenBLAS with cblas and per-thread thread counts is loaded")
    rng = np.random.default_rng(M + N)
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    bias = rng.standard_normal(M).astype(dtype)
    whole, out = _inside((M, N), dtype, ((1, 1), (2, 1)))
    got = runtime.matmul(a, b, out=out, bias=bias)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    assert np.allclose(got, a @ b + bias[:, None], rtol=tol, atol=tol * np.sqrt(K))
    _nothing_written_outside(whole, out)


def test_a_bias_the_team_cannot_add_is_added_after():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((300, 400)).astype(np.float32)
    b = rng.standard_normal((400, 200)).astype(np.float32)
    for bias in (rng.standard_normal(600).astype(np.float32)[::2],  # strided
                 rng.standard_normal(300)):                          # float64
        expected = a @ b + bias[:, None].astype(np.float32)
        assert np.allclose(runtime.matmul(a, b, bias=bias), expected, rtol=1e-4, atol=1e-3)


@needs_team
def test_team_products_of_views_with_leading_dimensions():
    if not _team_product_bound():
        pytest.skip("no OpenBLAS with cblas and per-thread thread counts is loaded")
    rng = np.random.default_rng(1)
    a = rng.standard_normal((300, 400)).astype(np.float32)
    b = rng.standard_normal((500, 700)).astype(np.float32)
    whole, O = _inside((280, 550), np.float32, ((5, 35), (20, 230)))
    A, B = a[10:290, 50:350], b[:300, 100:650]
    assert runtime._team_takes(A, B, O)
    runtime.matmul(A, B, out=O)
    assert np.allclose(O, A @ B, rtol=1e-4, atol=1e-3)
    _nothing_written_outside(whole, O)


def test_products_the_team_cannot_take_still_equal_numpy():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((200, 300)).astype(np.float32)
    b = rng.standard_normal((200, 300)).astype(np.float32)
    bt = b.T                                         # columns, not rows, contiguous
    assert not runtime._team_takes(a, bt, np.empty((200, 200), np.float32))
    assert np.allclose(runtime.matmul(a, bt), a @ bt, rtol=1e-4, atol=1e-3)
    c = rng.standard_normal((300, 300)).astype(np.float32)
    mixed = runtime.matmul(a, c.astype(np.float64))  # mixed dtypes: NumPy's rules
    assert mixed.dtype == np.float64 and np.allclose(mixed, a @ c, rtol=1e-4, atol=1e-3)


@needs_team
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N,M,K,P", [(8, 64, 16, 3025), (3, 16, 64, 729), (2, 1000, 512, 169),
                                     (5, 7, 3, 1001), (1, 192, 48, 169)])
@pytest.mark.parametrize("relu", [False, True])
def test_batched_products_equal_numpy_per_image(dtype, N, M, K, P, relu):
    # the shares cut the images' columns laid side by side: across image boundaries,
    # and (batch of one) as matmul's product
    if not _team_product_bound():
        pytest.skip("no OpenBLAS with cblas and per-thread thread counts is loaded")
    rng = np.random.default_rng(N * M + P)
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((N, K, P)).astype(dtype)
    bias = rng.standard_normal(M).astype(dtype)
    out = np.full((N, M, P), np.nan, dtype)
    got = runtime.batched_matmul(a, b, out=out, bias=bias, relu=relu)
    expected = np.stack([a @ b[n] + bias[:, None] for n in range(N)])
    if relu:
        expected = np.maximum(expected, 0)
        assert (got >= 0).all()
    tol = 1e-4 if dtype == np.float32 else 1e-10
    assert got is out and np.allclose(got, expected, rtol=tol, atol=tol * np.sqrt(K))


@needs_team
def test_batched_products_of_views_write_only_their_blocks():
    # x_s of a strided 1x1 convolution and y as channel slices of a wider array
    if not _team_product_bound():
        pytest.skip("no OpenBLAS with cblas and per-thread thread counts is loaded")
    rng = np.random.default_rng(3)
    a = rng.standard_normal((48, 40)).astype(np.float32)
    b = rng.standard_normal((4, 50, 900)).astype(np.float32)[:, 5:45, 100:800]
    whole = np.full((4, 60, 700), 7.0, np.float32)
    out = whole[:, 10:58]
    runtime.batched_matmul(a, b, out=out)
    assert np.allclose(out, np.stack([a @ b[n] for n in range(4)]), rtol=1e-4, atol=1e-3)
    out[...] = 7.0
    assert (whole == 7.0).all()


def test_batched_products_the_team_cannot_take_still_equal_numpy():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((30, 20))                                     # float64
    b = rng.standard_normal((3, 20, 400)).astype(np.float32).transpose(0, 1, 2)[:, :, ::2]
    bias = rng.standard_normal(30)
    got = runtime.batched_matmul(a, b, bias=bias, relu=True)
    expected = np.maximum(np.stack([a @ b[n] for n in range(3)]) + bias[:, None], 0)
    assert got.dtype == np.float64 and np.allclose(got, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_products_epilogue_adds_the_bias_and_keeps_nan_through_the_relu(dtype):
    from minconv._kernels import cpu_team
    rng = np.random.default_rng(6)
    out = rng.standard_normal((2, 5, 9)).astype(dtype)
    out[1, 2, 3] = np.nan
    bias = rng.standard_normal(5).astype(dtype)
    expected = out + bias[:, None]
    expected = np.where(expected < 0, 0, expected)
    got = cpu_team.finish(out.copy(), bias, True)
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(got[1, 2, 3])
    np.testing.assert_array_equal(cpu_team.finish(out[0].copy(), None, True),
                                  np.where(out[0] < 0, 0, out[0]))


@needs_team
def test_shares_run_in_order_as_workers_and_the_caller_is_itself_after():
    seen = []

    def work(part):
        seen.append((part, runtime.in_worker(), threading.get_ident()))
        return part.stop - part.start

    assert runtime.map_shares(work, 9) == [4, 5]
    assert sorted(p.start for p, _, _ in seen) == [0, 4]
    assert all(worker for _, worker, _ in seen)
    assert len({ident for _, _, ident in seen}) == 2         # two threads took them
    assert threading.get_ident() in {ident for _, _, ident in seen}  # the caller one
    assert not runtime.in_worker()


@needs_team
def test_a_team_thread_keeps_its_scratch_from_call_to_call():
    buffers = {}

    def work(part):
        s = runtime.scratch(np, np.float32, (1000,))
        buffers.setdefault(part.start, []).append(s.__array_interface__["data"][0])

    for _ in range(3):
        runtime.map_shares(work, 2)
    assert all(len(set(addresses)) == 1 for addresses in buffers.values()), buffers


@needs_team
def test_an_exception_in_a_share_is_raised_after_every_share_finished():
    finished = []

    def work(part):
        if part.start == 1:
            raise KeyError("share one")
        finished.append(part.start)

    with pytest.raises(KeyError, match="share one"):
        runtime.map_shares(work, 2)
    assert finished == [0]
    assert runtime.map_shares(lambda part: part.start, 2) == [0, 1]  # the team still works
