"""The timed calls: one op's forward and forward+backward, per library.

cyconv through its public functional API (validation included) when it is
there, else straight to a backend's kernels; a network row through the layers;
torch through ``torch.nn.functional`` with the same data (and, for a network,
cyconv's weights).
"""

from __future__ import annotations

__all__ = ["cyconv_calls", "net_calls", "torch_calls", "torch_net_calls"]


def cyconv_calls(op, x, w, b, dy, backend, threads):
    """(forward, forward+backward) closures for one cyconv backend."""
    import numpy as np
    _, kind, _, wk, opts = op
    try:
        import cyconv
        api = all(hasattr(cyconv, f) for f in ("conv2d", "conv2d_backward", "max_pool2d",
                                               "max_pool2d_backward", "avg_pool2d",
                                               "avg_pool2d_backward"))
    except Exception:  # the public API is unavailable: use the kernels
        api = False
    if api:
        if kind == "conv":
            def fwd():
                return cyconv.conv2d(x, w, b, backend=backend, n_threads=threads, **opts)

            def fwdbwd():
                fwd()
                return cyconv.conv2d_backward(dy, x, w, backend=backend, n_threads=threads,
                                              **opts)
        elif kind == "maxpool":
            def fwd():
                return cyconv.max_pool2d(x, wk, return_indices=True, backend=backend,
                                         n_threads=threads, **opts)

            def fwdbwd():
                _, idx = fwd()
                return cyconv.max_pool2d_backward(dy, x, wk, indices=idx, backend=backend,
                                                  n_threads=threads, **opts)
        else:
            def fwd():
                return cyconv.avg_pool2d(x, wk, backend=backend, n_threads=threads, **opts)

            def fwdbwd():
                fwd()
                return cyconv.avg_pool2d_backward(dy, x, wk, backend=backend,
                                                  n_threads=threads, **opts)
        return fwd, fwdbwd, "api"

    from cyconv._shapes import resolve_geometry
    if backend == "cython":
        from cyconv.backends import cython_backend as kern
    else:
        from cyconv.backends import numpy_backend as kern
    opts = dict(opts)
    rounding = opts.pop("rounding", "exact")
    if kind == "conv":
        geom = resolve_geometry(x.shape[2:], w.shape[2:], rounding=rounding, **opts)

        def fwd():
            return kern.conv2d_forward(x, w, b, geom, 1, threads)

        def fwdbwd():
            fwd()
            return kern.conv2d_backward(dy, x, w, geom, 1, threads)
    else:
        geom = resolve_geometry(x.shape[2:], wk, rounding=rounding, max_pool_padding=True,
                                layer="pool2d", **opts)
        if kind == "maxpool":
            def fwd():
                return kern.max_pool2d_forward(x, geom, threads)

            def fwdbwd():
                _, idx = fwd()
                return kern.max_pool2d_backward(dy, idx, x.shape, threads)
        else:
            def fwd():
                return kern.avg_pool2d_forward(x, geom, True, None, threads)

            def fwdbwd():
                fwd()
                return kern.avg_pool2d_backward(dy, x.shape, geom, True, None, threads)
    del np
    return fwd, fwdbwd, "kernels"


def _cyconv_net(name, x_shape, dtype, backend):
    """A cyconv network of the benchmark, built with seed 0, and its layers' weights."""
    import numpy as np

    import cyconv
    from cyconv.nn import SimpleConvNet
    if name == "simpleconvnet":
        return SimpleConvNet(x_shape[1:], dtype=dtype, seed=0, backend=backend)
    layers = [cyconv.Conv2D(64, 3, padding=1, backend=backend), cyconv.ReLU(),
              cyconv.Conv2D(64, 3, padding=1, backend=backend), cyconv.ReLU(),
              cyconv.MaxPool2D(2, backend=backend)]
    rng = np.random.default_rng(0)
    shape = tuple(x_shape[1:])
    for layer in layers:
        shape = layer.build(shape, dtype=np.dtype(dtype), rng=rng)
    return layers


