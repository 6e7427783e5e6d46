"""minconv on the GPU: the CUDA kernels and the engine against the CPU, and against PyTorch CUDA.

Everything marked ``needs_gpu`` runs only where CuPy sees a CUDA device, and is
skipped with the reason otherwise; the device-selection tests at the top run
everywhere. The same kernel cases run without a GPU in test_cuda_emulated.py.
"""
import copy
import subprocess
import sys

import numpy as np
import pytest

import _cuda_cases as cases
import minconv as mc
from minconv import backend
from minconv.backend import cupy_available, to_device

GPU_REASON = ("no CUDA device/CuPy: GPU tests need `pip install -e '.[gpu]'` "
              "and an NVIDIA GPU")
needs_gpu = pytest.mark.skipif(not cupy_available(), reason=GPU_REASON)
F = mc.functional
TOL = {np.float32: 1e-4, np.float64: 1e-10}  # max error relative to the largest entry


def small_net(dtype=np.float32):
    """A ZF-style net on 28x28: conv-relu-pool(3/2 ceil)-LRN twice, three convs, pool, fcs."""
    net = mc.models.zfnet_mini(num_classes=5, widths=(6, 8, 10, 10, 8), fc_width=16,
                               dropout=0.0, rng=np.random.default_rng(0))
    return net.astype(dtype)


# ---------------------------------------------------------------- device selection (any machine)

def test_cuda_without_cupy_names_the_gpu_extra(monkeypatch):
    monkeypatch.setattr(backend, "_cupy", None)
    with pytest.raises(RuntimeError, match=r"pip install -e '\.\[gpu\]'"):
        to_device(np.zeros(3, np.float32), "cuda")
    net = small_net()
    with pytest.raises(RuntimeError, match=r"\[gpu\]"):
        to_device(net, "cuda")
    assert all(isinstance(v, np.ndarray) for v in net.params.values())  # nothing moved


def test_cuda_kernels_without_cupy_name_the_gpu_extra(monkeypatch):
    from minconv._kernels import cuda
    monkeypatch.setattr(backend, "_cupy", None)
    with pytest.raises(RuntimeError, match=r"pip install -e '\.\[gpu\]'"):
        cuda.im2col(np.zeros((1, 1, 3, 3), np.float32), 2, 2, (1, 1), (0, 0), (1, 1))


def test_cuda_without_a_device(monkeypatch):
    class NoDevice:  # a CuPy that imports but finds no driver or GPU
        class ndarray:
            pass

        class cuda:
            class runtime:
                @staticmethod
                def getDeviceCount():
                    raise RuntimeError("cudaErrorNoDevice")

    monkeypatch.setattr(backend, "_cupy", NoDevice)
    assert not cupy_available()
    with pytest.raises(RuntimeError, match="GPU"):
        to_device(np.zeros(3, np.float32), "cuda")


@pytest.mark.parametrize("device", ["gpu", "CUDA", "cuda:0", "tpu", None])
def test_unknown_device(device):
    with pytest.raises(ValueError, match="unknown device"):
        to_device(np.zeros(3), device)
    with pytest.raises(ValueError, match="unknown device"):
        to_device(small_net(), device)


def test_to_cpu_keeps_arrays():
    net = small_net()
    before = dict(net.params)
    assert to_device(net, "cpu") is net
    assert all(net.params[k] is v for k, v in before.items())  # the very same arrays
    a = np.arange(6.0).reshape(2, 3)[:, ::2]
    assert to_device(a, "cpu") is a
    state = {"w": a, "rest": [a, None, 3]}
    moved = to_device(state, "cpu")
    assert moved["w"] is a and moved["rest"][0] is a and moved["rest"][1:] == [None, 3]


