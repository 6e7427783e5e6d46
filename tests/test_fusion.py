"""A ReLU fused into the layer below it: every convolution path and BatchNorm write
max(y, 0) as they write y, and a Graph fuses a ReLU that alone reads a Conv2D's or a
BatchNorm2D's output, with the same outputs and gradients as the ReLU run on its own."""
import numpy as np
import pytest

import minconv as mc
from conftest import assert_same_backward
from minconv._kernels import kernels_for, reference, reference_norm

F = mc.functional
runtime = mc.runtime

# (plan, kernel size, stride, padding): a geometry each path serves itself
PATH_CASES = [("columns", 3, 1, 1), ("per_image", 3, 2, 1), ("rows", 3, 1, 1),
              ("fused_rows", 3, 1, 1), ("direct", 5, 2, 2), ("pointwise", 1, 1, 0),
              ("winograd", 3, 1, 1)]


@pytest.mark.parametrize("plan, k, stride, padding", PATH_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [1, 3])
def test_every_path_applies_a_fused_relu(plan, k, stride, padding, dtype, batch):
    rng = np.random.default_rng(k * 10 + batch)
    C = 3 if plan == "direct" else 8
    x = rng.standard_normal((batch, C, 12, 11)).astype(dtype)
    W = rng.standard_normal((16, C, k, k)).astype(dtype)
    b = rng.standard_normal(16).astype(dtype)
    plain = F.conv2d(x, W, b, stride=stride, padding=padding, plan=plan)
    fused, _ = F.conv2d_planned(x, W, b, stride=stride, padding=padding, plan=plan, relu=True)
    assert (plain < 0).any() and (fused == 0).any()
    np.testing.assert_array_equal(fused, np.maximum(plain, 0))


@pytest.mark.parametrize("plan, k", [("pointwise", 1), ("per_image", 3), ("columns", 3)])
def test_products_on_the_cores_apply_a_fused_relu(plan, k):
    # products this large go to the cores' BLAS calls, which apply bias and ReLU per block
    rng = np.random.default_rng(k)
    x = rng.standard_normal((1, 64, 24, 24)).astype(np.float32)
    W = rng.standard_normal((96, 64, k, k)).astype(np.float32)
    b = rng.standard_normal(96).astype(np.float32)
    plain = F.conv2d(x, W, b, padding=k // 2, plan=plan)
    fused, _ = F.conv2d_planned(x, W, b, padding=k // 2, plan=plan, relu=True)
    np.testing.assert_array_equal(fused, np.maximum(plain, 0))


def test_grouped_convolutions_apply_a_fused_relu():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 8, 9, 9)).astype(np.float32)
    W = rng.standard_normal((12, 2, 3, 3)).astype(np.float32)
    plain = F.conv2d(x, W, None, padding=1, groups=4)
    fused, _ = F.conv2d_planned(x, W, None, padding=1, groups=4, relu=True)
    np.testing.assert_array_equal(fused, np.maximum(plain, 0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_keep_nan_through_a_fused_relu(dtype):
    # each fused ReLU is v < 0 ? 0 : v, as the ReLU layer's own kernel: NaN stays NaN
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 5, 7, 9)).astype(dtype)
    x[0, 1, 2, 3] = np.nan
    scale, shift = rng.standard_normal(5).astype(dtype), rng.standard_normal(5).astype(dtype)
    kernels = kernels_for(x)
    expected = np.maximum(reference_norm.batchnorm_apply(x, scale, shift), 0)
    for got in (kernels.batchnorm_apply(x, scale, shift, relu=True),
                reference_norm.batchnorm_apply(x, scale, shift, relu=True)):
        np.testing.assert_allclose(got, expected, rtol=1e-6)
        assert np.isnan(got[0, 1, 2, 3])
    rows = x.transpose(0, 2, 3, 1).copy()                                  # (N, H, W, C)
    for got in (kernels.channels_first(rows, relu=True),
                reference.channels_first(rows, relu=True)):
        np.testing.assert_array_equal(got, np.maximum(x, 0))
    a = rng.standard_normal((300, 64)).astype(dtype)
    m = rng.standard_normal((64, 500)).astype(dtype)
    m[3, 7] = np.nan
    bias = rng.standard_normal(300).astype(dtype)
    got = runtime.matmul(a, m, bias=bias, relu=True)
    expected = np.maximum(a @ m + bias[:, None], 0)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert np.isnan(got[:, 7]).all() and not np.isnan(np.delete(got, 7, axis=1)).any()


