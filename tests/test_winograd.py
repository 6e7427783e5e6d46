"""Winograd F(2x2, 3x3): the readable kernels against the definition of the convolution
(its output, data gradient and weight gradient), and the Cython twins against them (the convolution itself goes through every plan in
test_conv_plans.py)."""
import numpy as np
import pytest

import minconv as mc
from minconv._kernels import reference_winograd as ref
from conftest import assert_grad_close, numerical_gradient, rel_error

REASON = "the Cython kernels are not built (run `pip install -e .`)"

# (N, C, H, W, F, padding): odd and even maps (cropped last blocks), paddings 0-2
CASES = [(1, 3, 5, 5, 2, (1, 1)), (2, 4, 7, 6, 5, (0, 2)), (3, 5, 9, 10, 3, (2, 0)),
         (2, 16, 4, 3, 9, (1, 1)), (1, 2, 3, 3, 1, (0, 0))]
IDS = [f"N{n}C{c}_{h}x{w}F{f}p{p[0]}{p[1]}" for n, c, h, w, f, p in CASES]


def winograd_conv(kernels, x, W, b, padding):
    """y = A^T [U . V] A from the three kernels, with a plain matmul in between."""
    N, _, H, Wd = x.shape
    M = np.matmul(kernels.winograd_tiles(x, padding), kernels.winograd_weights(W))
    return kernels.winograd_output(M, N, H + 2 * padding[0] - 2, Wd + 2 * padding[1] - 2, b)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reference_kernels_give_the_convolution_and_its_transpose(case, rng):
    N, C, H, Wd, F, p = case
    x = rng.standard_normal((N, C, H, Wd))
    W = rng.standard_normal((F, C, 3, 3))
    b = rng.standard_normal(F)
    want = mc.functional.conv2d(x, W, b, 1, p, plan="columns")
    assert rel_error(winograd_conv(ref, x, W, b, p), want) <= 1e-12
    # C^T dy: dy padded by 2 - p, convolved with the flipped, channel-swapped filters
    dy = rng.standard_normal(want.shape)
    M = np.matmul(ref.winograd_tiles(dy, (2 - p[0], 2 - p[1])),
                  ref.winograd_weights(W, transposed=True))
    dx = ref.winograd_output(M, N, H, Wd)
    assert rel_error(dx, mc.functional.conv2d_backward(dy, x, W, 1, p, plan="columns")[0]) <= 1e-12


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reference_kernels_give_the_weight_gradient(case, rng):
    N, C, H, Wd, F, p = case
    x = rng.standard_normal((N, C, H, Wd))
    W = rng.standard_normal((F, C, 3, 3))
    dy = rng.standard_normal((N, F, H + 2 * p[0] - 2, Wd + 2 * p[1] - 2))
    dU = np.matmul(ref.winograd_tiles(x, p).transpose(0, 2, 1), ref.winograd_grad_tiles(dy))
    want = mc.functional.conv2d_backward(dy, x, W, 1, p, plan="columns")[1]
    assert rel_error(ref.winograd_weight_grad(dU), want) <= 1e-12


@pytest.mark.parametrize("padding", [(1, 1), (2, 0)])
def test_the_winograd_plan_passes_a_gradient_check(padding, rng):
    """dx, dW and db of conv2d(plan="winograd") against centred differences (float64)."""
    x = rng.standard_normal((2, 3, 5, 6))
    W = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    f = lambda: mc.functional.conv2d(x, W, b, 1, padding, plan="winograd")  # noqa: E731
    dy = rng.standard_normal(f().shape)
    dx, dW, db = mc.functional.conv2d_backward(dy, x, W, 1, padding, plan="winograd")
    assert_grad_close(dx, numerical_gradient(f, x, dy), what="dx")
    assert_grad_close(dW, numerical_gradient(f, W, dy), what="dW")
    assert_grad_close(db, numerical_gradient(f, b, dy), what="db")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cython_twins_match_the_reference(case, dtype, rng):
    cpu = pytest.importorskip("minconv._kernels.cpu_winograd", reason=REASON)
    N, C, H, Wd, F, p = case
    x = rng.standard_normal((N, C, H, Wd)).astype(dtype)
    W = rng.standard_normal((F, C, 3, 3)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-13)
    for transposed in (False, True):
        got = cpu.winograd_weights(W, transposed)
        assert got.dtype == dtype and got.shape == (16,) + ((F, C) if transposed else (C, F))
        np.testing.assert_allclose(got, ref.winograd_weights(W, transposed), **tol)
    V = cpu.winograd_tiles(x, p)
    np.testing.assert_allclose(V, ref.winograd_tiles(x, p), **tol)
    for kernels in (cpu, ref):                                    # written where it is told
        out = np.full(V.shape, np.nan, dtype)
        assert kernels.winograd_tiles(x, p, out=out) is out
        np.testing.assert_allclose(out, V, **tol)
    M = rng.standard_normal((16, V.shape[1], F)).astype(dtype)
    Ho, Wo = H + 2 * p[0] - 2, Wd + 2 * p[1] - 2
    for bias in (None, b):
        got = cpu.winograd_output(M, N, Ho, Wo, bias)
        assert got.dtype == dtype and got.shape == (N, F, Ho, Wo)
        np.testing.assert_allclose(got, ref.winograd_output(M, N, Ho, Wo, bias), **tol)
    dy = rng.standard_normal((N, F, Ho, Wo)).astype(dtype)
    dM = cpu.winograd_grad_tiles(dy)
    assert dM.dtype == dtype and dM.shape == (16, V.shape[1], F)
    np.testing.assert_allclose(dM, ref.winograd_grad_tiles(dy), **tol)
    for kernels in (cpu, ref):
        out = np.full(dM.shape, np.nan, dtype)
        assert kernels.winograd_grad_tiles(dy, out=out) is out
        np.testing.assert_allclose(out, dM, **tol)
    dU = rng.standard_normal((16, C, F)).astype(dtype)
    got = cpu.winograd_weight_grad(dU)
    assert got.dtype == dtype and got.shape == (F, C, 3, 3) and got.flags.c_contiguous
    np.testing.assert_allclose(got, ref.winograd_weight_grad(dU), **tol)


