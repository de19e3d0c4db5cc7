"""Networks: a :class:`Sequential` container and the textbook's ConvNet presets.

A :class:`Sequential` takes a list of layers and the per-sample input shape
``(C, H, W)``; it calls every layer's ``build`` in turn, so each layer's
input/output shape and parameter shapes are inferred from the input shape, and
weights are initialised (He, Xavier or a fixed std, per layer or globally).

Conventions (*Deep Learning from Scratch*, ch. 5-8, with two choices made):

* **Loss layer.** The network always ends in a :class:`cyconv.SoftmaxWithLoss`.
  Give one as the last layer or leave it out: it is appended automatically.
  It is kept apart from :attr:`Sequential.layers` (as the textbook's
  ``last_layer``), so :meth:`Sequential.predict` returns the raw scores.
* **Parameter keys.** :attr:`Sequential.params` maps ``"<layer index>.<name>"``
  (``"0.W"``, ``"0.b"``, ``"3.W"``, ``"5.gamma"``...) to the layers' own arrays
  (references, not copies), so an optimizer updating ``params`` in place
  updates the layers.  :meth:`Sequential.gradient` returns a dict with the
  same keys.

Examples
--------
>>> import numpy as np, cyconv
>>> from cyconv.nn import Sequential
>>> net = Sequential([cyconv.Conv2D(4, 3, padding=1), cyconv.ReLU(), cyconv.MaxPool2D(2),
...                   cyconv.Affine(10)], input_shape=(1, 8, 8), seed=0)
>>> sorted(net.params)
['0.W', '0.b', '3.W', '3.b']
>>> net.predict(np.zeros((2, 1, 8, 8))).shape
(2, 10)
"""

from __future__ import annotations

import copy
import errno
import os
import zipfile
import zlib

import numpy as np

from ._param_validation import check
from ._shapes import ShapeError
from ._validation import _channels, channels_last_hint, class_labels
from .layers import (
    Affine,
    Conv2D,
    Dropout,
    Layer,
    MaxPool2D,
    ReLU,
    SoftmaxWithLoss,
    settings_repr,
)

__all__ = ["DeepConvNet", "Sequential", "SimpleConvNet"]


def _strip_layer_prefix(message, layer):
    """Drop a leading ``"<name>: "`` that the shape rule already put in the message."""
    for prefix in {str(layer.name), type(layer).__name__, "conv2d", "pool2d"}:
        if prefix and message.startswith(prefix + ": "):
            return message[len(prefix) + 2:]
    return message


def _layer_label(layer):
    return layer.name or type(layer).__name__


#: Channel counts of images (grey, RGB, RGBA) for the channels-last check.
IMAGE_CHANNELS = (1, 3, 4)


def _refuse_channels_last(layers, input_shape):
    """Refuse an ``(H, W, C)`` input shape for a network that starts with a convolution.

    The rule: a 3-entry ``input_shape`` whose last entry is 1, 3 or 4 (an
    image's channels) while the first is larger than 4, when the first layer
    that changes shapes is a :class:`Conv2D` with no weights given (it would
    silently take the first entry as its input channels) and a kernel wider
    than 1 (a ``(k, 1)`` kernel over ``(C, L, 1)`` is a 1-D convolution, which
    is legitimate).
    """
    first = next((layer for layer in layers if not layer.shape_preserving), None)
    if (len(input_shape) == 3 and input_shape[-1] in IMAGE_CHANNELS and input_shape[0] > 4
            and isinstance(first, Conv2D) and first.in_channels is None
            and first.kernel_size[1] > 1):
        h, w, c = input_shape
        raise ValueError(f"input_shape={input_shape} looks channels-last (H, W, C) with "
                         f"{_channels(c)}, and cyconv is channels-first (C, H, W): pass "
                         f"input_shape={(c, h, w)} and x.transpose(0, 3, 1, 2) for the data")