def small_graph(dtype="float64", seed=0):
    """conv1 -> relu1 -> bn -> relu2 -> conv2 -> relu3, a skip add(relu3, relu1) -> relu4."""
    rng = np.random.default_rng(seed)
    g = mc.nn.Graph()
    g.add("conv1", mc.nn.Conv2D(3, 6, 3, padding=1, rng=rng, dtype=dtype, init_std=0.5))
    g.add("relu1", mc.nn.ReLU())
    g.add("bn", mc.nn.BatchNorm2D(6, dtype=dtype))
    g.add("relu2", mc.nn.ReLU())
    g.add("conv2", mc.nn.Conv2D(6, 6, 1, rng=rng, dtype=dtype, init_std=0.5))
    g.add("relu3", mc.nn.ReLU())
    g.add("add", mc.nn.Add(), inputs=["relu3", "relu1"])
    g.add("relu4", mc.nn.ReLU())
    bn = g._layers["bn"]
    bn.params["gamma"] = rng.uniform(0.5, 2, 6).astype(dtype)
    bn.params["beta"] = rng.standard_normal(6).astype(dtype)
    bn.buffers["running_mean"] = rng.standard_normal(6).astype(dtype)
    bn.buffers["running_var"] = rng.uniform(0.5, 2, 6).astype(dtype)
    g.params["conv1.b"][:] = rng.standard_normal(6)
    return g


def unfused(g):
    """The same graph with fusion switched off (every ReLU runs by itself)."""
    g._fusions = lambda order, uses: {}
    g._structure_changed()
    return g


def fused_calls(g):
    """Spy on the layers' forward calls: the names that were asked for relu=True."""
    asked = []
    for name in ("conv1", "bn", "conv2", "add"):
        layer = g._layers[name]
        real = layer.forward

        def spy(x, train=False, relu=False, _real=real, _name=name):
            if relu:
                asked.append(_name)
            return _real(x, train=train, relu=relu)
        layer.forward = spy
    return asked


@pytest.mark.parametrize("train", [False, True])
def test_a_graph_fuses_relus_read_only_by_them(train):
    x = np.random.default_rng(3).standard_normal((2, 3, 7, 6))
    g, h = small_graph(), unfused(small_graph())
    asked = fused_calls(g)
    y = g.forward(x, train=train)
    # relu1 is read by bn and by add: conv1's output feeds relu1 alone, so it is fused
    assert asked == ["conv1", "bn", "conv2", "add"]
    np.testing.assert_array_equal(y, h.forward(x, train=train))
    dy = np.random.default_rng(4).standard_normal(y.shape)
    assert_same_backward(g, h, dy)


def test_a_recorded_or_requested_layer_output_is_not_fused():
    x = np.random.default_rng(5).standard_normal((1, 3, 7, 6))
    g, h = small_graph(), unfused(small_graph())
    asked = fused_calls(g)
    g.forward(x, record=["conv2"])
    assert asked == ["conv1", "bn", "add"]
    np.testing.assert_array_equal(g.outputs["conv2"], h.forward(x, until="conv2"))
    assert (g.outputs["conv2"] < 0).any()            # the convolution's own output
    asked.clear()
    np.testing.assert_array_equal(g.forward(x, until="bn"), h.forward(x, until="bn"))
    assert asked == ["conv1"]


