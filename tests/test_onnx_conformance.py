"""ONNX's own conformance suite on minconv: the node tests of every operator the importer
supports, and the nine light model-zoo nets shipped with the ``onnx`` package.

The suite (``onnx.backend.test.BackendTest``) feeds each test's inputs to
:class:`minconv.io.onnx.backend.MinconvBackend` and compares with ONNX's expected outputs
(rtol 1e-3 by default). Tests of other operators are not collected; tests of a supported
operator that minconv does not cover are skipped with the reason in ``SKIPS``
(``scripts/onnx_conformance_table.py`` turns the outcome into the README's table).
"""
import re
import unittest

import pytest

pytest.importorskip("onnx")

import onnx.backend.test  # noqa: E402

from minconv.io.onnx.backend import MinconvBackend  # noqa: E402

# the node tests of the supported operators, by test-name prefix (ONNX names them after
# the operator), and the light models
INCLUDE = [
    r"^test_(basic_)?conv_", r"^test_convtranspose", r"^test_maxpool_", r"^test_averagepool_",
    r"^test_globalaveragepool", r"^test_globalmaxpool", r"^test_lrn", r"^test_batchnorm_",
    r"^test_relu_", r"^test_leakyrelu", r"^test_clip", r"^test_sigmoid", r"^test_tanh", r"^test_gemm_",
    r"^test_matmul_", r"^test_add_", r"^test_sum_", r"^test_mul_", r"^test_concat_",
    r"^test_flatten_", r"^test_reshape_", r"^test_transpose_", r"^test_softmax_",
    r"^test_dropout_", r"^test_training_dropout", r"^test_identity_", r"^test_constant_",
    r"^test_constantofshape_", r"^test_unsqueeze_", r"^test_squeeze_", r"^test_constant_pad",
    r"^test_edge_pad", r"^test_reflect_pad", r"^test_wrap_pad",
    r"^test_(bvlc_alexnet|zfnet512|vgg19|resnet50|inception_v1|inception_v2|densenet121|"
    r"squeezenet|shufflenet)_",
]

# tests of other operators that the prefixes above also catch
NOT_OURS = [r"^test_convinteger", r"^test_matmulinteger", r"^test_softmax_cross_entropy",
            r"_expanded", r"^test_add_expanded"]

# pattern -> why minconv does not run it
SKIPS = {
    r"_cuda$": "minconv's ONNX backend runs on the CPU",
    r"^test_(maxpool|averagepool)_(1d|3d)|^test_convtranspose_(1d|3d)|^test_conv_.*_(1d|3d)":
        "minconv convolves and pools in 2-D only",
    r"_(u?int(8|16|32|64)|int8|uint8)(_|$)|^test_maxpool_2d_uint8":
        "integer tensors: minconv computes in float32/float64",
    r"_(bfloat16|float16)(_|$)": "half-precision tensors: minconv computes in float32/float64",
    r"^test_batchnorm_.*training_mode": "BatchNormalization is imported for inference only",
    r"^test_training_dropout(?!_zero_ratio)": "Dropout is imported for inference only "
                                              "(training draws a random mask)",
    r"^test_identity_(sequence|opt)": "sequence and optional types are not tensors",
}


def _collect():
    backend_test = onnx.backend.test.BackendTest(MinconvBackend, __name__)
    for pattern in INCLUDE:
        backend_test.include(pattern)
    cases = {}
    for case_name, case in backend_test.test_cases.items():
        for name in [n for n in dir(case) if n.startswith("test_")]:
            if not any(re.search(p, name) for p in INCLUDE) or \
                    any(re.search(p, name) for p in NOT_OURS):
                delattr(case, name)
                continue
            for pattern, reason in SKIPS.items():
                if re.search(pattern, name):
                    setattr(case, name, unittest.skip(reason)(getattr(case, name)))
                    break
        if any(n.startswith("test_") for n in dir(case)):
            cases[case_name] = case
    return cases


globals().update(_collect())