def test_import_without_cupy():
    """minconv and its CUDA module import where CuPy cannot be imported at all."""
    code = ("import sys; sys.modules['cupy'] = None\n"
            "import minconv, minconv._kernels.cuda\n"
            "assert not minconv.backend.cupy_available()\n"
            "assert minconv.backend.get_array_module(minconv.nn.Linear(2, 2).params['W']) "
            "is __import__('numpy')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- GPU helpers

@pytest.fixture
def cp():
    return backend._require_cuda()


@pytest.fixture
def rng():
    return np.random.default_rng(11)


def host(a):
    """A NumPy copy of a CuPy (or NumPy) array."""
    return backend._cupy.asnumpy(a) if backend.device_of(a) == "cuda" else np.asarray(a)


def assert_close(gpu, cpu, dtype, what):
    """The GPU result matches the CPU one, relative to the latter's largest entry."""
    assert backend.device_of(gpu) == "cuda", f"{what}: result is not on the GPU"
    gpu = host(gpu)
    assert gpu.shape == cpu.shape and gpu.dtype == cpu.dtype, (what, gpu.shape, cpu.shape)
    scale = max(float(np.abs(cpu).max(initial=0.0)), 1e-30)
    err = float(np.abs(gpu.astype(np.float64) - cpu).max(initial=0.0)) / scale
    assert err <= TOL[dtype], f"{what}: relative error {err:.2e} > {TOL[dtype]:.0e}"


# ---------------------------------------------------------------- CUDA kernels vs the reference

@needs_gpu
@pytest.mark.parametrize("dtype", cases.DTYPES)
@pytest.mark.parametrize("case", cases.CONV_CASES, ids=cases.case_id)
def test_im2col_col2im_kernels(cp, case, dtype, rng):
    from minconv._kernels import cuda
    cases.check_im2col(cuda, cp.asarray, cp.asnumpy, case, dtype, rng)
    cases.check_col2im(cuda, cp.asarray, cp.asnumpy, case, dtype, rng)


@needs_gpu
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("dtype", cases.DTYPES)
@pytest.mark.parametrize("case", cases.POOL_CASES, ids=cases.case_id)
def test_maxpool_kernels(cp, case, dtype, ties, rng):
    from minconv._kernels import cuda
    cases.check_maxpool(cuda, cp.asarray, cp.asnumpy, case, dtype, rng, ties)


@needs_gpu
@pytest.mark.parametrize("dtype", cases.DTYPES)
@pytest.mark.parametrize("case", cases.LRN_CASES, ids=cases.case_id)
def test_lrn_kernels(cp, case, dtype, rng):
    from minconv._kernels import cuda
    cases.check_lrn(cuda, cp.asarray, cp.asnumpy, case, dtype, rng)


@needs_gpu
def test_zfnet_sized_kernels(cp, rng):
    """The kernels at ZFNet's real sizes (batch 2): conv1's columns, pool1, norm1."""
    from minconv._kernels import cuda
    cases.check_im2col(cuda, cp.asarray, cp.asnumpy,
                       ((2, 3, 224, 224), (7, 7), (2, 2), (1, 1), (1, 1)), np.float32, rng)
    cases.check_col2im(cuda, cp.asarray, cp.asnumpy,
                       ((2, 96, 55, 55), (5, 5), (2, 2), (0, 0), (1, 1)), np.float32, rng)
    cases.check_maxpool(cuda, cp.asarray, cp.asnumpy,
                        ((2, 96, 110, 110), (3, 3), (2, 2), (0, 0), True), np.float32, rng, False)
    cases.check_lrn(cuda, cp.asarray, cp.asnumpy, ((2, 96, 55, 55), 5), np.float32, rng)


@needs_gpu
def test_dispatch_picks_the_cuda_kernels(cp):
    from minconv._kernels import cuda, kernels_for
    ops = kernels_for(cp.zeros((1, 1, 2, 2), cp.float32))
    for name in ("im2col", "col2im", "maxpool_forward", "maxpool_backward",
                 "lrn_forward", "lrn_backward"):
        assert getattr(ops, name) is getattr(cuda, name), name


@needs_gpu
@pytest.mark.parametrize("dtype", cases.DTYPES)
def test_fused_relu_backward(cp, dtype, rng):
    from minconv._kernels import cuda, reference
    dy, x = (rng.standard_normal((3, 4, 5)).astype(dtype) for _ in range(2))
    assert_close(cuda.relu_backward(cp.asarray(dy), cp.asarray(x)),
                 reference.relu_backward(dy, x), dtype, "relu_backward")


# ---------------------------------------------------------------- functional ops, GPU vs CPU

# (N, C, H, W, F, kh, kw, stride, padding, dilation)
CONV_GRID = [
    (2, 3, 7, 6, 4, 3, 2, 2, 1, 1),
    (2, 2, 8, 7, 3, 3, 3, 1, 2, 2),
    (1, 2, 9, 8, 2, 2, 3, (2, 1), (1, 0), (1, 2)),
    (2, 3, 24, 24, 8, 7, 7, 2, 1, 1),   # conv1-like
    (1, 3, 224, 224, 96, 7, 7, 2, 1, 1),  # ZFNet conv1 at batch 1
]


@needs_gpu
@pytest.mark.parametrize("dtype", cases.DTYPES)
@pytest.mark.parametrize("case", CONV_GRID, ids=cases.case_id)
def test_conv_ops(cp, case, dtype, rng):
    N, C, H, W_, F_, kh, kw, s, p, d = case
    x, W, b = (rng.standard_normal(shape).astype(dtype)
               for shape in ((N, C, H, W_), (F_, C, kh, kw), (F_,)))
    y = F.conv2d(x, W, b, s, p, d)
    dy = rng.standard_normal(y.shape).astype(dtype)
    gx, gW, gb, gdy = (cp.asarray(a) for a in (x, W, b, dy))
    assert_close(F.conv2d(gx, gW, gb, s, p, d), y, dtype, "conv2d")
    for name, g, c in zip(("dx", "dW", "db"), F.conv2d_backward(gdy, gx, gW, s, p, d),
                          F.conv2d_backward(dy, x, W, s, p, d)):
        assert_close(g, c, dtype, f"conv2d_backward {name}")
    # C^T: the transposed convolution with the same weights, seen as (C_in=F, C_out=C)
    assert_close(F.conv_transpose2d(gdy, gW, None, s, p, d),
                 F.conv_transpose2d(dy, W, None, s, p, d), dtype, "conv_transpose2d")
    # chunked over the batch through a small workspace: the same numbers
    assert_close(F.conv2d(gx, gW, gb, s, p, d, workspace=1), y, dtype, "conv2d chunked")


# (N, C, H, W, F, k, stride, padding, groups): groups=2, depthwise, a large depthwise map
GROUPED_GRID = [(2, 4, 9, 8, 6, 3, 1, 1, 2), (2, 6, 7, 7, 6, 3, 2, 1, 6),
                (1, 4, 30, 30, 8, 3, 1, 1, 4)]


@needs_gpu
@pytest.mark.parametrize("dtype", cases.DTYPES)
@pytest.mark.parametrize("plan", F.PLANS)
@pytest.mark.parametrize("case", GROUPED_GRID, ids=str)
def test_grouped_conv_on_every_plan(cp, case, plan, dtype, rng):
    N, C, H, W_, F_, k, s, p, g = case
    x, W, b = (rng.standard_normal(shape).astype(dtype)
               for shape in ((N, C, H, W_), (F_, C // g, k, k), (F_,)))
    y = F.conv2d(x, W, b, s, p, 1, g)
    dy = rng.standard_normal(y.shape).astype(dtype)
    gx, gW, gb, gdy = (cp.asarray(a) for a in (x, W, b, dy))
    assert_close(F.conv2d(gx, gW, gb, s, p, 1, g, plan=plan), y, dtype, "grouped conv2d")
    for name, got, want in zip(("dx", "dW", "db"),
                               F.conv2d_backward(gdy, gx, gW, s, p, 1, g, plan=plan),
                               F.conv2d_backward(dy, x, W, s, p, 1, g)):
        assert_close(got, want, dtype, f"grouped conv2d_backward {name}")
    assert_close(F.conv_transpose2d(gdy, gW, None, s, p, 1, g, plan=plan),
                 F.conv_transpose2d(dy, W, None, s, p, 1, g), dtype, "grouped conv_transpose2d")


@needs_gpu
@pytest.mark.parametrize("dtype", cases.DTYPES)
@pytest.mark.parametrize("case", cases.POOL_CASES, ids=cases.case_id)
def test_pool_ops(cp, case, dtype, rng):
    x_shape, kernel, stride, padding, ceil_mode = case
    x = cases.pool_input(x_shape, dtype, rng, ties=False)
    y, s = F.max_pool2d(x, kernel, stride, padding, ceil_mode)
    gy, gs = F.max_pool2d(cp.asarray(x), kernel, stride, padding, ceil_mode)
    assert_close(gy, y, dtype, "max_pool2d")
    np.testing.assert_array_equal(host(gs), s)
    dy = rng.standard_normal(y.shape).astype(dtype)
    assert_close(F.max_unpool2d(cp.asarray(dy), gs, x_shape), F.max_unpool2d(dy, s, x_shape),
                 dtype, "max_unpool2d")


@needs_gpu
@pytest.mark.parametrize("dtype", cases.DTYPES)
def test_lrn_and_elementwise_ops(cp, dtype, rng):
    x = rng.standard_normal((2, 7, 5, 4)).astype(dtype) * 3
    dy = rng.standard_normal(x.shape).astype(dtype)
    gx, gdy = cp.asarray(x), cp.asarray(dy)
    assert_close(F.lrn(gx, 5, 1e-2, 0.75, 2.0), F.lrn(x, 5, 1e-2, 0.75, 2.0), dtype, "lrn")
    assert_close(F.lrn_backward(gdy, gx, 5, 1e-2, 0.75, 2.0),
                 F.lrn_backward(dy, x, 5, 1e-2, 0.75, 2.0), dtype, "lrn_backward")
    for rule in ("grad", "deconv", "guided"):
        assert_close(F.relu_backward(gdy, gx, rule), F.relu_backward(dy, x, rule), dtype, rule)
    logits, labels = x.reshape(2, -1)[:, :10], np.array([3, 7])
    loss, probs = F.softmax_cross_entropy(cp.asarray(logits), cp.asarray(labels))
    expected, _ = F.softmax_cross_entropy(logits, labels)
    assert abs(float(loss) - float(expected)) <= TOL[dtype] * abs(float(expected))


# ---------------------------------------------------------------- batch norm and average pooling

@needs_gpu
@pytest.mark.parametrize("dtype", cases.DTYPES)
@pytest.mark.parametrize("x_shape", cases.BN_CASES + [(8, 16, 20, 20), (2, 3, 300, 300)],
                         ids=cases.case_id)
def test_batchnorm_kernels(cp, x_shape, dtype, rng):
    from minconv._kernels import cuda_norm
    cases.check_batchnorm(cuda_norm, cp.asarray, cp.asnumpy, x_shape, dtype, rng)


@needs_gpu
@pytest.mark.parametrize("dtype", cases.DTYPES)
@pytest.mark.parametrize("case", cases.AVGPOOL_CASES
                         + [((2, 64, 56, 56), (3, 3), (2, 2), (1, 1), True, False)],
                         ids=cases.case_id)
def test_avgpool_kernels(cp, case, dtype, rng):
    from minconv._kernels import cuda_avgpool
    cases.check_avgpool(cuda_avgpool, cp.asarray, cp.asnumpy, case, dtype, rng)


@needs_gpu
@pytest.mark.parametrize("dtype", cases.DTYPES)
@pytest.mark.parametrize("case", cases.ADAPTIVE_CASES + [((2, 512, 3, 3), (7, 7))],
                         ids=cases.case_id)
def test_adaptive_avgpool_kernels(cp, case, dtype, rng):
    from minconv._kernels import cuda_avgpool
    cases.check_adaptive_avgpool(cuda_avgpool, cp.asarray, cp.asnumpy, case, dtype, rng)


@needs_gpu
def test_dispatch_picks_the_layer_kernels(cp):
    from minconv._kernels import cuda_avgpool, cuda_norm, kernels_for
    ops = kernels_for(cp.zeros((1, 1, 2, 2), cp.float64))
    for module in (cuda_norm, cuda_avgpool):
        for name in module.__all__:
            assert getattr(ops, name) is getattr(module, name), name


@needs_gpu
@pytest.mark.parametrize("dtype", cases.DTYPES)
def test_batchnorm_and_avgpool_ops(cp, dtype, rng):
    """The functional ops on CuPy arrays (CUDA kernels) against NumPy ones (Cython or reference),
    running statistics included."""
    cases.check_layer_ops(F, cp.asarray, assert_close, dtype, rng)


# ---------------------------------------------------------------- nets, GPU vs CPU

@needs_gpu
@pytest.mark.parametrize("dtype", cases.DTYPES)
@pytest.mark.parametrize("rule", ["grad", "deconv", "guided"])
def test_net_forward_backward(cp, rule, dtype, rng):
    net = small_net(dtype)
    gpu_net = copy.deepcopy(net).to("cuda")
    assert gpu_net.device == "cuda" and net.device == "cpu"
    x = rng.standard_normal((3, 1, 28, 28)).astype(dtype)
    y = net.forward(x, train=True)
    gy = gpu_net.forward(cp.asarray(x), train=True)
    assert_close(gy, y, dtype, "net forward")
    dy = rng.standard_normal(y.shape).astype(dtype)
    assert_close(gpu_net.backward(cp.asarray(dy), rule=rule), net.backward(dy, rule=rule),
                 dtype, f"net backward ({rule}) dx")
    if rule == "grad":
        grads = net.grads
        for name, g in gpu_net.grads.items():
            assert_close(g, grads[name], dtype, f"gradient of {name}")
    # the deconvnet's projection, as the paper's figures use it
    dn_cpu, dn_gpu = mc.vis.DeconvNet(net), mc.vis.DeconvNet(gpu_net)
    assert_close(dn_gpu.project(cp.asarray(x), layer="conv3", channel=2),
                 dn_cpu.project(x, layer="conv3", channel=2), dtype, "DeconvNet.project")


@needs_gpu
def test_net_round_trip(cp):
    net = small_net()
    original = {k: v.copy() for k, v in net.params.items()}
    assert to_device(net, "cuda") is net
    assert all(backend.device_of(v) == "cuda" for v in net.params.values())
    assert to_device(net, "cuda") is net  # already there: still fine
    net.to("cpu")
    for name, value in net.params.items():
        assert isinstance(value, np.ndarray) and value.dtype == original[name].dtype
        np.testing.assert_array_equal(value, original[name])
    a = np.arange(12.0).reshape(3, 4)[:, ::2]  # non-contiguous
    np.testing.assert_array_equal(to_device(to_device(a, "cuda"), "cpu"), a)


@needs_gpu
def test_training_step(cp, rng):
    """One SGD step with momentum on the GPU equals the same step on the CPU, and the
    optimiser's buffers move with ``to_device``."""
    from minconv.train.optim import SGD
    loss = mc.nn.SoftmaxCrossEntropy()
    x = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
    labels = np.array([0, 1, 2, 4])
    results = []
    for device in ("cpu", "cuda"):
        net = small_net().to(device)
        opt = SGD(net, lr=0.1, momentum=0.9, weight_decay=5e-4)
        xd, ld = to_device(x, device), to_device(labels, device)
        for _ in range(2):
            loss.forward(net.forward(xd, train=True), ld)
            net.backward(loss.backward())
            opt.step()
        results.append((net, opt))
    (cpu_net, cpu_opt), (gpu_net, gpu_opt) = results
    cpu_params = cpu_net.params
    for name, value in gpu_net.params.items():
        assert_close(value, cpu_params[name], np.float32, f"after SGD: {name}")
    assert all(backend.device_of(v) == "cuda" for v in gpu_opt.velocity.values())
    to_device(gpu_opt, "cpu")
    assert all(isinstance(v, np.ndarray) for v in gpu_opt.velocity.values())


# ---------------------------------------------------------------- against PyTorch CUDA

def _torch_cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


torch = _torch_cuda()
needs_torch_cuda = pytest.mark.skipif(torch is None, reason="PyTorch with CUDA not available")


@pytest.fixture
def no_tf32():
    """Full float32 on both sides: CuPy's matmul does not use TF32 unless CUPY_TF32=1."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _tensor(a, grad=False):
    return torch.tensor(a, device="cuda", requires_grad=grad)


@needs_gpu
@needs_torch_cuda
@pytest.mark.parametrize("case", CONV_GRID, ids=cases.case_id)
def test_conv_vs_torch_cuda(cp, no_tf32, case, rng):
    N, C, H, W_, F_, kh, kw, s, p, d = case
    x, W, b = (rng.standard_normal(shape).astype(np.float32)
               for shape in ((N, C, H, W_), (F_, C, kh, kw), (F_,)))
    tx, tW, tb = _tensor(x, True), _tensor(W, True), _tensor(b, True)
    ty = torch.nn.functional.conv2d(tx, tW, tb, s, p, d)
    dy = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    ty.backward(_tensor(dy))
    gx, gW, gb, gdy = (cp.asarray(a) for a in (x, W, b, dy))
    assert_close(F.conv2d(gx, gW, gb, s, p, d), ty.detach().cpu().numpy(), np.float32, "y")
    for name, g, t in zip(("dx", "dW", "db"), F.conv2d_backward(gdy, gx, gW, s, p, d),
                          (tx.grad, tW.grad, tb.grad)):
        assert_close(g, t.cpu().numpy(), np.float32, name)


@needs_gpu
@needs_torch_cuda
def test_pool_and_lrn_vs_torch_cuda(cp, rng):
    x = cases.pool_input((2, 8, 26, 26), np.float32, rng, ties=False)
    ty, ti = torch.nn.functional.max_pool2d(_tensor(x), 3, 2, 0, 1, True, return_indices=True)
    y, s = F.max_pool2d(cp.asarray(x), 3, 2, 0, True)
    assert_close(y, ty.cpu().numpy(), np.float32, "max_pool2d")
    np.testing.assert_array_equal(host(s), ti.cpu().numpy())
    x = rng.standard_normal((2, 8, 6, 5)).astype(np.float32) * 3
    tx = _tensor(x, True)
    ty = torch.nn.functional.local_response_norm(tx, 5, 1e-2, 0.75, 2.0)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    ty.backward(_tensor(dy))
    assert_close(F.lrn(cp.asarray(x), 5, 1e-2, 0.75, 2.0), ty.detach().cpu().numpy(),
                 np.float32, "lrn")
    assert_close(F.lrn_backward(cp.asarray(dy), cp.asarray(x), 5, 1e-2, 0.75, 2.0),
                 tx.grad.cpu().numpy(), np.float32, "lrn_backward")
