"""minconv as an ``onnx.backend.base.Backend``, so that ONNX's conformance suite
(``onnx.backend.test.BackendTest``) can run its node tests and models on it.

A minconv Graph has one input. The suite's node tests often feed several (Conv's
weights, Add's second operand, a shape): the backend treats the model's first
floating-point graph input as the net's input and binds the values given for the others
as constants, which the importer then folds into the layers' parameters. The outputs are
the graph's outputs in order (a net with several runs up to each of them).
"""
from collections import namedtuple

import numpy as np
from onnx.backend.base import Backend, BackendRep

from .importer import graph_from_model


class MinconvRep(BackendRep):
    """A prepared model: imported anew for each ``run`` (its extra inputs are constants)."""

    def __init__(self, model):
        self.model = model
        initializers = {t.name for t in model.graph.initializer}
        self.input_names = [i.name for i in model.graph.input if i.name not in initializers]
        self.output_names = [o.name for o in model.graph.output]

    def run(self, inputs, **kwargs):
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            inputs = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
            feeds = dict(zip(self.input_names, inputs))
        # the net's input: the first floating-point one (shapes and indices are constants)
        floats = [n for n in self.input_names if np.asarray(feeds[n]).dtype.kind == "f"]
        first = floats[0] if floats else None
        bind = {name: np.asarray(value) for name, value in feeds.items() if name != first}
        graph = graph_from_model(self.model, bind=bind, require_input=False)
        outputs = []
        for name, node in graph.onnx_outputs:
            if node is None:
                outputs.append(graph.onnx_constants[name])
            else:
                outputs.append(graph.forward(np.asarray(feeds[first]), until=node))
        fields = [f"output_{i}" for i in range(len(outputs))]
        return namedtuple("Outputs", fields)(*outputs)


class MinconvBackend(Backend):
    """The ``onnx.backend.base.Backend`` interface over minconv (CPU)."""

    @classmethod
    def is_compatible(cls, model, device="CPU", **kwargs):
        return True

    @classmethod
    def prepare(cls, model, device="CPU", **kwargs):
        import onnx
        onnx.checker.check_model(model)
        return MinconvRep(model)

    @classmethod
    def run_model(cls, model, inputs, device="CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node, inputs, device="CPU", outputs_info=None, **kwargs):
        """Run one node: it becomes a one-node model whose graph inputs are ``inputs``
        (in the order of the node's non-empty input names), run as any other model."""
        super().run_node(node, inputs, device, outputs_info, **kwargs)  # onnx.checker on the node
        return cls.run_model(_one_node_model(node, inputs, outputs_info, kwargs.get(
            "opset_version")), inputs, device)

    @classmethod
    def supports_device(cls, device):
        return device == "CPU"


def _one_node_model(node, inputs, outputs_info, opset_version):
    """A ModelProto holding only ``node``, typed from the arrays given to it."""
    from onnx import ValueInfoProto, defs, helper, shape_inference
    from onnx.helper import np_dtype_to_tensor_dtype
    arrays = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
    names = [n for n in node.input if n]
    if len(names) != len(arrays):
        raise ValueError(f"ONNX node {node.name or node.op_type!r} ({node.op_type}) reads "
                         f"{len(names)} inputs but {len(arrays)} arrays were given")
    graph_inputs = [helper.make_tensor_value_info(n, np_dtype_to_tensor_dtype(np.asarray(a).dtype),
                                                  np.shape(a)) for n, a in zip(names, arrays)]
    outputs = [n for n in node.output if n]
    graph = helper.make_graph([node], f"{node.op_type}_node", graph_inputs,
                              [ValueInfoProto(name=n) for n in outputs])
    opset = helper.make_opsetid("", int(opset_version or defs.onnx_opset_version()))
    # the outputs' types as ONNX's shape inference gives them (or as outputs_info says)
    inferred = shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[opset]))
    types = {v.name: v for v in inferred.graph.value_info}
    types.update({v.name: v for v in inferred.graph.output if v.type.ByteSize()})
    info = list(outputs_info or [])
    del graph.output[:]
    for k, n in enumerate(outputs):
        if k < len(info):
            graph.output.append(helper.make_tensor_value_info(
                n, np_dtype_to_tensor_dtype(np.dtype(info[k][0])), info[k][1]))
        elif n in types:
            graph.output.append(types[n])
        else:
            raise ValueError(f"ONNX node {node.name or node.op_type!r} ({node.op_type}): the "
                             f"type of its output {n!r} is unknown; pass outputs_info")
    return helper.make_model(graph, opset_imports=[opset])