class Sequential:
    """A stack of layers ending in softmax-with-loss, built from the input shape.

    Parameters
    ----------
    layers : list of cyconv.Layer
        Layer instances, in order.  Layers with parameters may be given their
        sizes only (``Conv2D(30, 5)``, ``Affine(100)``): ``build`` creates the
        arrays.  A trailing :class:`cyconv.SoftmaxWithLoss` is optional (one is
        appended when missing); a loss layer anywhere else is an error.
    input_shape : tuple of int
        Per-sample input shape, e.g. ``(1, 28, 28)``.
    dtype : numpy dtype
        Dtype of the parameters created by ``build`` (float32 or float64);
        inputs are cast to it in :meth:`predict`.
    weight_init : "he", "xavier", float or None
        Global override of every parameterised layer's ``weight_init`` (for
        layers whose weights are not given explicitly); ``None`` keeps each
        layer's own choice.
    seed : int, numpy Generator or None
        Seeds weight initialisation (and Dropout masks): same seed, same
        network.  ``None`` leaves each layer's own ``rng``.

    Raises
    ------
    cyconv.ShapeError
        A layer's shape rule fails; the message starts with
        ``"layer <i> (<name>): "``.
    """

    def __init__(self, layers, input_shape, *, dtype=np.float64, weight_init=None, seed=None):
        layers = list(layers)
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layer {i} must be a cyconv.Layer instance, got {layer!r}")
        loss = None
        if layers[-1].is_loss:
            loss = layers.pop()
        for i, layer in enumerate(layers):
            if layer.is_loss:
                raise ValueError(f"layer {i} ({_layer_label(layer)}) is a loss layer; "
                                 f"it may only be the last layer")
        self.layers = layers
        self.loss_layer = loss if loss is not None else SoftmaxWithLoss()
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"dtype must be float32 or float64, got {self.dtype}")
        try:
            self.input_shape = tuple(int(s) for s in input_shape)
        except TypeError:
            raise TypeError(f"input_shape must be a tuple of ints such as (1, 28, 28), "
                            f"got {input_shape!r}") from None
        if not self.input_shape or min(self.input_shape) < 1:
            raise ValueError(f"input_shape must hold positive sizes, got {input_shape!r}")
        _refuse_channels_last(layers, self.input_shape)
        self.weight_init = weight_init
        self.seed = seed
        self.last_loss = None
        self.last_scores = None
        self._build()

    # -- construction ----------------------------------------------------------
    def _build(self):
        rng = None if self.seed is None else np.random.default_rng(self.seed)
        shape = self.input_shape
        self.shapes = []  # (input shape, output shape) per layer
        for i, layer in enumerate(self.layers):
            if self.weight_init is not None and hasattr(layer, "weight_init"):
                layer.weight_init = self.weight_init
            if rng is not None and layer.stochastic and hasattr(layer, "rng"):  # seeded draws
                layer.rng = np.random.default_rng(rng.integers(2**63))
            try:
                out = layer.build(shape, dtype=self.dtype, rng=rng)
            except ShapeError as exc:
                raise ShapeError(f"layer {i} ({_layer_label(layer)}): "
                                 f"{_strip_layer_prefix(str(exc), layer)}") from None
            except (ValueError, TypeError) as exc:
                raise type(exc)(f"layer {i} ({_layer_label(layer)}): "
                                f"{_strip_layer_prefix(str(exc), layer)}") from None
            out = tuple(int(s) for s in out)
            self.shapes.append((shape, out))
            shape = out
        if len(shape) != 1:
            raise ShapeError(f"the last layer ({len(self.layers) - 1}, "
                             f"{_layer_label(self.layers[-1])}) outputs per-sample shape {shape}; "
                             f"SoftmaxWithLoss needs class scores of shape (K,): end the network "
                             f"with an Affine layer")
        self.output_shape = shape
        self.params = {}
        for i, layer in enumerate(self.layers):
            for name, array in layer.params.items():
                self.params[f"{i}.{name}"] = array

    def _sync_params(self):
        """Point the layers at ``self.params`` again if a key was reassigned."""
        for key, array in self.params.items():
            i, name = key.split(".", 1)
            layer = self.layers[int(i)]
            if layer.params.get(name) is not array:
                layer.params[name] = array

    # -- forward / backward ---------------------------------------------------
    def _check_input(self, x):
        x = np.asarray(x)
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"input of shape {x.shape} does not match the network's input shape "
                             f"(N, {', '.join(map(str, self.input_shape))})"
                             + channels_last_hint(x.shape, self.input_shape[0]))
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        return x

    def predict(self, x, train=False):
        """Class scores (N, K) before the softmax.

        Each layer's output is checked against the shape inferred at
        construction, so a layer (typically a plugin's) whose forward breaks
        its own ``output_shape`` is named, with the package it comes from,
        instead of failing somewhere downstream.
        """
        return self._forward(x, len(self.layers) - 1, train)

    def transform(self, x, upto=-1):
        """The output of layer ``upto`` (features), with ``train=False``.

        ``upto`` is a layer index (negative counts from the end; ``-1``, the
        last layer, gives :meth:`predict`'s scores) or one of :attr:`layers`.
        The output has shape ``(N,) + net.shapes[upto][1]``.
        """
        return self._forward(x, self.layer_index(upto), False)

    def layer_index(self, upto):
        """The index in :attr:`layers` of ``upto``: an index (negative from the end) or a layer."""
        count = len(self.layers)
        if isinstance(upto, Layer):
            for i, layer in enumerate(self.layers):
                if layer is upto:
                    return i
            raise ValueError(f"upto={upto!r} is not one of this network's layers")
        upto = check("upto", upto)
        if not -count <= upto < count:
            raise ValueError(f"upto={upto} is out of range: the network has {count} layers "
                             f"(indices 0..{count - 1}, or -{count}..-1 from the end)")
        return int(upto) % count

    def _forward(self, x, last, train):
        self._sync_params()
        x = self._check_input(x)
        for i, (layer, (_, expected)) in enumerate(zip(self.layers[:last + 1], self.shapes)):
            x = layer.forward(x, train=train)
            got = tuple(np.shape(x)[1:])
            if got != expected:
                cls = type(layer)
                raise ValueError(
                    f"layer {i} ({_layer_label(layer)}, backend {layer.backend!r}, class "
                    f"{cls.__module__}.{cls.__qualname__}) returned per-sample shape {got}, but "
                    f"its output_shape() promised {expected}: the layer is inconsistent")
        return x

    def __call__(self, x, train=False):
        """``net(x)`` is ``net.predict(x)``: the class scores."""
        return self.predict(x, train=train)

    def _inference_copy(self):
        """A copy over the same weight arrays, without any forward/backward state.

        Layers keep the state of their last forward call (for backward) in
        ``_``-prefixed attributes: shipping a network to other processes would
        send those activations too, and threads sharing one network would
        share them.  Copying is cheap: the parameter arrays are not copied.
        """
        def bare(layer):
            clone = copy.copy(layer)
            for attr in [a for a in vars(clone) if a.startswith("_") and not a.startswith("__")]:
                delattr(clone, attr)
            clone.params, clone.grads = dict(layer.params), {}
            return clone

        clone = copy.copy(self)
        clone.layers = [bare(layer) for layer in self.layers]
        clone.loss_layer = bare(self.loss_layer)
        clone.params = dict(self.params)
        clone.last_loss = clone.last_scores = None
        return clone

    def loss(self, x, t, train=True):
        """Mean cross-entropy loss of a batch (``train=True`` as in the textbook)."""
        return self.loss_layer.forward(self.predict(x, train=train), t)

    def gradient(self, x, t):
        """Backpropagation: the gradient of the loss, a dict keyed like :attr:`params`.

        Also leaves the batch loss and scores in ``last_loss`` and ``last_scores``.
        """
        scores = self.predict(x, train=True)
        self.last_loss = self.loss_layer.forward(scores, t)
        self.last_scores = scores
        dout = self.loss_layer.backward(1.0)
        for layer in reversed(self.layers[1:]):
            dout = layer.backward(dout)
        first = self.layers[0]
        if first.params:  # nothing needs the gradient of the network's input
            first.backward_params(dout)
        return {f"{i}.{name}": layer.grads[name]
                for i, layer in enumerate(self.layers) for name in layer.params}

    def evaluate(self, x, t, batch_size=100):
        """``(mean loss, accuracy)`` over a data set, in batches, with ``train=False``."""
        n = len(x)
        if n == 0:
            raise ValueError("cannot evaluate on an empty data set")
        total_loss = 0.0
        correct = 0
        labels = class_labels(t)
        for start in range(0, n, batch_size):
            scores = self.predict(x[start:start + batch_size], train=False)
            tb = t[start:start + batch_size]
            total_loss += self.loss_layer.forward(scores, tb) * len(scores)
            correct += int((scores.argmax(axis=1) == labels[start:start + batch_size]).sum())
        return total_loss / n, correct / n

    def accuracy(self, x, t, batch_size=100):
        """Fraction of correctly classified samples (``t``: labels or one-hot)."""
        labels = class_labels(t)
        if len(x) == 0:
            raise ValueError("cannot compute the accuracy of an empty data set")
        correct = 0
        for start in range(0, len(x), batch_size):
            scores = self.predict(x[start:start + batch_size], train=False)
            correct += int((scores.argmax(axis=1) == labels[start:start + batch_size]).sum())
        return correct / len(x)

    # -- description -----------------------------------------------------------
    def num_params(self):
        return int(sum(a.size for a in self.params.values()))

    def summary(self, print_fn=None):
        """A table of layers: index, name, backend, output shape, parameter count.

        Returns the table as a string; prints it as well when ``print_fn`` is
        given (e.g. ``net.summary(print)``).
        """
        rows = [("#", "layer", "backend", "output shape", "params")]
        rows.append(("", "input", "", str(self.input_shape), ""))
        for i, (layer, (_, out)) in enumerate(zip(self.layers, self.shapes)):
            count = sum(a.size for a in layer.params.values())
            rows.append((str(i), _layer_label(layer), str(layer.backend), str(out), f"{count:,}"))
        rows.append(("", _layer_label(self.loss_layer), str(self.loss_layer.backend), "()", "0"))
        widths = [max(len(r[c]) for r in rows) for c in range(5)]
        rule = "-" * (sum(widths) + 2 * 4)

        def fmt(r):
            return "  ".join(r[c].rjust(widths[c]) if c in (0, 4) else r[c].ljust(widths[c])
                             for c in range(5)).rstrip()

        lines = [fmt(rows[0]), rule] + [fmt(r) for r in rows[1:]] + [rule]
        total = self.num_params()
        nbytes = sum(a.nbytes for a in self.params.values())
        lines.append(f"total parameters: {total:,} ({self.dtype}, {nbytes / 1024:.1f} KiB)")
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text

    def __repr__(self):
        head = settings_repr(self, (), dict(input_shape=self.input_shape),
                             dict(dtype=self.dtype, weight_init=self.weight_init, seed=self.seed),
                             init=Sequential.__init__)
        settings = head[len(type(self).__name__) + 1:-1]
        layers = [repr(layer) for layer in self.layers]
        if self.loss_layer.backend != "numpy" or type(self.loss_layer) is not SoftmaxWithLoss:
            layers.append(repr(self.loss_layer))  # not the one appended by default
        one_line = f"{type(self).__name__}([{', '.join(layers)}], {settings})"
        if len(one_line) <= 88:
            return one_line
        inner = "".join(f"    {text},\n" for text in layers)
        return f"{type(self).__name__}([\n{inner}], {settings})"

    # -- persistence ------------------------------------------------------------
    def save_params(self, path):
        """Save :attr:`params` to a ``.npz`` file (keys as in ``params``)."""
        self._sync_params()
        path = os.fspath(path)
        with open(path, "wb") as f:
            np.savez(f, **self.params)
        return path

    def load_params(self, path):
        """Load parameters saved by :meth:`save_params` into the existing arrays (in place).

        The file is judged before it is read: member names first (from the
        zip directory), then each expected member's ``.npy`` header (shape,
        dtype, order) and its uncompressed size; only then exactly the
        expected bytes are read.  Unexpected members are never decompressed,
        so a decompression bomb or a header claiming a huge shape costs
        nothing.  Either every parameter is loaded or none is touched.

        Raises
        ------
        FileNotFoundError
            No such file.
        OSError
            The path is a loop of symbolic links (errno ``ELOOP``).
        ValueError
            Not a readable ``.npz`` file (truncated, corrupt or another format),
            or it does not match this network: a missing key, an extra key, a
            member that is not a ``.npy`` array, a wrong shape or dtype, or a
            member whose size does not match its header (the message names
            the key).
        """
        path = os.fspath(path)
        self._sync_params()
        arrays = _read_param_file(path, self.params)
        for key, array in self.params.items():
            array[...] = arrays[key]
        return self


