"""The benchmark's table of ops and what follows from an op's row alone.

A row is ``(name, kind, x shape, w shape or kernel size or network name, options)``;
``kind`` is ``"conv"``, ``"maxpool"``, ``"avgpool"`` or ``"net"``.
"""

from __future__ import annotations

__all__ = ["OPS", "NET_CONVS", "QUICK_OPS", "select_ops", "out_shape", "conv_algorithm"]

# name: (kind, x shape, w shape or kernel, options)
OPS = [
    ("conv_book", "conv", (100, 1, 28, 28), (30, 1, 5, 5), dict(stride=1, padding=0)),
    ("conv_lenet2", "conv", (64, 6, 14, 14), (16, 6, 5, 5), dict(stride=1, padding=0)),
    ("conv_cifar", "conv", (64, 32, 32, 32), (64, 32, 3, 3), dict(stride=1, padding=1)),
    ("conv_vgg", "conv", (16, 64, 56, 56), (64, 64, 3, 3), dict(stride=1, padding=1)),
    ("conv_strided", "conv", (32, 16, 64, 64), (32, 16, 3, 3),
     dict(stride=2, padding=1, rounding="floor")),
    ("conv_1x1", "conv", (32, 256, 14, 14), (128, 256, 1, 1), dict(stride=1, padding=0)),
    ("conv_vgg_b1", "conv", (1, 64, 56, 56), (64, 64, 3, 3), dict(stride=1, padding=1)),
    ("conv_cifar_b1", "conv", (1, 32, 32, 32), (64, 32, 3, 3), dict(stride=1, padding=1)),
    ("maxpool_book", "maxpool", (100, 30, 24, 24), 2, dict(stride=2, padding=0)),
    ("maxpool_cifar", "maxpool", (64, 64, 32, 32), 2, dict(stride=2, padding=0)),
    ("maxpool_vgg", "maxpool", (16, 64, 56, 56), 2, dict(stride=2, padding=0)),
    ("maxpool_3x3s2", "maxpool", (16, 64, 112, 112), 3,
     dict(stride=2, padding=1, rounding="floor")),
    ("avgpool_2x2", "avgpool", (16, 64, 112, 112), 2, dict(stride=2, padding=0)),
    # networks with the same weights on both sides; fwd+bwd is a training step's
    # gradient computation (the optimizer update is not timed)
    ("net_simpleconvnet", "net", (100, 1, 28, 28), "simpleconvnet", {}),
    ("net_vgg_block", "net", (32, 64, 32, 32), "vgg_block", {}),
]
# the convolutions inside each network row: (x shape, w shape, options)
NET_CONVS = {
    "simpleconvnet": [((100, 1, 28, 28), (30, 1, 5, 5), {})],
    "vgg_block": [((32, 64, 32, 32), (64, 64, 3, 3), dict(padding=1))] * 2,
}
QUICK_OPS = ("conv_book", "conv_cifar", "conv_1x1", "maxpool_cifar", "avgpool_2x2")


def out_shape(op):
    from cyconv._shapes import resolve_geometry
    _, kind, xs, wk, opts = op
    if kind == "net":
        return xs
    opts = dict(opts)
    rounding = opts.pop("rounding", "exact")
    if kind == "conv":
        g = resolve_geometry(xs[2:], wk[2:], rounding=rounding, **opts)
        return (xs[0], wk[0], g.out_h, g.out_w)
    g = resolve_geometry(xs[2:], wk, rounding=rounding, max_pool_padding=True, **opts)
    return (xs[0], xs[1], g.out_h, g.out_w)


def select_ops(spec, quick):
    if not spec:
        return [op for op in OPS if not quick or op[0] in QUICK_OPS]
    chosen = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        if item.isdigit():
            k = int(item)
            if not 1 <= k <= len(OPS):
                raise SystemExit(f"--ops: no op number {k} (1..{len(OPS)}; see --list)")
            chosen.append(OPS[k - 1])
        else:
            match = [op for op in OPS if op[0] == item]
            if not match:
                raise SystemExit(f"--ops: unknown op {item!r}; known: "
                                 + ", ".join(op[0] for op in OPS))
            chosen.append(match[0])
    return chosen



def conv_algorithm(op, x, w):
    """The convolution algorithm the compiled backend runs for a conv row ("auto"):
    the forward's, then the input and weight gradients' where they differ."""
    _, kind, xs, wk, opts = op
    if kind == "net":
        convs = NET_CONVS[wk]
    elif kind == "conv":
        convs = [(xs, wk, opts)]
    else:
        return None
    try:
        from cyconv._shapes import resolve_geometry
        from cyconv.backends import cython_backend
    except ImportError:
        return None
    chosen = []
    for conv_xs, conv_ws, conv_opts in convs:
        conv_opts = dict(conv_opts)
        rounding = conv_opts.pop("rounding", "exact")
        geom = resolve_geometry(conv_xs[2:], conv_ws[2:], rounding=rounding, **conv_opts)
        fwd, dx, dw = (cython_backend.conv2d_algorithm(conv_xs, conv_ws, geom, pass_name=p,
                                                       dtype=x.dtype)
                       for p in ("forward", "input_grad", "weight_grad"))
        chosen.append(fwd if fwd == dx == dw else f"{fwd} (dx {dx}, dW {dw})")
    return "+".join(chosen)

