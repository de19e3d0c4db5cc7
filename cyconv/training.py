"""Mini-batch training with a progress bar and a per-epoch history.

:class:`Trainer` follows the textbook's ``common/trainer.py`` (ch. 7-8), with
these choices:

* every epoch visits the training set once in a fresh random order
  (mini-batches drawn **without** replacement; the last batch may be smaller);
* per epoch the history records the **training loss and accuracy** (running
  means over that epoch's mini-batches, measured in training mode while the
  weights change, as Keras reports them) and the **test loss and accuracy**
  (evaluated on the whole held-out set with ``train=False`` at the end of the
  epoch);
* ``seed`` makes the shuffling reproducible (seed the network too, e.g.
  ``SimpleConvNet(seed=0)``, for bit-identical runs);
* Ctrl-C (:class:`KeyboardInterrupt`) stops training cleanly: the history of
  the completed epochs and the parameters reached so far are kept, and
  :meth:`Trainer.train` returns normally with ``interrupted=True``.

The progress bar is tqdm's when tqdm is installed (``pip install
"cyconv[demo]"``) and the output is a terminal or a Jupyter notebook; otherwise
(no tqdm, or output to a file or a pipe, such as a log) it is one plain line per
epoch, so a log never fills with redrawn bars.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np

from ._param_validation import check
from ._validation import class_labels
from .optim import get_optimizer

__all__ = ["History", "Trainer"]


@dataclass
class History:
    """What :meth:`Trainer.train` measured (one entry per completed epoch)."""

    train_loss: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    test_loss: list = field(default_factory=list)
    test_acc: list = field(default_factory=list)
    epoch_time: list = field(default_factory=list)
    steps: int = 0
    samples: int = 0
    train_time: float = 0.0
    interrupted: bool = False

    @property
    def epochs(self):
        return len(self.train_loss)

    @property
    def samples_per_second(self):
        return self.samples / self.train_time if self.train_time > 0 else float("nan")

    def as_dict(self):
        return {"train_loss": list(self.train_loss), "train_acc": list(self.train_acc),
                "test_loss": list(self.test_loss), "test_acc": list(self.test_acc),
                "epoch_time": list(self.epoch_time), "steps": self.steps,
                "samples": self.samples, "train_time": self.train_time,
                "interrupted": self.interrupted}


def count_noun(n, noun):
    """``1 epoch``, ``2 epochs``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _tqdm():
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


def _shows_a_bar(tqdm, stream):
    """A live bar only where it redraws in place: a terminal or Jupyter's widget.

    (tqdm's own ``disable=None`` would also switch the notebook widget off,
    since a notebook's streams are not terminals.)
    """
    isatty = getattr(stream, "isatty", None)
    try:
        if isatty is not None and isatty():
            return True
    except ValueError:  # a closed stream
        return False
    return any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__)