def test_an_output_read_by_two_nodes_is_not_fused():
    rng = np.random.default_rng(6)
    g = mc.nn.Graph()
    g.add("conv", mc.nn.Conv2D(3, 4, 3, padding=1, rng=rng, dtype="float64", init_std=0.5))
    g.add("relu", mc.nn.ReLU())
    g.add("add", mc.nn.Add(), inputs=["relu", "conv"])
    x = rng.standard_normal((1, 3, 5, 5))
    asked = []
    real = g._layers["conv"].forward
    g._layers["conv"].forward = lambda x, train=False, relu=False: (
        asked.append(relu), real(x, train=train, relu=relu))[1]
    conv = real(x)
    np.testing.assert_array_equal(g.forward(x), np.maximum(conv, 0) + conv)
    assert asked == [False]


def test_an_imported_net_gives_the_same_outputs_fused():
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    W = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 3, 6, 6])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 8, 6, 6])], [numpy_helper.from_array(W, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    from minconv.io.onnx import graph_from_model
    net = graph_from_model(model)
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(net.forward(x), np.maximum(F.conv2d(x, W, padding=1), 0))
    assert net._schedule(net.output)[3] == {"conv": "relu"}   # the fused ReLUs


def small_chain(seed=0):
    """ZFNet's pattern: conv -> relu (in place) -> pool, bn -> relu, conv -> relu."""
    rng = np.random.default_rng(seed)
    net = mc.nn.Sequential(
        mc.nn.Conv2D(3, 6, 3, padding=1, rng=rng, dtype="float64", init_std=0.5),
        mc.nn.ReLU(inplace=True), mc.nn.MaxPool2D(2),
        ("bn", mc.nn.BatchNorm2D(6, dtype="float64")), mc.nn.ReLU(),
        mc.nn.Conv2D(6, 4, 1, rng=rng, dtype="float64", init_std=0.5), mc.nn.ReLU())
    net["bn"].buffers["running_mean"] = rng.standard_normal(6)
    net.params["conv1.b"][:] = rng.standard_normal(6)
    return net


def test_a_chain_fuses_the_relu_after_a_layer_and_stays_exact():
    x = np.random.default_rng(8).standard_normal((2, 3, 8, 8))
    net, plain = small_chain(), small_chain()
    plain._fuses_next = lambda layers, position, stop, record: False
    spy = []
    real = net["conv2"].forward
    net["conv2"].forward = lambda x, train=False, relu=False: (spy.append(relu),
                                                              real(x, train, relu))[1]
    y = net.forward(x, record=["conv1", "relu2"])
    assert spy == [True]
    np.testing.assert_array_equal(y, plain.forward(x, record=["conv1", "relu2"]))
    for name in ("conv1", "relu2"):
        np.testing.assert_array_equal(net.outputs[name], plain.outputs[name])
    assert (net.outputs["conv1"] < 0).any()          # recorded: conv1 ran by itself
    dy = np.random.default_rng(9).standard_normal(y.shape)
    for rule in ("grad", "deconv", "guided"):
        np.testing.assert_array_equal(net.backward(dy, rule=rule), plain.backward(dy, rule=rule))
    spy.clear()
    np.testing.assert_array_equal(net.forward(x, until="conv2"), plain.forward(x, until="conv2"))
    assert spy == [False]                             # its ReLU does not run: not fused


def test_a_subclass_whose_forward_takes_no_relu_is_run_as_it_is():
    class Doubling(mc.nn.Conv2D):
        def forward(self, x, train=False):
            return 2 * super().forward(x, train)

    rng = np.random.default_rng(10)
    net = mc.nn.Sequential(Doubling(3, 4, 3, padding=1, rng=rng, dtype="float64",
                                    init_std=0.5), mc.nn.ReLU())
    x = rng.standard_normal((1, 3, 5, 5))
    plain = F.conv2d(x, net["doubling1"].params["W"], net["doubling1"].params["b"], padding=1)
    np.testing.assert_array_equal(net.forward(x), np.maximum(2 * plain, 0))
    g = mc.nn.Graph([("conv", net["doubling1"]), ("relu", mc.nn.ReLU())])
    np.testing.assert_array_equal(g.forward(x), np.maximum(2 * plain, 0))
