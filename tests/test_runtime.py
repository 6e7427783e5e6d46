"""minconv.runtime: the one home of process-wide state, and results that do not depend on it.

Holding one result while computing another never changes the first (scratch memory is
never a result); a forked child and four Python threads at once compute what one
thread computes serially.
"""
import multiprocessing
import os
import threading

import numpy as np
import pytest

import minconv as mc
from conftest import rel_error

F = mc.functional
runtime = mc.runtime


def test_settings_read_back_what_configure_set():
    before = runtime.configure(threads=1, workspace_mb=3)
    try:
        now = runtime.settings()
        assert now["threads"] == 1 and now["workspace_mb"] == 3
        assert F.workspace_limit() == 3 * 2 ** 20
        assert now["omp_wait_policy"] == os.environ.get("OMP_WAIT_POLICY")  # set on import
        assert set(before) == set(now)
    finally:
        runtime.configure(threads=before["threads"], workspace_mb=before["workspace_mb"])
    assert runtime.settings()["threads"] == before["threads"]
    assert runtime.settings()["workspace_mb"] == before["workspace_mb"]


@pytest.mark.parametrize("kwargs,match", [
    (dict(threads=0), "threads must be a positive int"),
    (dict(threads=1.5), "threads must be a positive int"),
    (dict(workspace_mb=0), "positive byte count"),
    (dict(isa="sse9"), "isa must be one of"),
    (dict(malloc="huge"), "malloc must be one of"),
])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        runtime.configure(**kwargs)


def test_the_isa_cap_reads_back():
    if not (mc._kernels.CPU_BUILT and hasattr(mc._kernels.cpu, "set_isa_cap")):
        pytest.skip("the compiled kernels (with an instruction-set cap) are not built")
    best = runtime.isa()
    try:
        runtime.configure(isa="none")
        assert runtime.settings()["isa"] == "none"
        assert not mc._kernels.cpu.fused_kernels(np.float32)
    finally:
        runtime.configure(isa=best)
    assert runtime.isa() == best


def test_malloc_policy_is_kept_by_the_runtime():
    runtime.configure(malloc="keep")   # what the trainer asks for; idempotent
    assert runtime.settings()["malloc"] in ("keep", "default")  # "default" off glibc


# ---------------------------------------------------------------- no aliasing through scratch

@pytest.mark.parametrize("plan", F.PLANS)
@pytest.mark.parametrize("N", [1, 3])
def test_two_results_in_a_row_do_not_alias(plan, N, rng):
    # float32 at stride 1 takes the tiles where there are any: the flipped-convolution dx
    # is computed into scratch memory, the case that must be copied out
    x1, x2 = (rng.standard_normal((N, 8, 7, 7)).astype(np.float32) for _ in range(2))
    W = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    dy1, dy2 = (rng.standard_normal((N, 16, 7, 7)).astype(np.float32) for _ in range(2))
    results = []
    for x, dy in ((x1, dy1), (x2, dy2)):
        y = F.conv2d(x, W, None, 1, 1, plan=plan)
        dx, dW, db = F.conv2d_backward(dy, x, W, 1, 1, plan=plan)
        up = F.conv_transpose2d(dy, W, None, 1, 1, plan=plan)
        results.append((y, dx, dW, up))
    first = [a.copy() for a in results[0]]
    for a, b in zip(results[0], results[1]):
        assert not np.shares_memory(a, b)
    for a, kept in zip(results[0], first):                  # the first results unchanged
        np.testing.assert_array_equal(a, kept)
    again = F.conv2d_backward(dy1, x1, W, 1, 1, plan=plan)[0]
    assert rel_error(results[0][1], again) <= 1e-6


# ---------------------------------------------------------------- fork and threads

def _work(seed):
    """Convolutions, their gradients and a zfnet_mini forward pass from one seed."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((6, 8, 14, 14)).astype(np.float32)
    W = rng.standard_normal((12, 8, 5, 5)).astype(np.float32)
    y = F.conv2d(x, W, None, 1, 2)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, dW, db = F.conv2d_backward(dy, x, W, 1, 2)
    net = mc.models.zfnet_mini(rng=np.random.default_rng(seed))
    logits = net.forward(rng.standard_normal((4, 1, 28, 28)).astype(np.float32))
    return y, dx, dW, db, logits


def _close(got, want):
    for a, b in zip(got, want):
        assert a.shape == b.shape and rel_error(a, b) <= 1e-5


def _child(queue, seed):
    try:
        queue.put(("ok", _work(seed)))
    except Exception as error:  # report, do not hang the parent
        queue.put(("error", repr(error)))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                    reason="this platform has no fork start method")
def test_a_forked_child_computes_the_serial_results():
    serial = _work(3)          # the parent's pool and scratch exist before the fork
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child, args=(queue, 3))
    child.start()
    status, result = queue.get(timeout=300)
    child.join(timeout=60)
    assert status == "ok", result
    assert child.exitcode == 0
    _close(result, serial)


def test_four_threads_at_once_compute_the_serial_results():
    seeds = [11, 12, 13, 14]
    serial = {seed: _work(seed) for seed in seeds}
    results, errors = {}, []
    start = threading.Barrier(len(seeds))

    def run(seed):
        try:
            start.wait()
            results[seed] = _work(seed)
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for seed in seeds:
        _close(results[seed], serial[seed])


# ---------------------------------------------------------------- an OpenMP runtime loaded first

def _import_minconv_after(preamble):
    """stderr of a fresh Python that runs ``preamble`` and then imports minconv, with no
    OMP_WAIT_POLICY of its own."""
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", preamble + "\nimport minconv"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_an_openmp_runtime_loaded_before_minconv_is_named():
    import ctypes.util
    gomp = ctypes.util.find_library("gomp")
    if gomp is None or not os.path.exists("/proc/self/maps"):
        pytest.skip("no libgomp to load first, or no /proc/self/maps to see it by")
    stderr = _import_minconv_after(f"import ctypes; ctypes.CDLL({gomp!r})")
    assert "OpenMP runtime was loaded before minconv" in stderr
    assert "OMP_WAIT_POLICY=PASSIVE" in stderr
    assert "OpenMP" not in _import_minconv_after("")


# ---------------------------------------------------------------- OpenBLAS's idle threads

def _blas_setting_after(preamble, env_value=None):
    """(OPENBLAS_THREAD_TIMEOUT, settings()["blas_threads_sleep"]) in a fresh Python that
    runs ``preamble``, then imports minconv."""
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if env_value is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = env_value
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    code = (preamble + "\nimport os, minconv\nprint(os.environ.get('OPENBLAS_THREAD_TIMEOUT'),"
            " minconv.runtime.settings()['blas_threads_sleep'])")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return tuple(done.stdout.split())


def test_openblas_threads_sleep_when_minconv_comes_before_numpy():
    """minconv sets OPENBLAS_THREAD_TIMEOUT=4 before NumPy loads OpenBLAS; after NumPy it
    is too late (OpenBLAS read its setting then), and a setting of the user's stands."""
    assert _blas_setting_after("") == ("4", "True")
    assert _blas_setting_after("import numpy") == ("None", "False")
    assert _blas_setting_after("import numpy", env_value="8") == ("8", "True")
    assert _blas_setting_after("", env_value="28") == ("28", "False")