# Errors zipfile and its decompressors raise for damaged archives (F9: a
# damaged local header gives RuntimeError "encrypted" / NotImplementedError
# "compression method").
_ZIP_ERRORS = (ValueError, OSError, EOFError, RuntimeError, NotImplementedError,
               zipfile.BadZipFile, zlib.error)
try:
    import lzma
    _ZIP_ERRORS += (lzma.LZMAError,)
except ImportError:  # pragma: no cover - Python built without lzma
    pass
# Format 3.0 differs from 2.0 only by UTF-8 field names (of structured dtypes,
# which no parameter has): its header parses as 2.0.
_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0,
                       (3, 0): np.lib.format.read_array_header_2_0}


class _MemberRefused(Exception):
    """A member that does not hold what the network expects (the message says why)."""


def _read_param_file(path, expected):
    """The arrays of the ``.npz`` file at ``path`` for the keys of ``expected``
    (key -> the network's array), each judged before it is read."""

    def invalid(why):
        return ValueError(f"{path!r} is not a valid .npz parameter file: {why}")

    def mismatch(why):
        return ValueError(f"{path!r} does not match the network: {why}")

    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise FileNotFoundError(f"no such parameter file: {path!r}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "parameter file path is a loop of symbolic links "
                                       "(ELOOP: too many levels of symbolic links)", path) from None
        raise invalid(f"unreadable ({exc})") from None
    with f:
        try:
            single_npy = f.read(len(np.lib.format.MAGIC_PREFIX)) == np.lib.format.MAGIC_PREFIX
            f.seek(0)
            archive = None if single_npy else zipfile.ZipFile(f)
        except _ZIP_ERRORS as exc:
            raise invalid(f"unreadable, truncated or corrupt ({exc})") from None
        if single_npy:
            raise invalid("it holds a single .npy array, not an .npz archive of named arrays")
        with archive:
            members = {}
            for info in archive.infolist():  # the zip directory: nothing is decompressed
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if key in members:
                    raise invalid(f"key {key!r} appears twice")
                members[key] = info
            missing = [k for k in expected if k not in members]
            extra = [k for k in members if k not in expected]
            if missing:
                raise mismatch(f"key {missing[0]!r} is missing (missing: {', '.join(missing)})")
            if extra:
                raise mismatch(f"unexpected key {extra[0]!r} (extra: {', '.join(extra)})")
            arrays = {}
            for key, like in expected.items():
                try:
                    with archive.open(members[key]) as member:
                        arrays[key] = _read_member(member, members[key].file_size, like)
                except _MemberRefused as exc:
                    raise mismatch(f"key {key!r} {exc}") from None
                except _ZIP_ERRORS as exc:
                    raise invalid(f"key {key!r} is truncated or corrupt ({exc})") from None
    return arrays


