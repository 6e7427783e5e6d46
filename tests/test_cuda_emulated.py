"""The CUDA kernels' logic on the CPU: minconv._kernels.cuda against the NumPy reference.

The CUDA source is compiled with g++ and every thread of every launch is run
in turn (tests/_cuda_emulator.py), with NumPy arrays standing in for CuPy's.
This runs everywhere there is a C++ compiler and checks the index decoding,
the bounds, the tie rule, ceil_mode, the gather of col2im and the types of the
arguments passed from Python; test_gpu.py checks the same cases on a GPU.
"""
import shutil
import subprocess

import numpy as np
import pytest

import _cuda_cases as cases
import _cuda_emulator as emulator
from minconv._kernels import cuda



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


def test_64bit_indices(emulated, monkeypatch, rng):
    """Arrays of 2**31 elements or more switch to the long long instantiations;
    lowering the threshold runs those on small inputs."""
    monkeypatch.setattr(cuda, "_INT32_LIMIT", 10)
    cases.check_im2col(emulated, _same, _same, cases.CONV_CASES[3], np.float32, rng)
    cases.check_col2im(emulated, _same, _same, cases.CONV_CASES[3], np.float64, rng)
    cases.check_maxpool(emulated, _same, _same, cases.POOL_CASES[1], np.float32, rng, ties=True)
    cases.check_lrn(emulated, _same, _same, cases.LRN_CASES[0], np.float64, rng)


def test_argument_sizes_are_checked(emulated):
    """The emulator itself: a Python int where the kernel wants an int32 is caught."""
    function = cuda._function("maxpool_backward", "float", "int", 0)
    dy, switches, dx = np.zeros(4, np.float32), np.zeros(4, np.int64), np.zeros(4, np.float32)
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
def test_source_compiles_with_nvcc(tmp_path):
    """Every instantiation that cuda.py asks NVRTC for compiles as real device code,
    without warnings. Taking each kernel's address instantiates it, as CuPy's
    name_expressions do."""
    names = [cuda._name(k, c, i) for k in cuda.KERNELS
             for c in cuda._CTYPES.values() for i in cuda._ITYPES.values()]
    source = tmp_path / "kernels.cu"
    source.write_text(cuda.SOURCE + "\nvoid* minconv_kernels[] = {"
                      + ", ".join(f"(void*)&{name}" for name in names) + "};\n")
    result = subprocess.run(["nvcc", "--ptx", "-arch=sm_75", "-Werror", "all-warnings",
                             str(source), "-o", str(tmp_path / "kernels.ptx")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "kernels.ptx").read_text().count(".entry") == len(names)
