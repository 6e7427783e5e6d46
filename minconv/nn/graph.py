"""Graph: a directed acyclic graph of named layers, run forward and backward as one net.

    g = Graph()
    g.add("conv1", Conv2D(64, 64, 3, padding=1))            # input: the previous node
    g.add("bn1", BatchNorm2D(64))
    g.add("add", Add(), inputs=["bn1", "input"])            # "input" is the graph's input
    g.add("relu", ReLU())                                   # the last node added is the output

An input may also be a layer inside a nested node, by its dotted path
(``inputs=["block.bn2", "conv1"]``): that inner output is recorded on the way up, and
on the way down its gradient joins the nested node's backward pass at that layer.

Forward runs the nodes in topological order. A node with several inputs (Add,
Concat) receives their outputs as a list, in the order given. An output is
dropped as soon as the last node that reads it has run.

Outside ``record`` and ``until`` a forward pass fuses what it can
(:mod:`.graph_fusion`): a ReLU into the layer below it, the Add of a residual connection
into the convolution whose output it adds, a channel concatenation joined in place by the
convolutions that write its inputs (outside training), a first layer's max pooling into
its convolution (outside training). Outputs and gradients are the same
either way (but for the order of a first layer's sums in one case the module names).

Backward visits the nodes in reverse: each node's gradient is the sum of what
its consumers sent it (a node read by k nodes receives k contributions), and
each gradient is dropped once its node has passed it on. ``start`` names the
node whose output ``dy`` belongs to; only the nodes below it take part.

The protocol is Sequential's: ``forward(x, train, until=, record=)``,
``backward(dy, rule=, start=, stop=, param_grads=, release=)``, ``params``,
``grads``, ``state_dict``, ``clear_cache``; both nest, and dotted paths reach
any layer inside (:mod:`minconv.nn.container`).
"""
from ..backend import get_array_module
from ..functional.activation import check_rule
from .base import Layer
from .container import Container, is_container, mutates_input, split_path
from .graph_fusion import (Joins, forward_added, forward_pooled, joined_concatenations,
                           pooled_convolutions, relu_fusions, residual_convolutions)

INPUT = "input"


