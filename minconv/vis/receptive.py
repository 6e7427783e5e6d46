"""Receptive fields: which input pixels each unit of a layer sees.

Along one axis, a unit at position i of a layer sees the input pixels

    start + i * jump  ...  start + i * jump + size - 1

computed from the layer stack with :func:`minconv.geometry.receptive_field_step`
(the one definition, shared with ``models.summary``). For a layer with kernel k,
stride s, padding p and dilation d (k_eff = d*(k - 1) + 1), from the field
(size, jump, start) of its input:

    size'  = size + (k_eff - 1) * jump
    jump'  = jump * s
    start' = start - p * jump          (start: the first pixel seen by unit 0)

ReLU, LRN (across channels) and dropout keep the field; the input itself has
(1, 1, 0). A fully connected layer sees the union of the fields of its input map.
``start`` may be negative and ``start + size`` may pass the border: the padding.
"""
from dataclasses import dataclass

import numpy as np

from ..backend import get_array_module
from ..geometry import conv_output_size, pair, pool_output_size, receptive_field_step
from ..nn import LRN, Conv2D, Dropout, Flatten, Linear, MaxPool2D, ReLU
from ..nn.fields import container_outputs, layer_fields
from ._common import check_layer, check_net, is_plain


@dataclass(frozen=True)
class ReceptiveField:
    """The input region seen by the units of one layer, per axis (rows, columns).

    size  : (h, w) pixels seen by one unit
    jump  : (h, w) input pixels between neighbouring units
    start : (h, w) input coordinate of the first pixel seen by unit (0, 0)
    output_shape : (C, Ho, Wo) or (F,) when the input shape was given, else None
    """
    layer: str
    size: tuple
    jump: tuple
    start: tuple
    output_shape: tuple = None

    @property
    def center(self):
        """Input coordinate of the centre of unit (0, 0)'s field."""
        return tuple(s + (z - 1) / 2 for s, z in zip(self.start, self.size))

    def box(self, position=(0, 0), image_shape=None):
        """(top, left, bottom, right), half-open, of the unit at ``position``; clipped
        to an image of ``image_shape`` (..., H, W) when given."""
        if self.size is None:  # a fully connected layer of a net seen without input shape
            if image_shape is None:
                raise ValueError(f"the field of {self.layer!r} is the whole input: give "
                                 "image_shape (or the input shape to receptive_fields)")
            return (0, 0) + tuple(image_shape[-2:])
        h, w = (0, 0) if position is None else (int(position[0]), int(position[1]))
        top = self.start[0] + h * self.jump[0]
        left = self.start[1] + w * self.jump[1]
        bottom, right = top + self.size[0], left + self.size[1]
        if image_shape is not None:
            H, W = image_shape[-2:]
            top, left = max(top, 0), max(left, 0)
            bottom, right = min(bottom, H), min(right, W)
        return top, left, bottom, right

    def crop(self, image, position=(0, 0), pad=False, fill=0.0):
        """The patch of ``image`` (..., H, W) seen by the unit at ``position``.

        Clipped at the border; with ``pad`` the patch is placed, aligned, on a canvas
        of the field's size (at most the image's) filled with ``fill``.
        """
        H, W = image.shape[-2:]
        top, left, bottom, right = self.box(position, image.shape)
        if bottom <= top or right <= left:
            raise ValueError(f"crop: the field of {self.layer!r} at {tuple(position)} lies "
                             f"outside the {H}x{W} image")
        patch = image[..., top:bottom, left:right]
        if not pad:
            return patch
        th, tw = min(self.size[0], H), min(self.size[1], W)
        utop, uleft, _, _ = self.box(position)
        # where the clipped patch sits on a canvas that holds the whole field
        oh = min(max(top - utop, 0), th - patch.shape[-2])
        ow = min(max(left - uleft, 0), tw - patch.shape[-1])
        xp = get_array_module(image)
        canvas = xp.full(image.shape[:-2] + (th, tw), fill, dtype=image.dtype)
        canvas[..., oh:oh + patch.shape[-2], ow:ow + patch.shape[-1]] = patch
        return canvas