def _read_member(member, file_size, like):
    """One member's array: its .npy header checked against ``like`` (shape and
    dtype) and against the member's uncompressed size, then exactly the
    expected bytes read (and one more, which must not exist)."""
    try:
        version = np.lib.format.read_magic(member)
        read_header = _NPY_HEADER_READERS.get(version)
        if read_header is None:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, fortran_order, dtype = read_header(member)
    except (ValueError, TypeError) as exc:
        raise _MemberRefused(f"is not a .npy array ({exc})") from None
    if shape != like.shape:
        raise _MemberRefused(f"has shape {shape}, the network expects {like.shape}")
    if dtype != like.dtype:
        raise _MemberRefused(f"has dtype {dtype}, the network expects {like.dtype}")
    data_bytes = like.size * like.dtype.itemsize
    if file_size != member.tell() + data_bytes:
        raise _MemberRefused(f"holds {file_size} bytes, but its .npy header and shape make "
                             f"{member.tell() + data_bytes}")
    data = member.read(data_bytes)
    if len(data) != data_bytes or member.read(1):  # reading to the end checks the CRC
        raise _MemberRefused(f"does not hold the {data_bytes} data bytes its header says")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran_order else "C")


def _conv_option(conv, *names, default):
    for name in names:
        if name in conv:
            return conv[name]
    return default


