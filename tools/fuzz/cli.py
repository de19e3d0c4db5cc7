"""Command line: ``python -m tools.fuzz --cases N [--seed S]`` or ``--replay "<case>"``."""

from __future__ import annotations

import argparse
import ast
import collections
import os
import time

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hseed

from .cases import case_strategy
from .judge import FAILURES
from .oracle import expectation
from .run import evaluate
from .worker import WorkerPool

REPLAY = "python -m tools.fuzz --replay "


def describe_failure(spec, res):
    """A failure report with the case and the one-line reproducer."""
    lines = [f"outcome: {res.get('status')}: {res.get('exc_type', '')} {res.get('message', '')}",
             f"case: {spec!r}",
             "reproduce: " + REPLAY + repr(repr(spec))]
    if res.get("traceback"):
        lines.append(res["traceback"])
    if res.get("stderr"):
        lines.append("worker stderr:\n" + res["stderr"])
    return "\n".join(lines)


def generate(n, seed=0, weights=(6, 2, 1)):
    """``n`` case specs drawn by Hypothesis (deterministic for a given seed)."""
    specs = []
    rounds = 0
    while len(specs) < n:
        batch = []

        @hseed(seed * 1000 + rounds)
        @settings(max_examples=min(n - len(specs), 5000), database=None, deadline=None,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case_strategy(weights))
        def collect(spec):
            batch.append(spec)  # noqa: B023 -- called at once, in this iteration

        collect()
        specs.extend(batch)
        rounds += 1
    return specs[:n]


def summarize(results, elapsed):
    """Counts by outcome, error type and op, one line each."""
    outcomes = collections.Counter(r["status"] for _, r in results)
    errors = collections.Counter(r.get("exc_type") for _, r in results if r["status"] == "error")
    by_op = collections.Counter(s["op"] if s["op"] not in ("layer", "registry") else
                                f"{s['op']}:{s.get('layer', s.get('kind'))}"
                                for s, _ in results)
    lines = [f"cases: {len(results)} in {elapsed:.1f} s",
             "outcomes: " + ", ".join(f"{k}={v}" for k, v in sorted(outcomes.items())),
             "errors by type: " + ", ".join(f"{k}={v}" for k, v in sorted(errors.items())),
             f"crashes: {outcomes.get('crash', 0)}",
             f"hangs: {outcomes.get('hang', 0)}",
             f"wrong results: {outcomes.get('wrong_result', 0)}",
             f"mutated inputs: {outcomes.get('mutated_input', 0)}",
             "other failures: " + str(sum(outcomes.get(k, 0) for k in FAILURES
                                          if k not in ('crash', 'hang', 'wrong_result',
                                                       'mutated_input'))),
             "cases by op: " + ", ".join(f"{k}={v}" for k, v in sorted(by_op.items()))]
    return "\n".join(lines)


def main(argv=None):
    """Run the fuzzer; exit status 1 when any case failed."""
    p = argparse.ArgumentParser(prog="python -m tools.fuzz",
                                description="Crash-proof fuzzer for cyconv's public API.")
    p.add_argument("--cases", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--timeout", type=float, default=20.0, help="seconds per case")
    p.add_argument("--mem-headroom", type=int, default=3 << 30,
                   help="bytes of address space a worker may add after warm-up")
    p.add_argument("--replay", help="run one case (repr of its spec) in-process")
    p.add_argument("--show-failures", type=int, default=20)
    p.add_argument("--failures-file", help="write every failing case (repr, one a line) here")
    args = p.parse_args(argv)
    if args.replay:
        spec = ast.literal_eval(args.replay)
        spec["expect"] = expectation(spec)
        res = evaluate(spec)
        print(res)
        return 0 if res["status"] not in FAILURES else 1
    t0 = time.time()
    specs = generate(args.cases, args.seed)
    print(f"generated {len(specs)} cases in {time.time() - t0:.1f} s", flush=True)
    results = []
    t1 = time.time()
    with WorkerPool(args.workers, args.timeout, args.mem_headroom) as pool:
        for i, (spec, res) in enumerate(pool.run_many(specs)):
            results.append((spec, res))
            if res["status"] in FAILURES and sum(
                    r["status"] in FAILURES for _, r in results) <= args.show_failures:
                print("FAILURE\n" + describe_failure(spec, res) + "\n", flush=True)
            if (i + 1) % 1000 == 0:
                print(f"... {i + 1} cases", flush=True)
    print(summarize(results, time.time() - t1))
    failing = [(s, r) for s, r in results if r["status"] in FAILURES]
    if failing:
        kinds = collections.Counter(
            (r["status"], r.get("exc_type", ""), s["op"], s.get("fault")) for s, r in failing)
        print("failures by (outcome, exception, op, fault):")
        for key, count in kinds.most_common():
            print(f"  {count:5d}  {key}")
    if args.failures_file:
        with open(args.failures_file, "w") as f:
            for s, r in failing:
                f.write(repr({"result": r, "case": s}) + "\n")
    bad = len(failing)
    return 1 if bad else 0
