"""The CUDA kernels' logic on the CPU: minconv._kernels.cuda against the NumPy reference.

The CUDA source is compiled with g++ and every thread of every launch is run
in turn (tests/_cuda_emulator.py), with NumPy arrays standing in for CuPy's.
This runs everywhere there is a C++ compiler and checks the index decoding,
the bounds, the tie rule, ceil_mode, the gather of col2im and the types of the
arguments passed from Python; test_gpu.py checks the same cases on a GPU.
"""
import shutil
import subprocess
import types

import numpy as np
import pytest

import _cuda_cases as cases
import _cuda_emulator as emulator
from minconv._kernels import cuda, cuda_avgpool, cuda_module, cuda_norm


def _same(a):
    return a


@pytest.fixture
def emulated(monkeypatch):
    """minconv._kernels.cuda running on the emulator, with a small launch so that
    the grid-stride loops take several steps."""
    if emulator.compiler() is None:
        pytest.skip("no C++ compiler (g++) to emulate the CUDA kernels")
    fake = emulator.fake_cupy()
    monkeypatch.setattr(cuda, "_cupy", lambda: fake)
    monkeypatch.setattr(cuda, "BLOCK", 32)
    monkeypatch.setattr(cuda, "MAX_GRID", 3)
    cuda._module.cache_clear()
    cuda._function.cache_clear()
    yield cuda
    cuda._module.cache_clear()
    cuda._function.cache_clear()


@pytest.fixture
def emulated_layers(emulated, monkeypatch):
    """cuda_norm and cuda_avgpool on the emulator (they launch through cuda.py's settings),
    with 5 partial sums per channel so that a thread's walk crosses rows and images."""
    monkeypatch.setattr(cuda_norm, "PARTIALS", 5)
    cuda_module.clear_cache()
    yield types.SimpleNamespace(norm=cuda_norm, avgpool=cuda_avgpool)
    cuda_module.clear_cache()


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.mark.parametrize("dtype", cases.DTYPES)
@pytest.mark.parametrize("case", cases.CONV_CASES, ids=cases.case_id)
def test_im2col(emulated, case, dtype, rng):
    cases.check_im2col(emulated, _same, _same, case, dtype, rng)


@pytest.mark.parametrize("dtype", cases.DTYPES)
@pytest.mark.parametrize("case", cases.CONV_CASES, ids=cases.case_id)
def test_col2im(emulated, case, dtype, rng):
    cases.check_col2im(emulated, _same, _same, case, dtype, rng)


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("dtype", cases.DTYPES)
@pytest.mark.parametrize("case", cases.POOL_CASES, ids=cases.case_id)
def test_maxpool(emulated, case, dtype, ties, rng):
    cases.check_maxpool(emulated, _same, _same, case, dtype, rng, ties)


@pytest.mark.parametrize("dtype", cases.DTYPES)
@pytest.mark.parametrize("case", cases.LRN_CASES, ids=cases.case_id)
def test_lrn(emulated, case, dtype, rng):
    cases.check_lrn(emulated, _same, _same, case, dtype, rng)


@pytest.mark.parametrize("partials", [5, 64], ids=["5-partials", "64-partials"])
@pytest.mark.parametrize("dtype", cases.DTYPES)
@pytest.mark.parametrize("x_shape", cases.BN_CASES, ids=cases.case_id)
def test_batchnorm(emulated_layers, monkeypatch, x_shape, dtype, partials, rng):
    monkeypatch.setattr(cuda_norm, "PARTIALS", partials)  # fewer or more than H*W
    cases.check_batchnorm(emulated_layers.norm, _same, _same, x_shape, dtype, rng)


@pytest.mark.parametrize("dtype", cases.DTYPES)
@pytest.mark.parametrize("case", cases.AVGPOOL_CASES, ids=cases.case_id)
def test_avgpool(emulated_layers, case, dtype, rng):
    cases.check_avgpool(emulated_layers.avgpool, _same, _same, case, dtype, rng)


@pytest.mark.parametrize("dtype", cases.DTYPES)
@pytest.mark.parametrize("case", cases.ADAPTIVE_CASES, ids=cases.case_id)
def test_adaptive_avgpool(emulated_layers, case, dtype, rng):
    cases.check_adaptive_avgpool(emulated_layers.avgpool, _same, _same, case, dtype, rng)


@pytest.mark.parametrize("dtype", cases.DTYPES)
def test_layer_ops_through_the_cuda_namespace(emulated_layers, monkeypatch, dtype, rng):
    """minconv.functional's batch norm and average pooling, dispatched as for a CuPy array
    (the namespace kernels_for builds for one), against the same ops on NumPy arrays."""
    from minconv import _kernels, functional as F
    from minconv.functional import avgpool, norm
    ops = _kernels._namespace(cuda, cuda_norm, cuda_avgpool, _kernels.reference)
    for module in (cuda_norm, cuda_avgpool):
        for name in module.__all__:
            assert getattr(ops, name) is getattr(module, name), name
    numpy_ops = _kernels.kernels_for

    def dispatch(a):  # arrays tagged "on the device" get the CUDA namespace
        return ops if isinstance(a, _Device) else numpy_ops(a)
    monkeypatch.setattr(norm, "kernels_for", dispatch)
    monkeypatch.setattr(avgpool, "kernels_for", dispatch)

    def close(got, expected, dtype, what):
        cases._close_to_scale(np.asarray(got), expected, dtype, what)
    cases.check_layer_ops(F, lambda a: np.asarray(a).view(_Device), close, dtype, rng)


class _Device(np.ndarray):
    """A NumPy array standing for a device array in the dispatch test."""


