"""ONNX in and out: hand-built graphs against ONNX's reference evaluator, round trips
through onnxruntime, the deconvnet on an imported graph against PyTorch autograd, and
the errors for what minconv cannot import.

The graphs cover the attribute combinations ONNX's conformance suite tests thinly:
asymmetric pads with strides, SAME_LOWER/SAME_UPPER, Gemm with alpha and beta, average
pooling in ceil mode with and without the padding counted, transposed convolutions with
output_shape and asymmetric pads.
"""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import minconv as mc  # noqa: E402
from minconv.io.onnx import graph_from_model  # noqa: E402


def make_model(op_type, x_shape, initializers=(), opset=17, **attributes):
    """A one-node model: input "x" (float32), weights as initializers, output "y"."""
    names = ["x"] + [name for name, _ in initializers]
    node = helper.make_node(op_type, names, ["y"], name="node", **attributes)
    graph = helper.make_graph(
        [node], "test", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_empty_tensor_value_info("y")],
        [numpy_helper.from_array(value, name) for name, value in initializers])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def run_onnxruntime(model, x):
    model.ir_version = min(model.ir_version, 8)
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def assert_matches_reference(model, x, rtol=1e-5, atol=1e-6, onnx_reference=True,
                             onnxruntime=True):
    """minconv's output equals onnxruntime's and ReferenceEvaluator's (each unless switched
    off for a case that reference cannot run or gets wrong)."""
    net = graph_from_model(model)
    actual = net.forward(x)
    references = [run_onnxruntime(model, x)] if onnxruntime else []
    if onnx_reference:
        references.append(ReferenceEvaluator(model).run(None, {"x": x})[0])
    for expected in references:
        assert actual.shape == expected.shape
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)
    return net


@pytest.fixture
def x(rng):
    return rng.standard_normal((2, 3, 9, 10)).astype(np.float32)