class SimpleConvNet(Sequential):
    """The textbook's ch. 7 SimpleConvNet.

    conv (``filters`` x ``size`` x ``size``) - ReLU - max-pool 2x2/2 -
    affine ``hidden`` - ReLU - affine ``classes`` (- softmax-with-loss).

    Parameters
    ----------
    input_shape : (C, H, W)
    conv : dict
        ``filters``, ``size``, ``pad``, ``stride`` (the textbook's
        ``filter_num``/``filter_size`` spellings are accepted too).
    hidden, classes : int
    weight_init : "he", "xavier" or float
        Default: the textbook's fixed std 0.01.
    dtype, seed
        As in :class:`Sequential`.
    backend : str, optional
        Backend of the convolution and pooling layers (default: the
        registry's preference, the compiled one when built).

    The pooling floors an odd size (as the textbook does).
    """

    def __init__(self, input_shape=(1, 28, 28), conv=None, hidden=100, classes=10, *,
                 weight_init=0.01, dtype=np.float64, seed=None, backend=None):
        self._settings = dict(conv=conv, hidden=hidden, classes=classes,
                              weight_init=weight_init, dtype=np.dtype(dtype), seed=seed,
                              backend=backend)
        conv = dict(conv or {})
        filters = _conv_option(conv, "filters", "filter_num", default=30)
        size = _conv_option(conv, "size", "filter_size", default=5)
        pad = _conv_option(conv, "pad", "padding", default=0)
        stride = _conv_option(conv, "stride", default=1)
        layers = [
            Conv2D(filters, size, stride=stride, padding=pad, backend=backend),
            ReLU(),
            MaxPool2D(2, 2, rounding="floor", backend=backend),
            Affine(hidden),
            ReLU(),
            Affine(classes),
        ]
        super().__init__(layers, input_shape, dtype=dtype, weight_init=weight_init, seed=seed)

    def __repr__(self):
        return settings_repr(self, (), dict(input_shape=self.input_shape), self._settings)


