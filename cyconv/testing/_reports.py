"""The report of :func:`check_layer`: every check's outcome on one layer."""

from __future__ import annotations

from dataclasses import dataclass, field

from ._spec import CheckSkipped, expecting_failure, resolve_spec
from .checks import CHECK_NAMES, CHECKS

__all__ = ["CheckResult", "LayerCheckReport", "check_layer"]


@dataclass
class CheckResult:
    """Outcome of one check.

    Attributes
    ----------
    name : str
    status : {"passed", "skipped", "failed", "xfailed", "xpassed"}
        ``xfailed``: failed as declared in ``expected_failed_checks``;
        ``xpassed``: declared as an expected failure but passed.
    message : str
        Skip reason, failure message, or the declared reason.
    """

    name: str
    status: str
    message: str = ""


@dataclass
class LayerCheckReport:
    """Results of :func:`check_layer`: a mapping check name -> :class:`CheckResult`.

    Attributes
    ----------
    layer : str
        Label such as ``"Conv2D[cython]"``.
    results : dict
    """

    layer: str
    results: dict = field(default_factory=dict)

    def __getitem__(self, name):
        return self.results[name]

    def __iter__(self):
        return iter(self.results)

    def __len__(self):
        return len(self.results)

    def items(self):
        """(check name, :class:`CheckResult`) pairs."""
        return self.results.items()

    def status(self):
        """Mapping check name -> status string.

        Returns
        -------
        dict
        """
        return {k: r.status for k, r in self.results.items()}

    def with_status(self, *statuses):
        """Names of the checks whose status is one of ``statuses``.

        Returns
        -------
        list of str
        """
        return [k for k, r in self.results.items() if r.status in statuses]

    @property
    def ok(self):
        """True when nothing failed and no expected failure passed."""
        return not self.with_status("failed", "xpassed")

    def __str__(self):
        lines = [f"cyconv.testing.check_layer report for {self.layer}:"]
        for name, r in self.results.items():
            msg = f": {r.message}" if r.message else ""
            if len(msg) > 400:
                msg = msg[:400] + " ..."
            lines.append(f"  {r.status.upper():8s} {name}{msg}")
        return "\n".join(lines)


def expected_failures(expected):
    """``expected_failed_checks`` as a dict, its keys checked against :data:`CHECK_NAMES`."""
    expected = dict(expected or {})
    unknown = [k for k in expected if k not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check names in expected_failed_checks: {unknown}; "
                         f"known: {list(CHECK_NAMES)}")
    return expected


def selected_checks(checks):
    """The check names to run: all of :data:`CHECK_NAMES` for None, else ``checks`` checked."""
    names = list(CHECK_NAMES) if checks is None else list(checks)
    unknown = [c for c in names if c not in CHECKS]
    if unknown:
        raise ValueError(f"unknown checks {unknown}; known: {list(CHECK_NAMES)}")
    return names


def check_layer(layer_or_name, *, backend=None, reference_backend="numpy",
                expected_failed_checks=None, layer_kwargs=None, input_shape=None, checks=None):
    """Run the conformance checks on one layer.

    Parameters
    ----------
    layer_or_name : str, Layer subclass or Layer instance
        A registered name (looked up with ``backend`` via
        :func:`cyconv.get_layer`), a layer class, or a configured instance
        (then every check uses deep copies of it).
    backend : str, optional
        Backend for a layer name; None follows the preference order.
    reference_backend : str
        Implementation ``check_matches_reference`` compares with.
    expected_failed_checks : dict, optional
        ``{check_name: reason}``: checks known to fail.  They are run and
        reported as "xfailed"; one that passes is reported as "xpassed" and
        makes the call fail (remove it from the dict).
    layer_kwargs : dict, optional
        Constructor arguments (instead of ``check_init_kwargs``/``check_cases``).
    input_shape : tuple, optional
        Per-sample input shape (instead of ``check_input_shape``/``check_cases``).
    checks : sequence of str, optional
        Run only these checks (default: all of :data:`CHECK_NAMES`).

    Returns
    -------
    LayerCheckReport
        check name -> passed / skipped (reason) / xfailed / xpassed / failed.

    Raises
    ------
    AssertionError
        If any check failed or an expected failure passed; the message lists
        them (the report is attached as ``exc.report``).

    Examples
    --------
    >>> from cyconv.testing import check_layer
    >>> report = check_layer("ReLU", checks=["check_output_shape"])
    >>> report["check_output_shape"].status
    'passed'
    """
    expected = expected_failures(expected_failed_checks)
    names = selected_checks(checks)
    spec = resolve_spec(layer_or_name, backend, layer_kwargs, input_shape, reference_backend)
    report = LayerCheckReport(spec.label)
    for name in names:
        try:
            with expecting_failure(name in expected):
                CHECKS[name].run(spec)
        except CheckSkipped as exc:
            report.results[name] = CheckResult(name, "skipped", str(exc))
        except Exception as exc:  # any error of the layer is a failed check
            message = f"{type(exc).__name__}: {exc}"
            if name in expected:
                report.results[name] = CheckResult(name, "xfailed",
                                                   f"{expected[name]} ({message})")
            else:
                report.results[name] = CheckResult(name, "failed", message)
        else:
            if name in expected:
                report.results[name] = CheckResult(
                    name, "xpassed", f"declared as an expected failure ({expected[name]}) but "
                                     f"passed; remove it from expected_failed_checks")
            else:
                report.results[name] = CheckResult(name, "passed")
    if not report.ok:
        bad = report.with_status("failed", "xpassed")
        error = AssertionError(f"{spec.label} failed {len(bad)} check(s): {', '.join(bad)}\n"
                               f"{report}")
        error.report = report
        raise error
    return report