class Trainer:
    """Train ``network`` on ``(x_train, t_train)``, evaluating on ``(x_test, t_test)``.

    Parameters
    ----------
    network
        A :class:`cyconv.nn.Sequential` (or any object with ``params``,
        ``gradient(x, t)`` and ``evaluate(x, t, batch_size)`` or
        ``loss``/``accuracy``).
    x_train, t_train, x_test, t_test : ndarray
        Inputs (N, C, H, W) and integer labels (N,) or one-hot targets.
    epochs, batch_size : int
    optimizer : str or optimizer instance
        ``"sgd"``, ``"momentum"``, ``"nesterov"``, ``"adagrad"``, ``"rmsprop"``,
        ``"adam"`` (see :mod:`cyconv.optim`) or an object with ``update``.
    optimizer_params : dict
        Keyword arguments for a named optimizer, e.g. ``{"lr": 1e-3}``.
    seed : int or None
        Seeds the shuffling.
    progress : bool
        Show a progress bar (tqdm, on a terminal or in a notebook) or one line
        per epoch (elsewhere, e.g. a log file); ``False`` is silent.
    eval_batch_size : int
        Batch size of the evaluation passes.
    callback : callable, optional
        ``callback(trainer, epoch, step, loss)`` after every optimizer step.
    file : text stream
        Where progress goes (default ``sys.stderr``).
    """

    def __init__(self, network, x_train, t_train, x_test=None, t_test=None, *, epochs=20,
                 batch_size=100, optimizer="adam", optimizer_params=None, seed=None,
                 progress=True, eval_batch_size=500, callback=None, file=None):
        if len(x_train) != len(t_train):
            raise ValueError(f"x_train has {len(x_train)} samples but t_train has {len(t_train)}")
        if len(x_train) == 0:
            raise ValueError("the training set is empty")
        if (x_test is None) != (t_test is None):
            raise ValueError("give both x_test and t_test, or neither")
        if x_test is not None and len(x_test) != len(t_test):
            raise ValueError(f"x_test has {len(x_test)} samples but t_test has {len(t_test)}")
        epochs, batch_size = check("epochs", epochs), check("batch_size", batch_size)
        eval_batch_size = check("eval_batch_size", eval_batch_size)
        self.network = network
        self.x_train, self.t_train = x_train, t_train
        self.x_test, self.t_test = x_test, t_test
        self.epochs, self.batch_size = int(epochs), int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.optimizer = get_optimizer(optimizer, **(optimizer_params or {}))
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.progress = progress
        self.callback = callback
        self.file = file
        self.history = History()

    @property
    def interrupted(self):
        return self.history.interrupted

    def _evaluate(self, x, t):
        net = self.network
        if hasattr(net, "evaluate"):
            return net.evaluate(x, t, batch_size=self.eval_batch_size)
        loss = float(np.mean([net.loss(x[i:i + self.eval_batch_size],
                                       t[i:i + self.eval_batch_size])
                              for i in range(0, len(x), self.eval_batch_size)]))
        return loss, net.accuracy(x, t)

    def _say(self, bar, text):
        if not self.progress:
            return
        out = self.file or sys.stderr
        if bar is not None:
            bar.write(text, file=out)
        else:
            print(text, file=out, flush=True)

    # -- hooks (cyconv.distributed.DistributedTrainer overrides them) --------------------------
    def _epoch_batches(self, order):
        """This process's mini-batches of one epoch: ``(indices, global batch size)`` pairs."""
        batches = [order[start:start + self.batch_size]
                   for start in range(0, len(order), self.batch_size)]
        return [(idx, len(idx)) for idx in batches]

    def _combine_gradients(self, grads, n_local, n_global):
        """The gradient the optimizer applies (one process: this batch's own)."""
        return grads

    def _epoch_totals(self, loss_sum, correct, seen):
        """The epoch's training loss sum, correct count and sample count over all processes."""
        return loss_sum, correct, seen

    def _on_interrupt(self):
        """Ctrl-C: keep what was reached (return) or give up (raise)."""
        self.history.interrupted = True
        self._say(None, f"interrupted after {count_noun(self.history.epochs, 'complete epoch')} "
                        f"and {count_noun(self.history.steps, 'step')}; the parameters reached "
                        f"so far are kept")

    def train(self):
        """Run the epochs; return the :class:`History` (also in ``self.history``)."""
        history = self.history
        n = len(self.x_train)
        tqdm = _tqdm() if self.progress else None
        if tqdm is not None and not _shows_a_bar(tqdm, self.file or sys.stderr):
            tqdm = None
        labels = class_labels(self.t_train)
        try:
            for epoch in range(1, self.epochs + 1):
                batches = self._epoch_batches(self.rng.permutation(n))
                bar = None
                if tqdm is not None:
                    bar = tqdm(total=sum(count for _, count in batches),
                               desc=f"epoch {epoch}/{self.epochs}", unit="img",
                               leave=False, file=self.file or sys.stderr, dynamic_ncols=True)
                t0 = time.perf_counter()
                loss_sum, correct, seen, scored = 0.0, 0, 0, False
                try:
                    for step, (idx, global_count) in enumerate(batches):
                        grads = loss = None
                        if len(idx):  # a rank may get no sample of a short last batch
                            xb, tb = self.x_train[idx], self.t_train[idx]
                            grads = self.network.gradient(xb, tb)
                        grads = self._combine_gradients(grads, len(idx), global_count)
                        self.optimizer.update(self.network.params, grads)
                        if len(idx):
                            loss = getattr(self.network, "last_loss", None)
                            if loss is None:
                                loss = self.network.loss(xb, tb)
                            scores = getattr(self.network, "last_scores", None)
                            if scores is not None:
                                scored = True
                                correct += int((scores.argmax(axis=1) == labels[idx]).sum())
                            loss_sum += loss * len(idx)
                            seen += len(idx)
                        history.steps += 1
                        history.samples += global_count
                        if self.callback is not None:
                            self.callback(self, epoch, step, loss)
                        if bar is not None:  # all processes' samples; this process's loss
                            bar.update(global_count)
                            rate = bar.n / max(time.perf_counter() - t0, 1e-9)
                            if seen:
                                bar.set_postfix(loss=f"{loss_sum / seen:.4f}",
                                                acc=f"{correct / seen:.3f}",
                                                rate=f"{rate:.0f}/s", refresh=False)
                finally:
                    epoch_train_time = time.perf_counter() - t0
                    history.train_time += epoch_train_time
                    if bar is not None:
                        bar.close()
                loss_sum, correct, seen = self._epoch_totals(loss_sum, correct, seen)
                train_loss = loss_sum / seen
                train_acc = correct / seen if scored else float("nan")
                if self.x_test is not None:
                    test_loss, test_acc = self._evaluate(self.x_test, self.t_test)
                else:
                    test_loss, test_acc = float("nan"), float("nan")
                # appended together, so an interrupt never leaves lists of unequal length
                history.train_loss.append(float(train_loss))
                history.train_acc.append(float(train_acc))
                history.test_loss.append(float(test_loss))
                history.test_acc.append(float(test_acc))
                history.epoch_time.append(epoch_train_time)
                self._say(None if tqdm is None else tqdm,
                          f"epoch {epoch}/{self.epochs}: loss {history.train_loss[-1]:.4f} "
                          f"acc {history.train_acc[-1]:.4f} | test loss {test_loss:.4f} "
                          f"acc {test_acc:.4f} | {seen / epoch_train_time:.0f} samples/s")
        except KeyboardInterrupt:
            self._on_interrupt()
        return history
