"""How the conformance checks exercise cyconv's own ten layers.

A plugin layer declares its spec attributes (``check_init_kwargs``,
``check_cases``, ``invalid_params``, ...) on its class; cyconv's built-in
layers keep theirs here instead, out of the public kit (in the spirit of
scikit-learn, whose estimators' test settings live apart from
``estimator_checks``).  :func:`cyconv.testing._spec.resolve_spec` reads this
table for any attribute a built-in class does not set.

The geometries come from :mod:`cyconv.testing.strategies`; the rejected
constructor arguments from its catalogue of invalid values.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from .._shapes import conv_output_size, pool_output_size
from . import strategies as cst
from ._catalogue import MISSING, invalid_params


def _conv_cases():
    return cst.conv_cases(max_batch=1, max_channels_per_group=2, max_groups=2,
                          dtypes=(np.float64,), max_kernel=3, max_stride=2, max_dilation=2,
                          max_size=6, max_padding=1).map(
        lambda c: (c.layer_kwargs(), (c.in_channels,) + tuple(c.geometry.input_size)))


def _pool_cases(kind):
    @st.composite
    def cases(draw):
        g = draw(cst.pool_geometries(kind, max_kernel=3, max_stride=3, max_size=7))
        kw = g.layer_kwargs()
        if kind == "avg":
            kw["count_include_pad"] = draw(st.booleans())
            kw["divisor_override"] = draw(st.one_of(st.none(), st.integers(1, 4)))
        return kw, (draw(st.integers(1, 3)),) + tuple(g.input_size)
    return cases()


def _small_shapes():
    return st.one_of(st.tuples(st.integers(1, 6)),
                     st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)))


def _conv_rule(kw, s):
    return (kw["out_channels"],) + conv_output_size(
        s[1:], kw["kernel_size"], kw.get("stride", 1), kw.get("padding", 0),
        kw.get("dilation", 1), kw.get("rounding", "exact"))


def _pool_rule(kw, s):
    return (s[0],) + pool_output_size(s[1:], kw["kernel_size"], kw.get("stride"),
                                      kw.get("padding", 0), kw.get("dilation", 1),
                                      kw.get("rounding", "exact"), kw.get("ceil_mode", False))


BUILTIN_SETTINGS = {
    "Conv2D": dict(
        check_init_kwargs={"out_channels": 3, "kernel_size": 3, "padding": 1},
        check_input_shape=(2, 5, 5), check_cases=_conv_cases, check_shape_rule=_conv_rule,
        # layer-specific mistakes, then every catalogued bad geometry argument
        invalid_params=[{"groups": 2}, {"weight_init": "zeros"}, {"kernel_size": MISSING}]
        + invalid_params("out_channels", "kernel_size", "stride", "padding", "dilation",
                         "rounding", "groups", "algorithm")),
    "MaxPool2D": dict(
        check_init_kwargs={"kernel_size": 2}, check_input_shape=(2, 4, 4),
        check_cases=lambda: _pool_cases("max"), check_shape_rule=_pool_rule,
        invalid_params=[{"padding": 2}, {"rounding": "floor", "ceil_mode": True}]
        + invalid_params("kernel_size", "stride", "padding", "dilation", "rounding", "ceil_mode")),
    "AvgPool2D": dict(
        check_init_kwargs={"kernel_size": 2}, check_input_shape=(2, 4, 4),
        check_cases=lambda: _pool_cases("avg"), check_shape_rule=_pool_rule,
        invalid_params=[{"padding": 2}]
        + invalid_params("kernel_size", "stride", "padding", "rounding", "count_include_pad",
                         "divisor_override")),
    "Affine": dict(
        check_init_kwargs={"out_features": 3}, check_input_shape=(2, 3, 3),
        check_cases=lambda: st.tuples(
            st.fixed_dictionaries({"out_features": st.integers(1, 4),
                                   "bias": st.booleans()}), _small_shapes()),
        check_shape_rule=lambda kw, s: (kw["out_features"],),
        invalid_params=[{"out_features": MISSING}, {"weight_init": -1.0}]
        + invalid_params("out_features")),
    "ReLU": dict(check_input_shape=(2, 4, 4),
                 check_cases=lambda: st.tuples(st.just({}), _small_shapes())),
    "Sigmoid": dict(check_input_shape=(2, 4, 4),
                    check_cases=lambda: st.tuples(st.just({}), _small_shapes())),
    "SoftmaxWithLoss": dict(
        check_input_shape=(5,),
        check_cases=lambda: st.tuples(st.just({}), st.tuples(st.integers(2, 6)))),
    "Dropout": dict(
        check_init_kwargs={"ratio": 0.5, "rng": 0}, check_input_shape=(2, 4, 4),
        check_cases=lambda: st.tuples(
            st.fixed_dictionaries({"ratio": st.sampled_from([0.0, 0.25, 0.5]),
                                   "rng": st.integers(0, 2 ** 16)}), _small_shapes()),
        invalid_params=invalid_params("ratio")),
    "BatchNorm": dict(
        check_input_shape=(2, 3, 3),
        check_cases=lambda: st.tuples(
            st.fixed_dictionaries({}, optional={"momentum": st.sampled_from([0.0, 0.5, 0.9])}),
            _small_shapes()),
        invalid_params=invalid_params("momentum", "num_features")
        + invalid_params("eps", owner="BatchNorm")),
    "Flatten": dict(check_input_shape=(2, 3, 3),
                    check_cases=lambda: st.tuples(st.just({}), _small_shapes()),
                    check_shape_rule=lambda kw, s: (int(np.prod(s)),)),
}
