"""Build the Cython kernels of minconv; the package metadata lives in pyproject.toml.

OpenMP is used where the compiler has it: a tiny OpenMP program is compiled and
linked first, and without it the kernels build serially (``prange`` then runs
as a plain loop). Only portable flags: no ``-march=native``, so a wheel built
here runs on any CPU of its architecture. The tiles of ``_im2row_matmul.h``
(AVX-512) and ``_im2row_matmul_avx2.h`` (AVX2+FMA) are compiled for their
instruction set function by function, and each runs only where the CPU reports it.
"""
import os
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = ("cpu_conv", "cpu_tiles", "cpu_direct", "cpu_layout", "cpu_pool", "cpu_lrn",
           "cpu_activation", "cpu_norm", "cpu_avgpool", "cpu_winograd", "cpu_team",
           "cpu_pointwise")
TILE_HEADERS = [f"minconv/_kernels/{name}.h"
                for name in ("_tiles", "_blocks", "_im2row_matmul", "_im2row_matmul_avx2",
                             "_direct_avx512", "_direct_avx2", "_direct_filters_avx2")]
DIRECTIVES = {"language_level": 3, "boundscheck": False, "wraparound": False,
              "cdivision": True, "initializedcheck": False}

OPENMP_PROBE = r"""
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return n > 0 ? 0 : 1;
}
"""


def _compiles(compiler, compile_args, link_args):
    """True when ``compiler`` builds and links the OpenMP probe with these flags."""
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "probe.c")
        with open(source, "w") as f:
            f.write(OPENMP_PROBE)
        try:
            objects = compiler.compile([source], output_dir=tmp, extra_postargs=compile_args)
            compiler.link_executable(objects, "probe", output_dir=tmp,
                                     extra_postargs=link_args)
        except Exception:  # CompileError, LinkError, or a missing tool
            return False
    return True


class BuildExt(build_ext):
    """build_ext that adds optimisation flags and OpenMP when the compiler supports them."""

    def build_extensions(self):
        if self.compiler.compiler_type == "msvc":
            base, openmp, link = ["/O2"], ["/openmp"], []
        else:
            # -fno-math-errno lets sqrt vectorise; nothing here reads errno
            base, openmp, link = ["-O3", "-fno-math-errno"], ["-fopenmp"], ["-fopenmp"]
        use_openmp = os.environ.get("MINCONV_NO_OPENMP") is None and _compiles(
            self.compiler, openmp, link)
        if use_openmp:
            print("minconv: building the kernels with OpenMP")
        else:
            print("minconv: OpenMP not available; building the kernels serially",
                  file=sys.stderr)
        for ext in self.extensions:
            ext.extra_compile_args = base + (openmp if use_openmp else [])
            ext.extra_link_args = link if use_openmp else []
        super().build_extensions()


extensions = [
    Extension(f"minconv._kernels.{name}", [f"minconv/_kernels/{name}.pyx"],
              include_dirs=[np.get_include(), "minconv/_kernels"],
              depends={"cpu_tiles": TILE_HEADERS,
                       "cpu_direct": TILE_HEADERS + ["minconv/_kernels/_direct_maxpool.h",
                                                     "minconv/_kernels/_maxpool.h",
                                                     "minconv/_kernels/_maxpool_values.h"],
                       "cpu_winograd": ["minconv/_kernels/_winograd.h"],
                       "cpu_norm": ["minconv/_kernels/_row_sum.h"],
                       "cpu_avgpool": ["minconv/_kernels/_row_sum.h"],
                       "cpu_pointwise": TILE_HEADERS + ["minconv/_kernels/_pointwise.h",
                                                        "minconv/_kernels/_shifted.h"],
                       "cpu_pool": ["minconv/_kernels/_maxpool.h",
                                    "minconv/_kernels/_maxpool_values.h"]}.get(name, []),
              define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")])
    for name in KERNELS
]

setup(
    ext_modules=cythonize(extensions, compiler_directives=DIRECTIVES),
    cmdclass={"build_ext": BuildExt},
)