def receptive_fields(net, input_shape=None):
    """The field of every layer of ``net``: {name: ReceptiveField}, in order.

    ``input_shape`` (C, H, W) or (N, C, H, W), when given, adds output shapes and
    gives fully connected layers a finite field.
    """
    check_net(net, "receptive_fields")
    if not is_plain(net):
        return _graph_fields(net, input_shape)
    size, jump, start = (1, 1), (1, 1), (0, 0)
    shape = None if input_shape is None else tuple(int(s) for s in input_shape)[-3:]
    fields, flat = {}, None
    for name, layer in net.items():
        if isinstance(layer, (Conv2D, MaxPool2D)):
            if flat is not None:
                raise ValueError(f"receptive_fields: {name!r} follows a flattened layer")
            if isinstance(layer, Conv2D):
                k, s, p, d = layer.kernel_size, layer.stride, layer.padding, layer.dilation
            else:
                k = pair(layer.kernel_size, f"{name}: kernel_size")
                s = pair(layer.stride, f"{name}: stride")
                p, d = pair(layer.padding, f"{name}: padding"), (1, 1)
            size, jump, start = zip(*(receptive_field_step(field, *window) for field, window
                                      in zip(zip(size, jump, start), zip(k, s, p, d))))
            if shape is not None:
                if isinstance(layer, Conv2D):
                    hw = [conv_output_size(n, ki, si, pi, di)
                          for n, ki, si, pi, di in zip(shape[1:], k, s, p, d)]
                    shape = (layer.out_channels, *hw)
                else:
                    hw = [pool_output_size(n, ki, si, pi, layer.ceil_mode)
                          for n, ki, si, pi in zip(shape[1:], k, s, p)]
                    shape = (shape[0], *hw)
        elif isinstance(layer, (Flatten, Linear)):
            if flat is None:  # the union of the fields of the whole map
                if shape is not None and len(shape) == 3:
                    size = tuple(z + (n - 1) * j for z, n, j in zip(size, shape[1:], jump))
                    flat = (size, start)
                else:
                    flat = (None, start)
                size, start = flat
                jump = size
            if shape is not None:
                shape = (int(np.prod(shape)),) if isinstance(layer, Flatten) \
                    else (layer.out_features,)
        elif not isinstance(layer, (ReLU, LRN, Dropout)):
            raise ValueError(f"receptive_fields: layer {name!r} ({type(layer).__name__}) "
                             "has no receptive-field rule")
        fields[name] = ReceptiveField(name, size, jump, start, shape)
    return fields


def _graph_fields(net, input_shape):
    """:func:`receptive_fields` of a net with nested containers or paths that meet (the
    union of the paths' fields: the largest), by :func:`minconv.nn.fields.layer_fields`."""
    fields = {}
    for name, f in layer_fields(net, input_shape).items():
        if f["field"] is None:
            size, jump, start = None, None, (0, 0)
        else:
            size, jump, start = (tuple(axis[i] for axis in f["field"]) for i in range(3))
        fields[name] = ReceptiveField(name, size, jump, start, f["shape"])
    return fields


def receptive_field(net, layer, input_shape=None):
    """The :class:`ReceptiveField` of one layer (a container: that of its output)."""
    check_layer(net, layer)
    fields = receptive_fields(net, input_shape)
    if layer not in fields:
        from dataclasses import replace
        return replace(fields[container_outputs(net)[layer]], layer=layer)
    return fields[layer]


def crop(image, layer, position=(0, 0), net=None, pad=False, fill=0.0):
    """The input patch of ``image`` (C, H, W) or (H, W) seen by the unit at ``position``
    of ``layer`` (a ReceptiveField, or a layer name together with ``net``), clipped at
    the border."""
    if not isinstance(layer, ReceptiveField):
        if net is None:
            raise ValueError("crop: pass net= with a layer name, or a ReceptiveField")
        layer = receptive_field(net, layer, (1,) + tuple(image.shape[-2:]))
    if layer.size is None:  # a fully connected layer without a known input shape
        return image
    return layer.crop(image, position, pad=pad, fill=fill)


def field_table(net, input_shape):
    """Rows (name, output shape, size, jump, start) for summaries and reports."""
    rows = []
    for name, f in receptive_fields(net, input_shape).items():
        rows.append((name, f.output_shape, f.size, f.jump, f.start))
    return rows


__all__ = ["ReceptiveField", "crop", "field_table", "receptive_field", "receptive_fields"]
