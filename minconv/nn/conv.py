"""Convolution layers: Conv2D and ConvTranspose2D (thin state over functional.conv)."""
import numpy as np

from .. import functional as F
from .. import runtime
from ..functional.conv_plan import forced_plan
from ..functional.conv_run import prepared_forward
from ..geometry import check_groups, conv_output_size, pair, resolve_padding
from .base import Layer, default_rng


def normal_init(shape, std, rng, dtype):
    """Weights drawn from N(0, std^2), as in the paper (std = 0.01)."""
    rng = default_rng() if rng is None else rng
    dtype = np.dtype(dtype)
    if dtype in (np.float32, np.float64):  # drawn in place: no float64 temporaries
        weights = rng.standard_normal(shape, dtype=dtype)
        weights *= dtype.type(std)
        return weights
    return (rng.standard_normal(shape) * std).astype(dtype)


class _ConvBase(Layer):
    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, bias,
                 groups, plan, weight_shape, init_std, rng, dtype):
        super().__init__()
        kind = type(self).__name__
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = pair(kernel_size, f"{kind}: kernel_size")
        self.stride = pair(stride, f"{kind}: stride")
        self.dilation = pair(dilation, f"{kind}: dilation")
        if isinstance(padding, str) and kind != "Conv2D":
            raise ValueError(f"{kind}: padding must be an int or a pair, got {padding!r}")
        self.padding = resolve_padding(padding, self.kernel_size, self.stride, self.dilation, kind)
        self.groups = check_groups(kind, groups, self.in_channels, self.out_channels)
        if plan is not None and not isinstance(plan, F.Plan) and plan not in F.PLANS:
            raise ValueError(f"{kind}: unknown plan {plan!r}: expected one of {F.PLANS}")
        self.forced_plan = plan   # None: the planner chooses
        self.plan = None          # the F.Plan the last forward pass ran (backward reuses it)
        self.params["W"] = normal_init(weight_shape, init_std, rng, dtype)
        if bias:
            self.params["b"] = normal_init((out_channels,), 0.0, rng, dtype)

    def _store_grads(self, dW, db):
        self.grads["W"] = dW
        if "b" in self.params:
            self.grads["b"] = db

    @property
    def _geometry(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)

    def extra_repr(self):
        groups = f", groups={self.groups}" if self.groups != 1 else ""
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}"
                f"{groups}, bias={'b' in self.params}")