def test_cython_twins_where_the_threads_share_the_work(rng):
    """Large enough that the tiles, products and filters are split among the threads."""
    cpu = pytest.importorskip("minconv._kernels.cpu_winograd", reason=REASON)
    x = rng.standard_normal((4, 64, 30, 29)).astype(np.float32)
    W = rng.standard_normal((96, 64, 3, 3)).astype(np.float32)
    b = rng.standard_normal(96).astype(np.float32)
    want = mc.functional.conv2d(x.astype(np.float64), W.astype(np.float64),
                                b.astype(np.float64), 1, 1, plan="columns")
    assert rel_error(winograd_conv(cpu, x, W, b, (1, 1)), want) <= 1e-5
    # filters 16 at a time: whole blocks and partial last ones, on both axes
    for F, C in ((512, 300), (35, 21)):
        W = rng.standard_normal((F, C, 3, 3)).astype(np.float32)
        for transposed in (False, True):
            np.testing.assert_allclose(cpu.winograd_weights(W, transposed),
                                       ref.winograd_weights(W, transposed), rtol=1e-6, atol=1e-6)
    dy = rng.standard_normal((4, 96, 30, 29)).astype(np.float32)
    np.testing.assert_allclose(cpu.winograd_grad_tiles(dy), ref.winograd_grad_tiles(dy),
                               rtol=1e-6, atol=1e-6)
    dU = rng.standard_normal((16, 300, 512)).astype(np.float32)
    np.testing.assert_allclose(cpu.winograd_weight_grad(dU), ref.winograd_weight_grad(dU),
                               rtol=1e-5, atol=1e-5)


def test_bad_operands_name_themselves():
    cpu = pytest.importorskip("minconv._kernels.cpu_winograd", reason=REASON)
    with pytest.raises(ValueError, match=r"winograd_weights: F\(2x2, 3x3\) takes 3x3"):
        cpu.winograd_weights(np.zeros((4, 2, 5, 5), np.float32))
    with pytest.raises(ValueError, match="winograd_tiles: input must be a 4-D"):
        cpu.winograd_tiles(np.zeros((2, 3, 4), np.float32), (1, 1))
    with pytest.raises(ValueError, match=r"winograd_output: M \(16, 3, 2\) does not hold"):
        cpu.winograd_output(np.zeros((16, 3, 2), np.float32), 1, 5, 5)
    with pytest.raises(ValueError, match=r"winograd_weight_grad: dU must be \(16, C, F\)"):
        cpu.winograd_weight_grad(np.zeros((9, 2, 2), np.float32))
    with pytest.raises(ValueError, match="winograd_grad_tiles: dy must be a 4-D"):
        cpu.winograd_grad_tiles(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"winograd_output: bias must be \(2,\)"):
        cpu.winograd_output(np.zeros((16, 9, 2), np.float32), 1, 5, 5, np.zeros(3, np.float32))


def test_the_winograd_plan_over_chunks_of_the_batch(rng):
    """A workspace of one byte makes every image a chunk of its own: the output and dx are
    written chunk by chunk and dW is summed over the chunks, as over one."""
    x = rng.standard_normal((3, 4, 6, 5))
    W = rng.standard_normal((5, 4, 3, 3))
    y = mc.functional.conv2d(x, W, None, 1, 1, plan="winograd", workspace=1)
    assert rel_error(y, mc.functional.conv2d(x, W, None, 1, 1, plan="columns")) <= 1e-12
    dy = rng.standard_normal(y.shape)
    got = mc.functional.conv2d_backward(dy, x, W, 1, 1, plan="winograd", workspace=1)
    want = mc.functional.conv2d_backward(dy, x, W, 1, 1, plan="columns")
    for what, a, e in zip(("dx", "dW", "db"), got, want):
        assert rel_error(a, e) <= 1e-12, what