def test_layer_kernels_take_the_references_signatures():
    import inspect

    from minconv._kernels import reference_avgpool, reference_norm
    for twin, ref in ((cuda_norm, reference_norm), (cuda_avgpool, reference_avgpool)):
        for name in twin.__all__:
            assert (list(inspect.signature(getattr(twin, name)).parameters)
                    == list(inspect.signature(getattr(ref, name)).parameters)), name


def test_layer_kernels_empty_and_bad_input(emulated_layers):
    mean, var = cuda_norm.batchnorm_stats(np.zeros((0, 3, 4, 4), np.float32))
    assert mean.shape == var.shape == (3,)
    y = cuda_avgpool.avgpool_forward(np.zeros((0, 2, 4, 4), np.float64), (2, 2), (2, 2), (0, 0),
                                     (2, 2), True)
    assert y.shape == (0, 2, 2, 2)
    with pytest.raises(ValueError, match="float32 or float64"):
        cuda_norm.batchnorm_stats(np.zeros((1, 2, 3, 3), np.int32))
    with pytest.raises(ValueError, match="scale must have shape"):
        cuda_norm.batchnorm_apply(np.zeros((1, 2, 3, 3), np.float32), np.ones(3), np.ones(2))
    with pytest.raises(ValueError, match="does not match"):
        cuda_norm.batchnorm_backward(np.zeros((1, 2, 3, 3), np.float32),
                                     np.zeros((1, 2, 3, 4), np.float32), np.zeros(2),
                                     np.ones(2), np.ones(2), True)
    with pytest.raises(ValueError, match="does not match"):
        cuda_avgpool.adaptive_avgpool_backward(np.zeros((1, 2, 3, 3), np.float32), (1, 3, 5, 5))


def test_64bit_indices(emulated, monkeypatch, rng):
    """Arrays of 2**31 elements or more switch to the long long instantiations;
    lowering the threshold runs those on small inputs."""
    monkeypatch.setattr(cuda, "_INT32_LIMIT", 10)
    cases.check_im2col(emulated, _same, _same, cases.CONV_CASES[3], np.float32, rng)
    cases.check_col2im(emulated, _same, _same, cases.CONV_CASES[3], np.float64, rng)
    cases.check_maxpool(emulated, _same, _same, cases.POOL_CASES[1], np.float32, rng, ties=True)
    cases.check_lrn(emulated, _same, _same, cases.LRN_CASES[0], np.float64, rng)
    cuda_module.clear_cache()
    cases.check_batchnorm(cuda_norm, _same, _same, cases.BN_CASES[1], np.float32, rng)
    cases.check_avgpool(cuda_avgpool, _same, _same, cases.AVGPOOL_CASES[2], np.float64, rng)
    cases.check_adaptive_avgpool(cuda_avgpool, _same, _same, cases.ADAPTIVE_CASES[2],
                                 np.float32, rng)


def test_argument_sizes_are_checked(emulated):
    """The emulator itself: a Python int where the kernel wants an int32 is caught."""
    function = cuda._function("maxpool_backward", "float", "int", 0)
    dy, switches, dx = np.zeros(4, np.float32), np.zeros(4, np.int32), np.zeros(4, np.float32)
    with pytest.raises(TypeError, match="argument 3"):
        function((1,), (32,), (dy, switches, dx, np.int64(1), np.int32(4), np.int32(4)))
    with pytest.raises(AssertionError, match="NumPy scalars"):
        function((1,), (32,), (dy, switches, dx, 1, 4, 4))


def test_errors(emulated):
    with pytest.raises(ValueError, match="float32 or float64"):
        cuda.im2col(np.zeros((1, 1, 3, 3), np.int32), 2, 2, (1, 1), (0, 0), (1, 1))
    with pytest.raises(ValueError, match="no output"):
        cuda.im2col(np.zeros((1, 1, 3, 3), np.float32), 5, 5, (1, 1), (0, 0), (1, 1))
    with pytest.raises(ValueError, match="expected"):
        cuda.col2im(np.zeros((4, 5), np.float32), (1, 1, 3, 3), 2, 2, (1, 1), (0, 0), (1, 1))
    with pytest.raises(ValueError, match="do not match"):
        cuda.maxpool_backward(np.zeros((1, 2, 2, 2), np.float32),
                              np.zeros((1, 2, 2, 2), np.int64), (1, 3, 4, 4))


def test_empty_batch(emulated):
    cols = cuda.im2col(np.zeros((0, 2, 5, 5), np.float32), 3, 3, (1, 1), (0, 0), (1, 1))
    assert cols.shape == (18, 0)
    y, s = cuda.maxpool_forward(np.zeros((0, 2, 5, 5), np.float64), 2, 2, (2, 2), (0, 0), False)
    assert y.shape == s.shape == (0, 2, 2, 2)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no CUDA toolkit (nvcc) installed")
@pytest.mark.parametrize("module", [cuda, cuda_norm, cuda_avgpool],
                         ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_source_compiles_with_nvcc(tmp_path, module):
    """Every instantiation that a CUDA kernel file asks NVRTC for compiles as real device
    code, without warnings. Taking each kernel's address instantiates it, as CuPy's
    name_expressions do."""
    names = [cuda._name(k, c, i) for k in module.KERNELS
             for c in cuda._CTYPES.values() for i in cuda._ITYPES.values()]
    source = tmp_path / "kernels.cu"
    source.write_text(module.SOURCE + "\nvoid* minconv_kernels[] = {"
                      + ", ".join(f"(void*)&{name}" for name in names) + "};\n")
    result = subprocess.run(["nvcc", "--ptx", "-arch=sm_75", "-Werror", "all-warnings",
                             str(source), "-o", str(tmp_path / "kernels.ptx")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "kernels.ptx").read_text().count(".entry") == len(names)
