"""Crash-proof fuzzer for cyconv's public API.

Usage (from the repository root)::

    python -m tools.fuzz --cases 10000            # long run, prints a summary
    python -m tools.fuzz --cases 2000 --seed 7    # another stream of cases
    python -m tools.fuzz --replay "<case>"        # re-run one printed case in-process

Cases are plain dicts ("specs": op name, argument descriptions, seeds) drawn
by Hypothesis strategies (:mod:`.cases`, :func:`case_strategy`).  A spec is
turned into arrays (:mod:`.arrays`) inside a *worker* subprocess
(:mod:`.worker`), which runs the public call, judges the outcome
(:mod:`.run`, :mod:`.judge`, :mod:`.reference`) and sends back a small result
dict.  A worker that dies (segfault, abort, OOM kill) or does not answer
within the per-case timeout is reported as ``crash`` / ``hang`` with the case,
and respawned, so one bad case never takes the test run (or the machine: each
worker runs under an address-space limit, ``RLIMIT_AS``) down.

What every case must satisfy (else it is a *failure*):

* the call returns, and the result equals the numpy reference backend run on a
  clean, normalised (C-contiguous, native float) copy of the inputs, or
* it raises ``ValueError`` (incl. ``cyconv.ShapeError``), ``TypeError``,
  ``MemoryError`` (or ``LookupError`` for registry/backend names) whose
  message names the offending argument,
* no input array is modified, and an invalid argument is never accepted.

Whether a case is valid is decided by an *independent* oracle
(:mod:`.oracle`: its own shape rule and argument rules,
:func:`expectation`), not by cyconv.  The valid geometries, the bad argument
values and the faulty arrays come from cyconv's one catalogue,
:mod:`cyconv.testing.strategies`.

tests/test_fuzz.py imports this package (``from tools import fuzz``) and runs
a bounded number of cases under pytest; docs/reliability.md has the long-run
numbers.
"""

from .arrays import BAD_DTYPES, arr, build_array, clean, lit
from .cases import case_strategy, functional_strategy, layer_strategy, registry_strategy
from .cli import describe_failure, generate, main, summarize
from .judge import FAILURES, compare
from .oracle import expectation
from .run import evaluate
from .worker import Worker, WorkerPool

__all__ = [
    "BAD_DTYPES", "FAILURES", "Worker", "WorkerPool", "arr", "build_array", "case_strategy",
    "clean", "compare", "describe_failure", "evaluate", "expectation", "functional_strategy",
    "generate", "layer_strategy", "lit", "main", "registry_strategy", "summarize",
]
