"""Load the OpenMP runtime with cyconv's default wait policy; leave ``os.environ`` as it was.

OpenMP threads that spin after a parallel region steal the core from the thread
that has real work whenever the machine has more runnable threads than cores
(measured: 2-thread conv calls 50x slower at load 4 on 2 cores, docs/tutorial.md,
"Note on threads under load"); sleeping at once costs microseconds per region
on an idle machine.  GNU OpenMP reads ``OMP_WAIT_POLICY`` once, when it loads,
so cyconv puts ``PASSIVE`` into the environment (unless the user set a value),
loads its OpenMP-linked module, and takes the variable out again on every exit
path: the runtime keeps the policy, the user's environment and the processes
it starts do not see it.  A runtime that another library loaded first keeps
the policy it read then.

Standard library only; ``cyconv/__init__.py`` imports it first of all, and the
import does the loading (the last line).
"""

from __future__ import annotations

import importlib
import os

__all__ = ["RUNTIME_APPLIED", "RUNTIME_DEFAULTS", "load_openmp_runtime"]

#: What cyconv asks of the OpenMP runtime where the environment is silent.
RUNTIME_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def _import_openmp_module():
    try:
        importlib.import_module("cyconv_ext._openmp_helpers")
    except ImportError:     # no compiled extension: nothing loads the runtime
        pass


def load_openmp_runtime(environ=None, load=_import_openmp_module):
    """Run ``load`` with :data:`RUNTIME_DEFAULTS` filled into ``environ`` (default
    ``os.environ``) where unset, then restore ``environ``; returns the defaults applied."""
    environ = os.environ if environ is None else environ
    applied = {key: value for key, value in RUNTIME_DEFAULTS.items() if key not in environ}
    environ.update(applied)
    try:
        load()
    finally:
        for key in applied:
            environ.pop(key, None)
    return applied


RUNTIME_APPLIED = load_openmp_runtime()
