"""Runtime CPU dispatch: which build of the compiled kernels this process runs.

Design: setup.py compiles every kernel module (each ``cyconv_ext/*.pyx`` but
the small helpers) once per instruction-set variant: ``baseline`` (the
platform's default, SSE2 on x86-64) as ``cyconv_ext._conv``, ``avx2``
(x86-64-v3: AVX2, FMA, BMI2) as ``cyconv_ext._conv_avx2`` and ``avx512``
(x86-64-v4: AVX-512 F/BW/CD/DQ/VL) as ``cyconv_ext._conv_avx512``.  It
records what it built in ``cyconv_ext._cpu``, the always-baseline module that
also probes the CPU (see its "Design:" comment).

The first request picks one variant for the whole process, as NumPy and
PyTorch do: the best built one whose features the CPU (and OS) supports.
Every kernel module comes from that variant, so results never mix builds.  A
variant the CPU cannot run is never imported: its module initialisation alone
may execute the wider instructions and die of SIGILL.

``CYCONV_CPU_FEATURES`` overrides the choice; it is read once, at the first
request (PyTorch's ``ATEN_CPU_CAPABILITY`` is the model).  Unset, empty or
``auto``: the best variant.  A variant name (``baseline``, ``avx2``,
``avx512``; case and surrounding spaces ignored): exactly that variant.  A
name that is unknown, was not built, or needs features this CPU lacks raises
:class:`CpuDispatchError` (an ``ImportError``) that says why and which values
would work.  So the compiled backend is unavailable (``show_config()`` shows
the reason; calls fall back to the numpy backend with a
``BackendFallbackWarning``, an explicit ``backend="cython"`` raises
``BackendError``), rather than silently running other kernels than were asked
for (a test of a variant would cover nothing) or crashing on an illegal
instruction.
"""

from __future__ import annotations

import functools
import importlib
import os

__all__ = ["ENV_VAR", "CpuDispatchError", "choose_variant", "selected_variant",
           "import_kernels", "dispatch_info"]

ENV_VAR = "CYCONV_CPU_FEATURES"
AUTO = "auto"


class CpuDispatchError(ImportError):
    """``CYCONV_CPU_FEATURES`` asks for kernels this build or this CPU cannot run."""


def choose_variant(requested, variants, cpu_features):
    """The variant to run.

    ``requested``: the override's value (None, "" or "auto": the best one);
    ``variants``: the build record's ``(name, flags, needed features)``,
    best first; ``cpu_features``: the features the CPU supports.
    """
    names = [name for name, _, _ in variants]
    runnable = [name for name, _, needed in variants if set(needed) <= set(cpu_features)]
    choice = (requested or "").strip().lower()
    if choice in ("", AUTO):
        if not runnable:  # the baseline needs nothing, so only a broken record gets here
            raise CpuDispatchError(f"no kernel variant of this build runs on this CPU "
                                   f"(built: {', '.join(names) or 'none'})")
        return runnable[0]
    hint = (f"unset {ENV_VAR} (or set it to {AUTO!r}) to pick the best one automatically; "
            f"this CPU runs: {', '.join(runnable) or 'none'}")
    if choice not in names:
        raise CpuDispatchError(f"{ENV_VAR}={requested!r} names no kernel variant of this "
                               f"build (built: {', '.join(names)}); {hint}")
    if choice not in runnable:
        needed = dict((name, need) for name, _, need in variants)[choice]
        missing = sorted(set(needed) - set(cpu_features))
        raise CpuDispatchError(f"{ENV_VAR}={requested!r} asks for the {choice} kernels, but "
                               f"this CPU lacks {', '.join(missing)}; {hint}")
    return choice


def _probe():
    from cyconv_ext import _cpu

    return _cpu.build_record(), _cpu.cpu_features()


@functools.cache
def selected_variant():
    """The name of the kernel variant this process runs (chosen once)."""
    record, features = _probe()
    return choose_variant(os.environ.get(ENV_VAR), record["variants"], features)


def module_name(kernel, variant):
    """``("_conv", "avx2")`` -> ``"cyconv_ext._conv_avx2"`` (baseline: ``"cyconv_ext._conv"``)."""
    return f"cyconv_ext.{kernel}" + ("" if variant == "baseline" else f"_{variant}")


def import_kernels(*kernels):
    """The selected variant's modules for ``kernels`` (e.g. ``"_conv", "_pool"``), in order."""
    record, _ = _probe()
    unknown = [k for k in kernels if k not in record["modules"]]
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not a kernel module built per CPU variant "
                         f"(those are: {', '.join(record['modules'])})")
    variant = selected_variant()
    return tuple(importlib.import_module(module_name(k, variant)) for k in kernels)


def dispatch_info():
    """What :func:`cyconv.show_config` reports about dispatch; never raises."""
    try:
        record, features = _probe()
    except ImportError as exc:
        return {"kernel variant": f"none ({exc})"}
    from cyconv_ext import _cpu

    requested = os.environ.get(ENV_VAR)
    try:
        running = selected_variant()
        how = f"{ENV_VAR}={requested}" if (requested or "").strip() else "auto"
        variant = f"{running} ({how})"
    except CpuDispatchError as exc:
        variant = f"none: {exc}"
    probed = _cpu.probed_features()
    return {
        "kernel variant": variant,
        "built variants": ", ".join(name for name, _, _ in record["variants"]),
        "cpu features": (" ".join(f for f in probed if f in features) or "none")
        if probed else "not probed (baseline kernels only)",
    }