class Conv2D(_ConvBase):
    """2-D convolution layer; W : (F, C/groups, kh, kw) ~ N(0, init_std^2), b : (F,) = 0.

    (N, C, H, W) -> (N, F, Ho, Wo); see :func:`minconv.functional.conv2d`. ``padding``
    may be "same" or "valid"; ``groups`` splits the channels (depthwise when == C).
    ``forward(x, train, relu=True)`` returns max(y, 0), applied where the kernels write
    y (a :class:`~minconv.nn.Graph` asks for it where a ReLU alone reads the output);
    ``forward(x, train, out=a)`` writes y into ``a`` (a Graph hands it the slice of a
    concatenation's output that y would be copied to); ``forward(x, train, residual=r)``
    returns y + r (before the ReLU): a Graph hands it the other input of an Add that alone
    reads y.
    """
    fuses_relu = True
    writes_into = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 bias=True, groups=1, plan=None, init_std=0.01, rng=None, dtype="float32"):
        kh, kw = pair(kernel_size, "Conv2D: kernel_size")
        g = groups if isinstance(groups, int) and groups > 0 else 1  # checked in the base
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, bias,
                         groups, plan, (out_channels, int(in_channels) // g, kh, kw), init_std,
                         rng, dtype)
        self._plan_key = None  # the input's kind, shape and dtype ``plan`` was chosen for
        self._prepared = None  # (W, b, relu, run): the forward product as one call (forward)

    def output_shape(self, x_shape):
        """(N, F, Ho, Wo) of the output for an (N, C, H, W) input."""
        sizes = (conv_output_size(n, k, s, p, d) for n, k, s, p, d in
                 zip(x_shape[2:], self.kernel_size, self.stride, self.padding, self.dilation))
        return (x_shape[0], self.out_channels) + tuple(sizes)

    def forward(self, x, train=False, relu=False, out=None, residual=None):
        W, b = self.params["W"], self.params.get("b")
        # the planner's choice depends only on these (locking W keeps what the paths
        # derive from it): a net asks again on every pass
        key = (type(x), getattr(x, "shape", None), getattr(x, "dtype", None), W.shape, W.dtype,
               getattr(getattr(W, "flags", None), "writeable", None), self.stride,
               self.padding, self.dilation, self.groups, runtime.cpu_threads(), runtime.isa())
        forced = self.forced_plan or forced_plan()
        if forced is None and key == self._plan_key and residual is None:
            y = self._run_prepared(x, W, b, relu, out)
            if y is not None:
                self._cache = (x, self.plan)
                return y
        plan = self.plan if forced is None and key == self._plan_key else self.forced_plan
        y, self.plan = F.conv2d_planned(x, W, b, **self._geometry, plan=plan, relu=relu, out=out,
                                        residual=residual)
        self._plan_key = key if forced is None else None
        if forced is None and residual is None:
            self._prepared = (W, b, relu, prepared_forward(x, W, b, **self._geometry,
                                                          plan=self.plan, relu=relu))
        self._cache = (x, self.plan)
        return y

    def _run_prepared(self, x, W, b, relu, out):
        """y from the one-call forward product prepared on the last pass for this input
        shape and plan (:func:`~minconv.functional.conv_run.prepared_forward`), while the
        weights are the same arrays and the ReLU the same; else None."""
        kept = self._prepared
        if kept is None or kept[0] is not W or kept[1] is not b or kept[2] != relu \
                or kept[3] is None:
            return None
        return kept[3](x, out)

    def forward_pooled(self, x, pool, relu=False):
        """``pool.forward(self.forward(x, relu=relu))`` for ``pool`` a MaxPool2D, in one pass
        where the plan runs the forward product on the direct tiles (see
        :func:`~minconv.functional.conv2d_maxpool_planned`); this layer's own output is
        never formed. Returns the pooled output, or None where that does not apply (the
        caller then runs the two layers). Keeps what ``backward`` needs, as ``forward``."""
        W = self.params["W"]
        y, plan = F.conv2d_maxpool_planned(
            x, W, self.params.get("b"), **self._geometry,
            plan=self.forced_plan or forced_plan(), relu=relu, pool_kernel=pool.kernel_size,
            pool_stride=pool.stride, pool_padding=pool.padding, ceil_mode=pool.ceil_mode)
        if y is None:
            return None
        self.plan, self._plan_key = plan, None
        self._cache = (x, plan)
        self._output_spec = (self.output_shape(x.shape), x.dtype)
        return y

    def planned_output(self, x, plan, relu=False):
        """The output ``forward(x, relu=relu)`` gives on ``plan``, keeping nothing: what a
        pooled pass (:meth:`forward_pooled`) did not form, made as it made it."""
        return F.conv2d_planned(x, self.params["W"], self.params.get("b"), **self._geometry,
                                plan=plan, relu=relu)[0]

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        x, plan = self._saved()
        need_params = self._wants_param_grads(rule, param_grads)
        dx, dW, db = F.conv2d_backward(dy, x, self.params["W"], **self._geometry, plan=plan,
                                       need_weight_grad=need_params,
                                       need_input_grad=input_grad,
                                       need_bias_grad="b" in self.params)
        if need_params:
            self._store_grads(dW, db)
        return dx


class ConvTranspose2D(_ConvBase):
    """Transposed convolution layer (multiplication by C^T); W : (C_in, C_out/groups, kh, kw).

    (N, C_in, Hi, Wi) -> (N, C_out, H, W); see :func:`minconv.functional.conv_transpose2d`.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 bias=True, output_padding=0, groups=1, plan=None, init_std=0.01, rng=None,
                 dtype="float32"):
        kh, kw = pair(kernel_size, "ConvTranspose2D: kernel_size")
        g = groups if isinstance(groups, int) and groups > 0 else 1  # checked in the base
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, bias,
                         groups, plan, (in_channels, int(out_channels) // g, kh, kw), init_std,
                         rng, dtype)
        self.output_padding = pair(output_padding, "ConvTranspose2D: output_padding")

    def forward(self, x, train=False):
        W = self.params["W"]
        self.plan = F.choose_transpose_plan(x, W, **self._geometry, plan=self.forced_plan,
                                            output_padding=self.output_padding)
        self._cache = (x, self.plan)
        return F.conv_transpose2d(x, W, self.params.get("b"), **self._geometry,
                                  output_padding=self.output_padding, plan=self.plan)

    def planned_output(self, x, plan, relu=False):
        """The output ``forward(x, relu=relu)`` gives on ``plan``, keeping nothing: what a
        pooled pass (:meth:`forward_pooled`) did not form, made as it made it."""
        return F.conv2d_planned(x, self.params["W"], self.params.get("b"), **self._geometry,
                                plan=plan, relu=relu)[0]

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        x, plan = self._saved()
        need_params = self._wants_param_grads(rule, param_grads)
        dx, dW, db = F.conv_transpose2d_backward(dy, x, self.params["W"], **self._geometry,
                                                 output_padding=self.output_padding,
                                                 plan=plan,
                                                 need_weight_grad=need_params,
                                                 need_input_grad=input_grad)
        if need_params:
            self._store_grads(dW, db)
        return dx
