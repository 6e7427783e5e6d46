"""``summary``: per layer of any net (Sequential, Graph, nested), its output shape,
parameters, multiply-adds and receptive field."""
import sys

import numpy as np

from .. import nn
from ..nn.fields import layer_fields

_STDOUT = object()  # sys.stdout as it is at call time (tests and notebooks replace it)


def _macs(layer, shape_out):
    """Multiply-adds per image: Ho*Wo*F * (C/groups)*kh*kw for a conv, in*out for a linear
    layer, nothing for the rest (their cost is memory traffic, not arithmetic)."""
    if isinstance(layer, nn.Conv2D):
        kh, kw = layer.kernel_size
        return int(np.prod(shape_out)) * (layer.in_channels // layer.groups) * kh * kw
    if isinstance(layer, nn.Linear):
        return layer.in_features * layer.out_features
    return 0


def _plan(layer, in_shape):
    """The plan of a convolution layer: the one its last forward pass ran, else the
    planner's choice for one image of ``in_shape`` (C, H, W) in the weights' dtype."""
    if not isinstance(layer, (nn.Conv2D, nn.ConvTranspose2D)):
        return None
    if getattr(layer, "plan", None) is not None:
        return str(layer.plan)
    if not isinstance(layer, nn.Conv2D) or in_shape is None or len(in_shape) != 3:
        return None
    from ..functional import choose_plan
    W = layer.params["W"]
    x = np.empty((1,) + tuple(in_shape), dtype=W.dtype)
    return str(choose_plan(x, W, layer.stride, layer.padding, layer.dilation, layer.groups))


def summary(net, input_shape, file=_STDOUT):
    """Per-layer table: output shape, parameters, multiply-adds and receptive field.

    ``input_shape`` is (C, H, W) (or (N, C, H, W); N is ignored: figures are per image).
    Layers inside containers appear under their dotted paths, in running order. The
    receptive field of a unit follows :func:`minconv.geometry.receptive_field_step`, for a
    layer of kernel k (dilated span k' = d(k-1)+1), stride s and padding p:

        size_out  = size_in + (k' - 1) * jump_in
        jump_out  = jump_in * s                  (input pixels between neighbouring units)
        start_out = start_in - p * jump_in       (first pixel seen by unit 0; < 0 in the padding)

    starting from size 1, jump 1, start 0: the same numbers as ``vis.receptive_fields``
    and the HTML report. ``plan`` is the path a convolution's last forward pass ran
    (``layer.plan``), else the one the planner picks on this machine for its input
    (``mc.functional.choose_plan``). Where paths meet
    (Add, Concat) the field is the union of theirs, the largest. Units after Flatten see
    the whole input (size/jump/start None). Prints the table to ``file`` (None: no
    printing) and returns one dict per layer plus a ``total`` row.
    """
    shape = tuple(int(s) for s in input_shape)[-3:]
    if len(shape) != 3:
        raise ValueError(f"summary: input_shape must be (C, H, W), got {tuple(input_shape)}")
    shape0 = shape
    try:
        fields = layer_fields(net, shape)
    except ValueError as error:
        raise ValueError(f"summary: {error}") from None
    rows = []
    for name, f in fields.items():
        layer, out = f["layer"], f["shape"]
        rf = None if f["flat"] or f["field"] is None else f["field"][0]
        params = int(sum(v.size for v in layer.params.values()))
        rows.append(dict(name=name, type=type(layer).__name__, output_shape=out, params=params,
                         macs=_macs(layer, out),
                         rf_size=None if rf is None else rf[0],
                         rf_jump=None if rf is None else rf[1],
                         rf_start=None if rf is None else rf[2],
                         plan=_plan(layer, shape0 if f["inputs"][0] == "input"
                                    else fields[f["inputs"][0]]["shape"])))
        shape = out
    rows.append(dict(name="total", type="", output_shape=shape,
                     params=sum(r["params"] for r in rows), macs=sum(r["macs"] for r in rows),
                     rf_size=None, rf_jump=None, rf_start=None, plan=None))
    if file is not None:
        print(format_summary(rows), file=sys.stdout if file is _STDOUT else file)
    return rows


def format_summary(rows):
    """The rows of :func:`summary` as a fixed-width text table."""
    width = max([9] + [len(r["name"]) + 2 for r in rows])
    kind = max([11] + [len(r["type"]) + 2 for r in rows])
    head = f"{'layer':<{width}}{'type':<{kind}}{'output':>16}{'params':>13}{'MACs':>16}" \
           f"{'RF size':>9}{'jump':>6}{'start':>7}  plan"
    lines = [head, "-" * len(head)]
    for r in rows:
        if r["name"] == "total":
            lines.append("-" * len(head))
        shape = "x".join(str(s) for s in r["output_shape"])
        if r["rf_size"] is None:
            rf = f"{'-':>9}{'-':>6}{'-':>7}"
        else:
            rf = f"{r['rf_size']:>9}{r['rf_jump']:>6}{r['rf_start']:>7}"
        plan = f"  {r['plan']}" if r.get("plan") else ""
        lines.append(f"{r['name']:<{width}}{r['type']:<{kind}}{shape:>16}{r['params']:>13,}"
                     f"{r['macs']:>16,}{rf}{plan}")
    return "\n".join(lines)
