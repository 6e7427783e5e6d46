"""Run ONNX's conformance tests on minconv (tests/test_onnx_conformance.py) and print a
markdown table: passed / skipped / failed per operator, each skip with its reason.

    .venv/bin/python scripts/onnx_conformance_table.py > conformance.md

Every test has a CPU and a CUDA variant; minconv's ONNX backend runs on the CPU, so only
the CPU variants are counted.
"""
import collections
import os
import re
import sys

import pytest

OPERATORS = [  # first match wins: the light models before Squeeze ("squeezenet")
    (r"^test_(bvlc_alexnet|zfnet512|vgg19|resnet50|inception_v1|inception_v2|densenet121|"
     r"squeezenet|shufflenet)_", "light models"),
    (r"^test_(basic_conv|conv_)", "Conv"), (r"^test_convtranspose", "ConvTranspose"),
    (r"^test_maxpool", "MaxPool"), (r"^test_averagepool", "AveragePool"),
    (r"^test_globalaveragepool", "GlobalAveragePool"), (r"^test_globalmaxpool", "GlobalMaxPool"),
    (r"^test_lrn", "LRN"), (r"^test_batchnorm", "BatchNormalization"), (r"^test_relu", "Relu"),
    (r"^test_leakyrelu", "LeakyRelu"), (r"^test_clip", "Clip"), (r"^test_sigmoid", "Sigmoid"), (r"^test_tanh", "Tanh"),
    (r"^test_gemm", "Gemm"), (r"^test_matmul", "MatMul"), (r"^test_add", "Add"),
    (r"^test_sum", "Sum"), (r"^test_mul", "Mul"), (r"^test_concat", "Concat"),
    (r"^test_flatten", "Flatten"), (r"^test_reshape", "Reshape"),
    (r"^test_transpose", "Transpose"), (r"^test_softmax", "Softmax"),
    (r"dropout", "Dropout"), (r"^test_identity", "Identity"),
    (r"^test_constantofshape", "ConstantOfShape"),
    (r"^test_(constant_pad|edge_pad|reflect_pad|wrap_pad)", "Pad"),
    (r"^test_constant", "Constant"), (r"^test_unsqueeze", "Unsqueeze"),
    (r"^test_squeeze", "Squeeze"),
]


def operator_of(name):
    for pattern, operator in OPERATORS:
        if re.search(pattern, name):
            return operator
    return "other"


class Outcomes:
    """A pytest plugin that records the outcome of every CPU test."""

    def __init__(self):
        self.counts = collections.defaultdict(collections.Counter)
        self.reasons = collections.defaultdict(collections.Counter)
        self.failed = collections.defaultdict(list)

    def pytest_runtest_logreport(self, report):
        name = report.nodeid.rsplit("::", 1)[-1]
        if not name.endswith("_cpu"):
            return
        operator = operator_of(name)
        if report.skipped and report.when in ("setup", "call"):
            self.counts[operator]["skipped"] += 1
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else "skipped"
            self.reasons[operator][reason.removeprefix("Skipped: ")] += 1
        elif report.when == "call":
            self.counts[operator]["passed" if report.passed else "failed"] += 1
            if report.failed:
                self.failed[operator].append(name)


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outcomes = Outcomes()
    status = pytest.main(["-q", "-p", "no:cacheprovider", "-W", "ignore",
                          os.path.join(root, "tests", "test_onnx_conformance.py")],
                         plugins=[outcomes])
    order = [op for _, op in OPERATORS[1:]] + ["light models"]
    print("| operator | passed | skipped | failed | skipped because |")
    print("| --- | ---: | ---: | ---: | --- |")
    totals = collections.Counter()
    for operator in sorted(outcomes.counts, key=lambda op: order.index(op) if op in order else 99):
        c = outcomes.counts[operator]
        totals.update(c)
        reasons = "; ".join(f"{reason} ({n})" for reason, n in outcomes.reasons[operator].items())
        failed = ", ".join(outcomes.failed[operator])
        print(f"| {operator} | {c['passed']} | {c['skipped']} | {c['failed']}"
              f"{' (' + failed + ')' if failed else ''} | {reasons} |")
    print(f"| **all** | **{totals['passed']}** | **{totals['skipped']}** | "
          f"**{totals['failed']}** | |")
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