class Graph(Container):
    """A DAG of named layers with one input (``"input"``) and one output (the last node
    added, or ``output=``). ``nodes`` may give ``(name, layer)`` or ``(name, layer, inputs)``."""

    def __init__(self, nodes=(), output=None):
        super().__init__()
        self._inputs = {}
        self._output = None
        self._structure_changed()
        for node in nodes:
            self.add(*node)
        if output is not None:
            self.output = output

    # -- building ------------------------------------------------------------------
    def add(self, name, layer, inputs=None):
        """Add node ``name`` computing ``layer`` of ``inputs`` (node names or "input";
        default: the node added last, or "input" for the first). Returns the graph."""
        if not isinstance(layer, Layer):
            raise ValueError(f"Graph.add: node {name!r} must be a minconv layer, got "
                             f"{type(layer).__name__}")
        if not isinstance(name, str) or not name or "." in name or name == INPUT:
            raise ValueError(f"Graph.add: node name {name!r} must be a non-empty string without "
                             f"'.', and not {INPUT!r}")
        if name in self._layers:
            raise ValueError(f"Graph.add: node {name!r} exists already")
        if inputs is None:
            inputs = [self.names[-1] if self._layers else INPUT]
        elif isinstance(inputs, str):
            inputs = [inputs]
        inputs = list(inputs)
        if not inputs or not all(isinstance(i, str) for i in inputs):
            raise ValueError(f"Graph.add: node {name!r} needs a list of input names, got "
                             f"{inputs!r}")
        if len(inputs) > 1 and not getattr(layer, "takes_list", False):
            raise ValueError(f"Graph.add: node {name!r} ({type(layer).__name__}) takes one "
                             f"input, got {inputs}; merge paths with Add or Concat")
        layer.name = name
        if getattr(layer, "takes_list", False):
            layer.input_names = inputs
        self._layers[name] = layer
        self._inputs[name] = inputs
        self._structure_changed()
        return self

    def inputs_of(self, name):
        """The input names of node ``name``."""
        self._child(name)
        return list(self._inputs[name])

    @property
    def output(self):
        """The node whose output the graph returns (default: the last node added)."""
        if self._output is not None:
            return self._output
        if not self._layers:
            raise ValueError("Graph: the graph has no nodes")
        return self.names[-1]

    @output.setter
    def output(self, name):
        self._child(name)
        self._output = name
        self._structure_changed()

    # -- planning ------------------------------------------------------------------
    def _structure_changed(self):
        """Forget the topological order and the schedules worked out from the edges."""
        self._plan = None
        self._schedules = {}

    def _schedule(self, head):
        """What a forward pass to node ``head`` runs, worked out once per head: the nodes
        in order, each with its layer, inputs, whether it overwrites its input, takes a
        list, is a container, and which inner outputs of it other nodes read; how many
        nodes read each output (``head`` once more: the caller); the ReLUs fused into the
        layer below them ({layer: relu}); the joined concatenations, pooled and residual
        convolutions (:mod:`.graph_fusion`)."""
        if head not in self._schedules:
            needed = self._ancestors(head)
            order = [n for n in self.order() if n in needed]
            uses = {}
            for name in order:
                for i in self._inputs[name]:
                    uses[i] = uses.get(i, 0) + 1
            uses[head] = uses.get(head, 0) + 1
            fusions = self._fusions(order, uses)
            inner_reads = self._inner_reads(needed)
            # each node's layer, inputs and what the pass asks of it, looked up once
            steps = [(name, self._layers[name], self._inputs[name],
                      mutates_input(self._layers[name]),
                      getattr(self._layers[name], "takes_list", False),
                      is_container(self._layers[name]), tuple(inner_reads.get(name, ())))
                     for name in order]
            self._schedules[head] = (
                needed, steps, uses, fusions,
                joined_concatenations(self._layers, self._inputs, order, uses, fusions),
                pooled_convolutions(self._layers, self._inputs, order, uses, fusions),
                residual_convolutions(self._layers, self._inputs, order, uses))
        return self._schedules[head]

    def _fusions(self, order, uses):
        return relu_fusions(self._layers, self._inputs, order, uses)

    def order(self):
        """Node names in topological order (insertion order where free); ValueError for
        an unknown input name or a cycle."""
        if self._plan is not None:
            return self._plan
        for name, inputs in self._inputs.items():
            for i in inputs:
                head, rest = split_path(i)
                if i != INPUT and head not in self._layers:
                    raise ValueError(f"Graph: node {name!r} takes input {i!r}, which is not a "
                                     f"node; nodes: {', '.join(self._layers)} (and {INPUT!r})")
                if rest is not None:
                    try:
                        self._split(i)
                    except ValueError as error:
                        raise ValueError(f"Graph: node {name!r} takes input {i!r}: {error}") \
                            from None
        pending = {name: {split_path(i)[0] for i in inputs if i != INPUT} for name, inputs in
                   self._inputs.items()}
        order, done = [], set()
        while len(order) < len(pending):
            ready = [n for n in self._layers if n not in done and pending[n] <= done]
            if not ready:
                stuck = [n for n in self._layers if n not in done]
                raise ValueError(f"Graph: the nodes {', '.join(stuck)} form a cycle (each waits "
                                 "for another); a graph must be acyclic")
            order.append(ready[0])
            done.add(ready[0])
        self._plan = order
        return order

    def _ancestors(self, target):
        """``target`` and every node it depends on."""
        self.order()
        needed, stack = set(), [target]
        while stack:
            name = stack.pop()
            if name in needed or name == INPUT:
                continue
            needed.add(name)
            stack.extend(split_path(i)[0] for i in self._inputs[name])
        return needed

    def _inner_reads(self, needed):
        """{node: sorted paths inside it that needed nodes read (relative to the node)},
        one pass over the edges (node names hold no '.')."""
        inner = {}
        for n in needed:
            for i in self._inputs[n]:
                node, _, path = i.partition(".")
                if path:
                    inner.setdefault(node, set()).add(path)
        return {node: sorted(paths) for node, paths in inner.items()}

    def _ordered_children(self):
        return [(name, self._layers[name]) for name in self.order()]

    def _mutates_input(self):
        return any(mutates_input(self._layers[n]) and self._inputs[n][0] == INPUT
                   for n in self._layers)

    # -- running -------------------------------------------------------------------
    def forward(self, x, train=False, until=None, record=()):
        """Run the nodes the output (or ``until``, a dotted path) depends on.

        ``record`` lists (dotted) names whose outputs are kept in ``self.outputs``,
        copied when a later in-place layer would overwrite them.
        """
        head, rest = self._split(until) if until is not None else (self.output, None)
        for path in record:
            self._split(path)
        needed, steps, uses, fusions, joins, pools, residuals = self._schedule(head)
        uses = dict(uses)  # counted down as the nodes run
        self.outputs = {}
        self._shapes = shapes = {}
        values = {INPUT: x}
        fused = set()  # ReLUs whose layer below applied them
        inference = not (train or record or until is not None)
        joined = Joins(self._layers, joins if inference else {})
        pools = pools if inference else {}
        pooled = {}  # max pooling -> its output, made by the convolution below it
        residuals = residuals if not (record or until is not None) else {}
        added = {}   # Add -> its output, made by the convolution below it
        for name, layer, inputs, mutates, takes_list, container, inner in steps:
            args = [values[i] for i in inputs]
            if mutates and uses[inputs[0]] > 1:
                args[0] = args[0].copy()  # others still read it
            relu = name in fusions and name not in record
            y = None
            if name in fused:
                y = layer.forward_fused(args[0])
            elif name in pooled:
                y = layer.forward_pooled(pooled.pop(name), args[0])
            elif name in added:
                y = layer.forward_added(added.pop(name), len(inputs))
            elif name in joins and joined.complete(name):
                y = layer.forward_joined(*joined.output(name))
            elif name in pools:
                y = forward_pooled(name, layer, pools[name], self._layers[pools[name]], args[0],
                                   relu, pooled)
            elif name in residuals:
                add, other = residuals[name]
                y = forward_added(name, layer, args[0], train, add, values.get(other),
                                  add in fusions, added)
            if y is None:
                y = self._forward_child(name, layer, args if takes_list else args[0], train,
                                        until=rest if name == head else None,
                                        record=(tuple(self._sub_record(name, record))
                                                if record else ()) + inner, relu=relu,
                                        out=joined.slice_for(name, layer, args[0]))
            if relu:
                fused.add(fusions[name])
            for i in inputs:
                uses[i] -= 1
                if uses[i] == 0:
                    del values[i]
            for path in inner:  # inner outputs that other nodes read
                values[f"{name}.{path}"] = layer.outputs[path]
            values[name] = y
            shapes[name] = (y.shape, y.dtype)
            if record or container:
                if name in record and any(mutates_input(self._layers[c]) for c in
                                          self._consumers(name) if c in needed):
                    y = y.copy()
                self._collect(name, layer, y, record)
        return values[head]

    def _consumers(self, name):
        return [n for n, inputs in self._inputs.items() if name in inputs]

    def backward(self, dy, rule="grad", start=None, stop=None, param_grads=None, release=False,
                 input_grad=True, extra=None):
        """Send ``dy`` down under ``rule``; return the gradient at the graph's input.

        start       : the (dotted) node whose output ``dy`` is the gradient of (default:
                      the output)
        stop        : the lowest node to reach: it computes only its parameter gradients,
                      nodes before it in topological order are not visited, and None is
                      returned (a training step's lowest trainable layer)
        param_grads : fill the layers' ``grads`` (default: only under rule "grad")
        release     : free each node's forward cache once it is done
        input_grad  : False: the gradient at the input is not wanted (None is returned)
        extra       : {dotted path inside: gradient}, gradients of inner outputs that layers
                      outside read; each joins the backward pass at that layer's output
        """
        check_rule(rule)
        head, rest = self._split(start) if start is not None else (self.output, None)
        needed = self._ancestors(head)
        order = [n for n in self.order() if n in needed]
        stop_head, stop_rest = (None, None)
        if stop is not None:
            stop_head, stop_rest = self._split(stop)
            if stop_head not in needed:
                raise ValueError(f"backward: stop layer {stop!r} does not lie below start "
                                 f"layer {start or self.output!r}")
            order = order[order.index(stop_head):]
        want_input = input_grad and stop is None
        grads, owned = {head: dy}, set()
        for path, g in (extra or {}).items():
            _add_grad(grads, owned, path, g)
        for name in reversed(order):
            inner = {key[len(name) + 1:]: grads.pop(key) for key in list(grads)
                     if key.startswith(name + ".")}
            if name not in grads and not inner:
                continue  # no signal reaches this node from ``start``
            layer, inputs = self._layers[name], self._inputs[name]
            if name in grads:
                g = grads.pop(name)
            else:  # only inner outputs are read: nothing comes down from the node's output
                shape, dtype = self._shapes[name]
                g = get_array_module(next(iter(inner.values()))).zeros(shape, dtype)
            at_stop = name == stop_head
            need_dx = not at_stop and (want_input or any(i != INPUT for i in inputs))
            dx = self._backward_child(name, layer, g, rule, param_grads, need_dx, release,
                                      start=rest if name == head else None,
                                      stop=stop_rest if at_stop else None, extra=inner or None)
            del g
            if at_stop or dx is None:
                continue
            dxs = dx if getattr(layer, "takes_list", False) else [dx]
            for i, d in zip(inputs, dxs):
                if i == INPUT and not want_input:
                    continue
                _add_grad(grads, owned, i, d)
        if not want_input:
            return None
        if INPUT not in grads:
            raise ValueError(f"backward: no path leads from {start or self.output!r} down to "
                             "the graph's input")
        return grads[INPUT]

    def __repr__(self):
        lines = []
        for name in self.order() if self._layers else []:
            inputs = self._inputs[name]
            src = "" if len(inputs) == 1 and inputs[0] == self._previous(name) else \
                f" <- {', '.join(inputs)}"
            lines.append(f"  ({name}): {self._layers[name]!r}{src}")
        return "Graph(\n" + "\n".join(lines) + "\n)"

    def _previous(self, name):
        names = self.names
        position = names.index(name)
        return names[position - 1] if position else INPUT


def _add_grad(grads, owned, key, d):
    """grads[key] += d, copying first where the array may be shared (a sum hands the same
    dy to each of its inputs)."""
    if key not in grads:
        grads[key] = d
    elif key in owned:
        grads[key] += d
    else:
        grads[key] = grads[key] + d
        owned.add(key)


__all__ = ["Graph", "INPUT", "is_container", "split_path"]
