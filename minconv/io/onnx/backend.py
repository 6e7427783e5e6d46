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
        raise NotImplementedError("minconv runs whole models (prepare/run), not single nodes")

    @classmethod
    def supports_device(cls, device):
        return device == "CPU"