def weights(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("attributes", [
    dict(pads=[1, 0, 2, 3], strides=[2, 3]),                  # asymmetric pads with strides
    dict(auto_pad="SAME_UPPER", strides=[2, 2]),
    dict(auto_pad="SAME_LOWER", strides=[2, 3]),
    dict(auto_pad="SAME_LOWER", dilations=[2, 1]),
    dict(auto_pad="VALID", strides=[3, 2]),
    dict(pads=[2, 1, 0, 1], dilations=[2, 2], group=3),
])
def test_conv(attributes, x, rng):
    group = attributes.get("group", 1)
    W, b = weights(rng, 6, 3 // group, 3, 4), weights(rng, 6)
    model = make_model("Conv", x.shape, [("W", W), ("b", b)], **attributes)
    # onnxruntime refuses SAME padding with dilation
    assert_matches_reference(model, x, onnxruntime=not ("dilations" in attributes and
                                                         "auto_pad" in attributes))


@pytest.mark.parametrize("attributes", [
    dict(pads=[1, 0, 2, 1], strides=[2, 3]),
    dict(strides=[2, 2], output_padding=[1, 0]),
    dict(strides=[3, 2], output_shape=[29, 23]),   # 2 and 1 past the full output
    dict(auto_pad="SAME_UPPER", strides=[2, 2]),
    dict(pads=[1, 1, 1, 1], strides=[2, 2], group=3),
    dict(pads=[1, 1, 1, 1], strides=[2, 2], dilations=[2, 1], group=3),
])
def test_conv_transpose(attributes, x, rng):
    group = attributes.get("group", 1)
    W, b = weights(rng, 3, 6 // group, 3, 4), weights(rng, 6)
    model = make_model("ConvTranspose", x.shape, [("W", W), ("b", b)], **attributes)
    # onnx.reference fails on grouped transposed convolutions
    assert_matches_reference(model, x, onnx_reference=group == 1)


POOLS = [
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 2, 1]),
    dict(kernel_shape=[3, 2], strides=[2, 3], pads=[1, 0, 1, 1], ceil_mode=1),
    dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_LOWER"),
    dict(kernel_shape=[2, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
    dict(kernel_shape=[3, 3], strides=[3, 3], pads=[1, 1, 1, 1], ceil_mode=1),
    dict(kernel_shape=[2, 2], strides=[2, 2]),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
]


@pytest.mark.parametrize("attributes", POOLS + [
    dict(kernel_shape=[2, 2], strides=[1, 2], dilations=[2, 2], pads=[1, 0, 0, 1])])
def test_max_pool(attributes, x):
    # onnx.reference's MaxPool makes SAME_LOWER one row short (onnxruntime and the
    # AveragePool of onnx.reference agree on ceil(9 / 2) = 5)
    assert_matches_reference(make_model("MaxPool", x.shape, **attributes), x,
                             onnx_reference=attributes.get("auto_pad") != "SAME_LOWER")


@pytest.mark.parametrize("attributes", POOLS)
@pytest.mark.parametrize("include", [0, 1])
def test_average_pool(attributes, include, x):
    model = make_model("AveragePool", x.shape, count_include_pad=include, **attributes)
    assert_matches_reference(model, x)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_pools_on_plain_windows_are_minconvs_own_layers(op, x):
    # symmetric pads of at most half the window run minconv's compiled pooling layers;
    # other windows the padded (tap by tap) ones
    plain = graph_from_model(make_model(op, x.shape, **POOLS[-1]))
    padded = graph_from_model(make_model(op, x.shape, **POOLS[0]))
    own = {"MaxPool": mc.nn.MaxPool2D, "AveragePool": mc.nn.AvgPool2D}[op]
    assert [type(layer) for layer in plain._layers.values()] == [own]
    assert not isinstance(next(iter(padded._layers.values())), own)


def test_max_pool_indices(x):
    node = helper.make_node("MaxPool", ["x"], ["y", "i"], name="pool", kernel_shape=[3, 3],
                            strides=[2, 2], pads=[1, 0, 2, 1])
    graph = helper.make_graph([node], "t", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, x.shape)], [helper.make_empty_tensor_value_info("y"),
                                            helper.make_empty_tensor_value_info("i")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    y, i = ReferenceEvaluator(model).run(None, {"x": x})
    net = graph_from_model(model)
    np.testing.assert_array_equal(net.forward(x), y)
    np.testing.assert_array_equal(net.forward(x, until="pool_indices"), i)


@pytest.mark.parametrize("alpha, beta, transA, transB, c_shape", [
    (0.5, 2.0, 0, 1, (4,)), (1.5, -0.5, 1, 0, (1, 4)), (2.0, 0.25, 1, 1, (3, 4)),
    (1.0, 1.0, 0, 1, (4,))])                             # the plain one becomes Linear
def test_gemm(alpha, beta, transA, transB, c_shape, rng):
    A = weights(rng, *((5, 3) if transA else (3, 5)))
    B = weights(rng, *((4, 5) if transB else (5, 4)))
    model = make_model("Gemm", A.shape, [("B", B), ("C", weights(rng, *c_shape))], alpha=alpha,
                       beta=beta, transA=transA, transB=transB)
    net = assert_matches_reference(model, A)
    kind = "Linear" if (alpha, beta, transA) == (1.0, 1.0, 0) else "Gemm"
    assert type(net["node"]).__name__ == kind


def test_shape_subgraph_folds_for_any_batch(rng):
    """PyTorch's x.view(x.size(0), -1): Shape-Gather-Unsqueeze-Concat-Reshape, batch symbolic."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(
                 np.array(0, np.int64))),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["y"], name="flat")]
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 3, 4, 5])], [helper.make_empty_tensor_value_info("y")],
        [numpy_helper.from_array(np.array([0], np.int64), "axes"),
         numpy_helper.from_array(np.array([-1], np.int64), "minus1")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    net = graph_from_model(model)
    assert net.names == ["flat"]                      # everything else was folded
    for n in (1, 4):
        x = weights(rng, n, 3, 4, 5)
        np.testing.assert_array_equal(net.forward(x), x.reshape(n, -1))


def small_graph():
    """A Graph with the layers of the families: conv-BN-ReLU, a residual Add, Concat,
    average and max pooling, global pooling, Linear."""
    nn = mc.nn
    g = nn.Graph()
    g.add("conv1", nn.Conv2D(3, 8, 3, padding=1, bias=False))
    g.add("bn1", nn.BatchNorm2D(8))
    g.add("relu1", nn.ReLU())
    g.add("conv2", nn.Conv2D(8, 8, 3, padding=1, groups=2))
    g.add("add", nn.Add(), inputs=["conv2", "relu1"])
    g.add("pool", nn.MaxPool2D(3, 2, 1, ceil_mode=True))
    g.add("branch", nn.Conv2D(8, 4, 1), inputs=["pool"])
    g.add("avg", nn.AvgPool2D(3, 1, 1, count_include_pad=False), inputs=["pool"])
    g.add("cat", nn.Concat(), inputs=["branch", "avg"])
    g.add("tanh", nn.Tanh())
    g.add("gap", nn.AdaptiveAvgPool2D(1))
    g.add("flatten", nn.Flatten())
    g.add("fc", nn.Linear(12, 5))
    rng = np.random.default_rng(0)
    bn = g["bn1"]
    bn.params["gamma"] = rng.uniform(0.5, 1.5, 8).astype(np.float32)
    bn.params["beta"] = rng.standard_normal(8).astype(np.float32)
    bn.buffers["running_mean"] = rng.standard_normal(8).astype(np.float32)
    bn.buffers["running_var"] = rng.uniform(0.5, 2, 8).astype(np.float32)
    for layer in (g["conv1"], g["conv2"], g["branch"], g["fc"]):
        layer.params["W"] = (rng.standard_normal(layer.params["W"].shape) * 0.3).astype(
            np.float32)
    return g


@pytest.mark.parametrize("make", [small_graph, lambda: mc.models.zfnet_mini(num_classes=10)],
                         ids=["graph", "zfnet_mini"])
def test_round_trip(make, tmp_path, rng):
    net = make()
    shape = (2, 3, 16, 16) if isinstance(net, mc.nn.Graph) else (2, 1, 28, 28)
    x = rng.standard_normal(shape).astype(np.float32)
    expected = net.forward(x)
    path = tmp_path / "net.onnx"
    mc.io.save_onnx(net, path, shape)
    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, rtol=1e-4,
                               atol=1e-5)
    again = mc.io.load_onnx(path)
    np.testing.assert_allclose(again.forward(x), expected, rtol=1e-5, atol=1e-6)
    for name in net.names:  # dropout comes back as dropout, with its rate
        if isinstance(net[name], mc.nn.Dropout):
            assert isinstance(again[name], mc.nn.Dropout) and again[name].p == net[name].p
    x3 = rng.standard_normal((3,) + shape[1:]).astype(np.float32)  # the batch is symbolic
    np.testing.assert_allclose(session.run(None, {"input": x3})[0], net.forward(x3),
                               rtol=1e-4, atol=1e-5)


def test_deconvnet_on_imported_graph_matches_torch(tmp_path, rng):
    """relu* through an imported conv-pool net equals PyTorch autograd with ReLU's
    backward replaced by relu(dy), on the same weights."""
    torch = pytest.importorskip("torch")
    net = mc.models.zfnet_mini(num_classes=10)
    path = tmp_path / "zfnet_mini.onnx"
    mc.io.save_onnx(net, path, (1, 1, 28, 28))
    graph = mc.io.load_onnx(path)
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    y = graph.forward(x, until="conv5")
    dy = np.maximum(rng.standard_normal(y.shape), 0).astype(np.float32)
    dx = graph.backward(dy, rule="deconv", start="conv5")

    class ReLUStar(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            return a.clamp(min=0)

        @staticmethod
        def backward(ctx, g):
            return g.clamp(min=0)

    T = torch.nn.functional
    p = {k: torch.from_numpy(v) for k, v in net.params.items()}
    t = torch.from_numpy(x).requires_grad_()
    h = t
    for i in (1, 2):
        h = ReLUStar.apply(T.conv2d(h, p[f"conv{i}.W"], p[f"conv{i}.b"], padding=2))
        h = T.max_pool2d(h, 3, 2, ceil_mode=True)
        h = h  # LRN passes the signal through unchanged under relu*: modelled as identity
        h = T.local_response_norm(h, 5, 1e-4, 0.75, 2.0).detach() + h - h.detach()
    for i in (3, 4):
        h = ReLUStar.apply(T.conv2d(h, p[f"conv{i}.W"], p[f"conv{i}.b"], padding=1))
    h = T.conv2d(h, p["conv5.W"], p["conv5.b"], padding=1)
    np.testing.assert_allclose(h.detach().numpy(), y, rtol=1e-4, atol=1e-5)
    h.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(dx, t.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_relus_rectify_fresh_arrays_in_place_and_nothing_else(rng):
    """A Relu overwrites its input only where that is a fresh array: after a Conv read
    also by an Add (the graph copies it first), a Gemm, an Add; not after the graph
    input, an Identity (a view of the Conv's output, which the Add still reads) or a
    Sigmoid (which keeps its output for its backward pass). Values, the recorded Conv
    output and the input gradient are the same as with every ReLU out of place."""
    W = weights(rng, 3, 3, 3, 3)
    nodes = [helper.make_node("Relu", ["x"], ["r0"], name="relu_input"),
             helper.make_node("Conv", ["r0", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r1"], name="relu_conv"),
             helper.make_node("Identity", ["c"], ["i"], name="identity"),
             helper.make_node("Relu", ["i"], ["r2"], name="relu_identity"),
             helper.make_node("Add", ["r1", "c"], ["a"], name="add"),
             helper.make_node("Add", ["a", "r2"], ["a2"], name="add2"),
             helper.make_node("Relu", ["a2"], ["r3"], name="relu_add"),
             helper.make_node("Sigmoid", ["r3"], ["n"], name="sigmoid"),
             helper.make_node("Relu", ["n"], ["y"], name="relu_sigmoid")]
    graph = helper.make_graph(
        nodes, "fan-out", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 6, 7])],
        [helper.make_empty_tensor_value_info("y")], [numpy_helper.from_array(W, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = weights(rng, 2, 3, 6, 7)
    net = assert_matches_reference(model, x)
    in_place = {name for name in net.names if getattr(net[name], "inplace", False)}
    assert in_place == {"relu_conv", "relu_add"}
    x_before = x.copy()
    y = net.forward(x, record=("conv",))
    np.testing.assert_array_equal(x, x_before)
    conv = net.outputs["conv"]
    assert (conv < 0).any()  # recorded before relu_conv rectified it
    dy = weights(rng, *y.shape)
    dx = net.backward(dy)
    for name in in_place:
        net[name].inplace = False
    np.testing.assert_array_equal(net.forward(x, record=("conv",)), y)
    np.testing.assert_array_equal(net.outputs["conv"], conv)
    np.testing.assert_allclose(net.backward(dy), dx, rtol=1e-6, atol=1e-7)


def test_fold_batchnorm_folds_each_normalisation_that_alone_reads_a_conv(rng):
    """``fold_batchnorm``: Conv -> BatchNormalization pairs become one Conv (a bias added
    where the Conv had none); a BatchNormalization whose Conv output is also read by an
    Add stays; the outputs equal onnxruntime's and the unfolded graph's."""
    C = 4
    def bn(name):
        return [numpy_helper.from_array(rng.uniform(0.5, 1.5, C).astype(np.float32), f"{name}_s"),
                numpy_helper.from_array(rng.standard_normal(C).astype(np.float32), f"{name}_b"),
                numpy_helper.from_array(rng.standard_normal(C).astype(np.float32), f"{name}_m"),
                numpy_helper.from_array(rng.uniform(0.5, 2, C).astype(np.float32), f"{name}_v")]
    inits = [numpy_helper.from_array(weights(rng, C, 3, 3, 3), "W1"),
             numpy_helper.from_array(weights(rng, C), "b1"),
             numpy_helper.from_array(weights(rng, C, C, 3, 3), "W2"),
             numpy_helper.from_array(weights(rng, C, C, 1, 1), "W3")] + bn("bn1") + bn("bn2") \
        + bn("bn3")
    nodes = [helper.make_node("Conv", ["x", "W1", "b1"], ["c1"], name="conv1", pads=[1] * 4),
             helper.make_node("BatchNormalization", ["c1"] + [f"bn1_{k}" for k in "sbmv"],
                              ["n1"], name="bn1", epsilon=1e-3),
             helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "W2"], ["c2"], name="conv2", pads=[1] * 4),
             helper.make_node("BatchNormalization", ["c2"] + [f"bn2_{k}" for k in "sbmv"],
                              ["n2"], name="bn2"),
             helper.make_node("Conv", ["n2", "W3"], ["c3"], name="conv3"),
             helper.make_node("BatchNormalization", ["c3"] + [f"bn3_{k}" for k in "sbmv"],
                              ["n3"], name="bn3"),
             helper.make_node("Add", ["n3", "c3"], ["y"], name="add")]
    graph = helper.make_graph(
        nodes, "conv-bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 9])],
        [helper.make_empty_tensor_value_info("y")], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    x = weights(rng, 2, 3, 8, 9)
    plain = graph_from_model(model)
    folded = graph_from_model(model, fold_batchnorm=True)
    assert folded.folded == {"bn1": "conv1", "bn2": "conv2"}
    assert "bn1" not in folded.names and "bn2" not in folded.names and "bn3" in folded.names
    assert "b" in folded["conv2"].params and "b" not in plain["conv2"].params
    assert plain.folded == {}
    y = folded.forward(x)  # the folded weights round differently in float32
    np.testing.assert_allclose(y, plain.forward(x), rtol=1e-4, atol=2e-4)
    np.testing.assert_allclose(y, run_onnxruntime(model, x), rtol=1e-4, atol=2e-4)
    assert folded["relu1"].inplace  # the Relu now reads the Conv's fresh output


def test_fold_batchnorm_folds_per_channel_mul_and_add_into_the_layer_before(rng):
    """DenseNet's export: BatchNormalization, then Mul and Add by per-channel constants.
    With ``fold_batchnorm`` both go into the normalisation, as does a second
    BatchNormalization after them (and a Mul into a Conv); a Mul by a constant that is not
    per channel (one value per column) stays a node; outputs equal the unfolded graph's
    and onnxruntime's."""
    C = 5
    inits = [numpy_helper.from_array(rng.uniform(0.5, 1.5, C).astype(np.float32), "s"),
             numpy_helper.from_array(rng.standard_normal(C).astype(np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal(C).astype(np.float32), "m"),
             numpy_helper.from_array(rng.uniform(0.5, 2, C).astype(np.float32), "v"),
             numpy_helper.from_array(weights(rng, 1, C, 1, 1), "mul_c"),
             numpy_helper.from_array(weights(rng, C, 1, 1), "add_c"),
             numpy_helper.from_array(weights(rng, 7), "cols"),
             numpy_helper.from_array(weights(rng, C, C, 1, 1), "W"),
             numpy_helper.from_array(np.float32(1.5), "two")]
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("BatchNormalization", ["r", "s", "b", "m", "v"], ["n"], name="bn"),
             helper.make_node("Mul", ["n", "mul_c"], ["p"], name="mul"),
             helper.make_node("Add", ["add_c", "p"], ["q"], name="add"),
             helper.make_node("BatchNormalization", ["q", "s", "b", "m", "v"], ["q2"],
                              name="bn2"),
             helper.make_node("Mul", ["q2", "cols"], ["u"], name="by_column"),
             helper.make_node("Conv", ["u", "W"], ["c"], name="conv"),
             helper.make_node("Mul", ["c", "two"], ["y"], name="double")]
    graph = helper.make_graph(
        nodes, "affine", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, C, 6, 7])],
        [helper.make_empty_tensor_value_info("y")], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    x = weights(rng, 2, C, 6, 7)
    plain = graph_from_model(model)
    folded = graph_from_model(model, fold_batchnorm=True)
    assert folded.folded == {"mul": "bn", "add": "bn", "bn2": "bn", "double": "conv"}
    assert isinstance(folded["by_column"], mc.nn.arith.Scale)
    y = folded.forward(x)
    np.testing.assert_allclose(y, plain.forward(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y, run_onnxruntime(model, x), rtol=1e-4, atol=1e-4)


# -- bad input ------------------------------------------------------------------

def test_unsupported_operator_names_operator_and_node(x):
    model = make_model("Erf", x.shape)
    with pytest.raises(ValueError, match=r"Erf node 'node'.*operator 'Erf'"):
        graph_from_model(model)


def test_unsupported_attribute_names_it(x, rng):
    model = make_model("LRN", x.shape, size=4)
    with pytest.raises(ValueError, match=r"LRN node 'node': attribute 'size'"):
        graph_from_model(model)
    model = make_model("Conv", x.shape, [("W", weights(rng, 2, 3, 3, 3))], kernel_shape=[3, 3],
                       unknown_flag=1)
    with pytest.raises(ValueError, match=r"Conv node 'node': attribute 'unknown_flag'"):
        graph_from_model(model)


def test_truncated_and_corrupt_files(tmp_path, x):
    good = tmp_path / "good.onnx"
    onnx.save(make_model("Relu", x.shape), str(good))
    data = good.read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.onnx"):
        mc.io.load_onnx(truncated)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01not a model" * 10)
    with pytest.raises(ValueError, match="garbage.onnx"):
        mc.io.load_onnx(garbage)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        mc.io.load_onnx(tmp_path / "missing.onnx")


def test_two_graph_inputs_is_an_error(x):
    node = helper.make_node("Add", ["a", "b"], ["y"])
    graph = helper.make_graph([node], "t", [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, x.shape) for n in ("a", "b")],
        [helper.make_empty_tensor_value_info("y")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ValueError, match=r"2 inputs \(a, b\).*exactly one"):
        graph_from_model(model)


def test_save_onnx_refuses_a_layer_without_onnx_form(tmp_path):
    class Unknown(mc.nn.Identity):
        pass
    net = mc.nn.Sequential(mc.nn.Conv2D(1, 2, 3), Unknown())
    with pytest.raises(ValueError, match="no ONNX form"):
        mc.io.save_onnx(net, tmp_path / "x.onnx", (1, 1, 5, 5))


def test_minconv_imports_without_onnx(tmp_path):
    """The core package and mc.io load without onnx and safetensors; using them says what
    to install."""
    import subprocess
    import sys
    code = (
        "import sys\n"
        "for name in ('onnx', 'onnxruntime', 'safetensors', 'safetensors.numpy'):\n"
        "    sys.modules[name] = None\n"
        "import minconv as mc\n"
        "net = mc.models.zfnet_mini(num_classes=10)\n"
        "for call in (lambda: mc.io.load_onnx('x.onnx'),\n"
        "             lambda: mc.io.save_onnx(net, 'x.onnx', (1, 1, 28, 28)),\n"
        "             lambda: mc.io.save_safetensors(net, 'x.safetensors')):\n"
        "    try:\n"
        "        call()\n"
        "    except ImportError as error:\n"
        "        assert 'minconv[onnx]' in str(error), error\n"
        "    else:\n"
        "        raise AssertionError('no ImportError')\n"
        "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True)
    assert result.stdout.strip() == "ok", result.stderr


def test_imported_parameters_train(tmp_path, rng):
    """Imported weights are ordinary writable parameters: an SGD step changes them."""
    net = mc.models.zfnet_mini(num_classes=10)
    path = tmp_path / "mini.onnx"
    mc.io.save_onnx(net, path, (1, 1, 28, 28))
    graph = mc.io.load_onnx(path)
    x = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
    loss = mc.nn.SoftmaxCrossEntropy()
    loss.forward(graph.forward(x, train=True), np.array([0, 1, 2, 3]))
    graph.backward(loss.backward())
    before = graph.params["fc8.W"].copy()
    for key, value in graph.params.items():
        value -= 0.1 * graph.grads[key]
    assert not np.array_equal(graph.params["fc8.W"], before)


def test_reshape_to_the_fixed_batch_size_takes_any_batch(rng):
    """Caffe2's exports reshape to (1, C*H*W) for their batch of 1: the same at batch 1,
    and other batch sizes work too."""
    model = make_model("Reshape", (1, 3, 4, 5), [("shape", np.array([1, 60], np.int64))])
    x = weights(rng, 1, 3, 4, 5)
    net = assert_matches_reference(model, x)
    x3 = weights(rng, 3, 3, 4, 5)
    np.testing.assert_array_equal(net.forward(x3), x3.reshape(3, 60))


def test_round_trip_of_the_onnx_layers(tmp_path, rng):
    """The layers ONNX import adds (padded and dilated pooling, Pad, Transpose, Reshape,
    Scale, Shift, LeakyReLU, Clip, Gemm, Softmax) export too: onnxruntime agrees, and so does
    the net imported again."""
    from minconv.nn import arith, tensor_ops, window_pool
    nn = mc.nn
    g = nn.Graph()
    g.add("pad", tensor_ops.Pad(((0, 0), (0, 0), (1, 2), (2, 0)), "reflect"))
    g.add("conv", nn.Conv2D(3, 6, 3, groups=3))
    g.add("leaky", arith.LeakyReLU(0.1))
    g.add("relu6", arith.Clip(0.0, 0.5))
    g.add("maxpool", window_pool.PaddedMaxPool2D((3, 3), (2, 2), (0, 1, 1, 1), (1, 1), True))
    g.add("unused", nn.ReLU(), inputs=["relu6"])  # read by nothing: not exported
    g.add("avgpool", window_pool.PaddedAvgPool2D((2, 2), (1, 1), (1, 0, 0, 1), (2, 2)),
          inputs=["maxpool"])
    g.add("gmax", window_pool.GlobalMaxPool(), inputs=["avgpool"])
    g.add("scale", arith.Scale(rng.standard_normal((1, 6, 1, 1)).astype(np.float32)))
    g.add("shuffle1", tensor_ops.Reshape((0, 2, 3, 1, 1)))  # a channel shuffle
    g.add("shuffle2", tensor_ops.Transpose((0, 2, 1, 3, 4)))
    g.add("flat", tensor_ops.Flatten(1))
    g.add("shift", arith.Shift(rng.standard_normal(6).astype(np.float32)))
    g.add("gemm", arith.Gemm(rng.standard_normal((4, 6)).astype(np.float32),
                             rng.standard_normal((1, 4)).astype(np.float32), alpha=0.5,
                             beta=2.0, transB=True))
    g.add("softmax", arith.Softmax(1, flatten=True))
    x = rng.standard_normal((2, 3, 11, 12)).astype(np.float32)
    expected = g.forward(x)
    path = tmp_path / "layers.onnx"
    mc.io.save_onnx(g, path, x.shape)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(mc.io.load_onnx(path).forward(x), expected, rtol=1e-6,
                               atol=1e-7)


def test_torchvision_resnet18_exported_by_torch(tmp_path, rng):
    """A net exported by torch.onnx (its node names sanitised: '/layer1/layer1.0/conv1/Conv'
    becomes 'layer1_layer1_0_conv1_Conv') computes what torch does, at any batch size."""
    import warnings
    torch = pytest.importorskip("torch")
    import torchvision
    model = torchvision.models.resnet18(num_classes=10).eval()
    path = tmp_path / "resnet18.onnx"
    x = torch.from_numpy(rng.standard_normal((2, 3, 64, 64)).astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, x, str(path), dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "N"}})
    net = mc.io.load_onnx(path)
    assert "layer1_layer1_0_conv1_Conv" in net.names
    for batch in (2, 3):
        xb = torch.from_numpy(rng.standard_normal((batch, 3, 64, 64)).astype(np.float32))
        with torch.no_grad():
            expected = model(xb).numpy()
        np.testing.assert_allclose(net.forward(xb.numpy()), expected, rtol=1e-4, atol=1e-5)


def test_weights_in_external_data_files(tmp_path, rng):
    """Large models keep their weights beside the .onnx file (external data): read too."""
    net = mc.models.zfnet_mini(num_classes=10)
    path = tmp_path / "mini.onnx"
    model = mc.io.save_onnx(net, path, (1, 1, 28, 28))
    external = tmp_path / "external" / "mini.onnx"
    external.parent.mkdir()
    onnx.save(model, str(external), save_as_external_data=True, all_tensors_to_one_file=True,
              location="mini.weights", size_threshold=1024)
    assert (external.parent / "mini.weights").stat().st_size > 1e6
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(mc.io.load_onnx(external).forward(x), net.forward(x))
    (external.parent / "mini.weights").unlink()
    with pytest.raises((ValueError, FileNotFoundError), match="mini"):
        mc.io.load_onnx(external)


def test_backend_run_node_matches_the_reference_evaluator(x, rng):
    from minconv.io.onnx.backend import MinconvBackend
    W = rng.standard_normal((3, x.shape[1], 3, 3)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 0, 1, 2], strides=[2, 1])
    (y,) = MinconvBackend.run_node(node, [x, W])
    model = helper.make_model(helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape),
                      helper.make_tensor_value_info("W", TensorProto.FLOAT, W.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]))
    (expected,) = ReferenceEvaluator(model).run(None, {"x": x, "W": W})
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="reads 2 inputs but 1"):
        MinconvBackend.run_node(node, [x])