class DeepConvNet(Sequential):
    """The textbook's ch. 8 DeepConvNet (He initialisation).

    conv3x3 16 - ReLU - conv3x3 16 - ReLU - pool -
    conv3x3 32 - ReLU - conv3x3 32 (pad 2) - ReLU - pool -
    conv3x3 64 - ReLU - conv3x3 64 - ReLU - pool -
    affine ``hidden`` - ReLU - dropout 0.5 - affine ``classes`` - dropout 0.5.

    Paddings 1, 1, 1, 2, 1, 1 as in the book; pools are 2x2/2 and floor odd
    sizes.  Dropout is cyconv's (inverted) :class:`cyconv.Dropout`.
    """

    def __init__(self, input_shape=(1, 28, 28), hidden=50, classes=10, *, dropout=0.5,
                 weight_init="he", dtype=np.float64, seed=None, backend=None):
        self._settings = dict(hidden=hidden, classes=classes, dropout=dropout,
                              weight_init=weight_init, dtype=np.dtype(dtype), seed=seed,
                              backend=backend)
        layers = []
        for filters, pad, pool in ((16, 1, False), (16, 1, True), (32, 1, False),
                                   (32, 2, True), (64, 1, False), (64, 1, True)):
            layers += [Conv2D(filters, 3, padding=pad, backend=backend), ReLU()]
            if pool:
                layers.append(MaxPool2D(2, 2, rounding="floor", backend=backend))
        layers += [Affine(hidden), ReLU(), Dropout(dropout), Affine(classes), Dropout(dropout)]
        super().__init__(layers, input_shape, dtype=dtype, weight_init=weight_init, seed=seed)

    def __repr__(self):
        return settings_repr(self, (), dict(input_shape=self.input_shape), self._settings)
