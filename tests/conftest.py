"""Shared helpers: finite-difference gradients, error measures, kink-free inputs.

Gradient checks follow CS231n's ``eval_numerical_gradient_array``: the scalar
``sum(f(x) * dy)`` with a *random* upstream gradient ``dy`` (a uniform one hides
transposition bugs), differentiated by centred differences in float64.
"""
import contextlib
import sys
import types

import numpy as np
import pytest

# torchvision's compiled operators need a CUDA build of torch and fail to register with
# the CPU torch here ("operator torchvision::nms does not exist", raised while
# torchvision._meta_registrations loads). Its model definitions are pure Python: keep
# that one module from loading and they import.
sys.modules.setdefault("torchvision._meta_registrations",
                       types.ModuleType("torchvision._meta_registrations"))

import minconv._kernels as kernels_module
from minconv._kernels import reference

EPS = 1e-6          # finite-difference step: truncation ~EPS^2, round-off ~1e-16/EPS
GRAD_TOL = 1e-6     # max error of an analytic gradient, relative to its largest entry


def numerical_gradient(f, x, dy, eps=EPS):
    """d/dx of ``sum(f() * dy)`` by centred differences, perturbing ``x`` in place.

    ``f`` takes no arguments and reads ``x`` (an input or a parameter array), so the
    same helper differentiates with respect to inputs, weights and biases alike.
    """
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)  # views: writes reach x itself
    assert np.shares_memory(flat, x), "numerical_gradient needs a contiguous array"
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = np.sum(f() * dy)
        flat[i] = old - eps
        minus = np.sum(f() * dy)
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def rel_error(actual, expected):
    """max |actual - expected|, relative to the largest magnitude of ``expected``."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(np.abs(expected).max(initial=0.0), 1e-30)
    return np.abs(actual - expected).max(initial=0.0) / scale


def assert_grad_close(analytic, numeric, tol=GRAD_TOL, what="gradient"):
    err = rel_error(analytic, numeric)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.0e}"
    # a check of zeros against zeros proves nothing: the probe must have moved something
    assert np.abs(numeric).max() > 0, f"{what}: numerical gradient is identically zero"


def distinct(shape, rng, low=-1.0, high=1.0, dtype=np.float64):
    """All-different values (a shuffled linspace): max pooling has no ties, and the
    gap between values (>> EPS) keeps finite differences off the switch boundaries."""
    values = np.linspace(low, high, int(np.prod(shape)))
    rng.shuffle(values)
    return values.reshape(shape).astype(dtype)


def away_from_zero(shape, rng, dtype=np.float64):
    """Values with |v| in [0.2, 1.2]: finite differences never straddle ReLU's kink."""
    signs = rng.choice([-1.0, 1.0], size=shape)
    return (signs * rng.uniform(0.2, 1.2, size=shape)).astype(dtype)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(params=["reference", "compiled"])
def kernels(request, monkeypatch):
    """Run a test on the NumPy reference kernels and again on the compiled twins."""
    if request.param == "reference":
        monkeypatch.setattr(kernels_module, "cpu", kernels_module._namespace(reference))
    elif not kernels_module.CPU_BUILT:
        pytest.skip("Cython kernels not built (python setup.py build_ext --inplace)")
    return request.param


@contextlib.contextmanager
def tiles_at(isa):
    """The block with the compiled tiles capped at ``isa`` ("avx512", "avx2"), the cap
    restored after; the test is skipped, with its reason, where this CPU lacks ``isa``."""
    from minconv._kernels import cpu_tiles
    before = cpu_tiles.set_isa_cap(isa)
    try:
        if cpu_tiles.isa() != isa:
            pytest.skip(f"this CPU has no {isa}")
        yield
    finally:
        cpu_tiles.set_isa_cap(before)


def spy_on(graph, kind, method, counts=None):
    """The names of the nodes of ``graph`` of class ``kind`` whose ``method`` runs (and whose
    result ``counts``, when given), in the order they run; a list that fills as they do."""
    ran = []
    for name, layer in graph.items():
        if isinstance(layer, kind):
            real = getattr(layer, method)

            def spy(*args, real=real, name=name, **kwargs):
                result = real(*args, **kwargs)
                if counts is None or counts(result):
                    ran.append(name)
                return result
            setattr(layer, method, spy)
    return ran


def assert_same_backward(g, h, dy):
    """g and h, each after a forward pass, send dy down to the same dx under the three rules
    and fill the same parameter gradients under "grad", bit for bit."""
    for rule in ("grad", "deconv", "guided"):
        np.testing.assert_array_equal(g.backward(dy, rule=rule), h.backward(dy, rule=rule),
                                      err_msg=rule)
        if rule == "grad":
            for key, grad in h.grads.items():
                np.testing.assert_array_equal(g.grads[key], grad, err_msg=key)