def net_calls(op, x, backend, threads):
    """(forward, forward+backward) of a network row on one cyconv backend."""
    import numpy as np

    import cyconv
    _, _, xs, net_name, _ = op
    net = _cyconv_net(net_name, xs, x.dtype, backend)
    cyconv.set_num_threads(threads)   # layers run on the global thread setting
    if net_name == "simpleconvnet":
        t = np.arange(xs[0]) % 10

        def fwd():
            return net.predict(x)

        def fwdbwd():
            return net.gradient(x, t)
        return fwd, fwdbwd, net
    layers = net

    def fwd():
        out = x
        for layer in layers:
            out = layer.forward(out)
        return out

    def fwdbwd():
        dout = np.ones_like(fwd())
        for layer in reversed(layers):
            dout = layer.backward(dout)
        return dout
    return fwd, fwdbwd, layers


def torch_net_calls(op, x, cy_net):
    """The same network in torch, with cyconv's weights."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    _, _, xs, net_name, _ = op
    tx = torch.from_numpy(x.copy())

    def param(a):
        return torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(a).copy()))
    if net_name == "simpleconvnet":
        c1, _, _, a1, _, a2 = cy_net.layers
        w1, b1 = param(c1.params["W"]), param(c1.params["b"])
        w2, b2 = param(a1.params["W"].T), param(a1.params["b"])
        w3, b3 = param(a2.params["W"].T), param(a2.params["b"])
        tt = torch.from_numpy(np.arange(xs[0]) % 10)

        def scores():
            h = F.max_pool2d(F.relu(F.conv2d(tx, w1, b1)), 2)
            return F.linear(F.relu(F.linear(h.flatten(1), w2, b2)), w3, b3)

        def fwd():
            with torch.no_grad():
                return scores()

        def fwdbwd():
            for p in (w1, b1, w2, b2, w3, b3):
                p.grad = None
            F.cross_entropy(scores(), tt).backward()
        return fwd, fwdbwd
    c1, _, c2, _, _ = cy_net
    w1, b1 = param(c1.params["W"]), param(c1.params["b"])
    w2, b2 = param(c2.params["W"]), param(c2.params["b"])
    tx.requires_grad_(True)

    def block():
        h = F.relu(F.conv2d(F.relu(F.conv2d(tx, w1, b1, padding=1)), w2, b2, padding=1))
        return F.max_pool2d(h, 2)

    def fwd():
        with torch.no_grad():
            return block()

    def fwdbwd():
        for p in (tx, w1, b1, w2, b2):
            p.grad = None
        out = block()
        out.backward(torch.ones_like(out))
    return fwd, fwdbwd


def torch_calls(op, x, w, b, dy):
    import torch
    import torch.nn.functional as F
    _, kind, _, wk, opts = op
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    tdy = torch.from_numpy(dy.copy())
    ceil = opts.get("rounding") == "ceil"
    if kind == "conv":
        tw = torch.from_numpy(w.copy()).requires_grad_(True)
        tb = torch.from_numpy(b.copy()).requires_grad_(True)

        def conv():
            return F.conv2d(tx, tw, tb, stride=opts["stride"], padding=opts["padding"])

        def fwd():     # inference: no autograd graph, as torch users time it
            with torch.no_grad():
                return conv()

        def fwdbwd():
            tx.grad = tw.grad = tb.grad = None
            conv().backward(tdy)
    elif kind == "maxpool":
        def pool():
            return F.max_pool2d(tx, wk, stride=opts["stride"], padding=opts["padding"],
                                ceil_mode=ceil)
    else:
        def pool():
            return F.avg_pool2d(tx, wk, stride=opts["stride"], padding=opts["padding"],
                                ceil_mode=ceil)
    if kind != "conv":
        def fwd():
            with torch.no_grad():
                return pool()

        def fwdbwd():
            tx.grad = None
            pool().backward(tdy)
    return fwd, fwdbwd

