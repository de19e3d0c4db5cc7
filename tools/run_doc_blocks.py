"""Run the Python code blocks of Markdown files, so that the docs stay true.

    python tools/run_doc_blocks.py README.md docs/tutorial.md   # file by file
    python tools/run_doc_blocks.py README.md --block 123        # the block at line 123, alone

Each file's ```python blocks run in order, in one namespace, in the current
folder (``tests/test_docs.py`` runs each file in a fresh temporary folder, in
a subprocess, so blocks may write files and register layers).  A comment on
the line right above a block changes what happens to it:

``<!-- no-run: reason -->``
    shown only (a fragment, an excerpt of a bigger file); compiled, not run.
``<!-- file: path/name.py -->``
    written to that path (relative to the folder) for the blocks after it,
    and compiled when it is Python.
``<!-- requires: torch, dask -->``
    needs modules beyond cyconv's ``[test]`` extra: the block must be
    self-contained; it is left out of the file's run and runs alone
    (``--block``), which ``tests/test_docs.py`` skips, saying why, when a
    module is missing.
``<!-- raises: ValueError -->``
    the block must raise that exception (a refusal the text documents).

A block of ``>>>`` lines is a doctest: each output must match (whitespace
normalised, ``...`` matches anything), and an expected ``SomeError: message``
means that exception with that message.

Exit status 0 when every block behaved; 1 at the first that did not (the
blocks after it may depend on it).  The last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import contextlib
import doctest
import io
import json
import os
import re
import sys
import traceback
from dataclasses import dataclass, field

FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"^<!--\s*(no-run|file|requires|raises)\s*:\s*(.*?)\s*-->\s*$")
PYTHON = {"python", "py", "pycon"}
EXPECTED_EXCEPTION = re.compile(r"^(\w+(?:Error|Exception|Warning|Exit)): (.*)", re.S)


@dataclass
class Block:
    path: str
    line: int  # of the opening fence, 1-based
    code: str
    kind: str = "run"  # run, doctest, no-run, file, requires, raises
    value: str = ""
    modules: list = field(default_factory=list)

    @property
    def name(self):
        return f"{self.path}:{self.line}"


def parse(path):
    """The Python blocks of a Markdown file, with their markers."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start, language = i, match.group(1).lower()
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            i += 1
        if language in PYTHON:
            code = "\n".join(lines[start + 1:i]) + "\n"
            block = Block(str(path), start + 1, code)
            marker = MARKER.match(lines[start - 1]) if start else None
            if marker:
                block.kind, block.value = marker.group(1), marker.group(2)
                if block.kind == "requires":
                    block.modules = [m.strip() for m in block.value.split(",") if m.strip()]
            elif code.lstrip().startswith(">>>"):
                block.kind = "doctest"
            blocks.append(block)
        i += 1
    return blocks


def _normalised(text):
    return " ".join(text.split())


def _run_doctest(block, namespace):
    checker = doctest.OutputChecker()
    flags = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
    for example in doctest.DocTestParser().get_examples(block.code, block.name):
        where = f"{block.path}:{block.line + 1 + example.lineno}"
        expected = EXPECTED_EXCEPTION.match(example.want)
        code = compile(example.source, where, "single")
        if expected:
            try:
                exec(code, namespace)
            except Exception as exc:
                name, message = expected.groups()
                if type(exc).__name__ != name or _normalised(str(exc)) != _normalised(message):
                    raise AssertionError(f"{where}: expected {name}: {_normalised(message)}\n"
                                         f"got {type(exc).__name__}: {_normalised(str(exc))}"
                                         ) from exc
                continue
            raise AssertionError(f"{where}: expected {expected.group(1)}, nothing was raised")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(code, namespace)
        if not checker.check_output(example.want, out.getvalue(), flags):
            raise AssertionError(f"{where}: {example.source.strip()}\nexpected:\n"
                                 f"{example.want}got:\n{out.getvalue()}")


def run_block(block, namespace):
    """Run (or write, or compile) one block; raise on misbehaviour; return what was done."""
    if block.kind == "no-run":
        compile(block.code, block.name, "exec")
        return "shown"
    if block.kind == "file":
        folder = os.path.dirname(block.value)
        if folder:
            os.makedirs(folder, exist_ok=True)
        with open(block.value, "w", encoding="utf-8") as f:
            f.write(block.code)
        if block.value.endswith(".py"):
            compile(block.code, block.value, "exec")
        return "written"
    if block.kind == "doctest":
        _run_doctest(block, namespace)
        return "ran"
    code = compile(block.code, block.name, "exec")
    if block.kind == "raises":
        try:
            exec(code, namespace)
        except Exception as exc:
            if type(exc).__name__ != block.value:
                raise AssertionError(f"{block.name}: expected {block.value}, got "
                                     f"{type(exc).__name__}: {exc}") from exc
            return "ran"
        raise AssertionError(f"{block.name}: expected {block.value}, nothing was raised")
    exec(code, namespace)
    return "ran"


def run_file(path, only_line=None):
    """Run a file's blocks (or the one at ``only_line``); return the summary dict."""
    blocks = parse(path)
    summary = {"file": str(path), "ran": 0, "written": 0, "shown": 0, "standalone": [],
               "failed": None}
    if only_line is not None:
        blocks = [b for b in blocks if b.line == only_line]
        if not blocks:
            raise SystemExit(f"{path}: no Python block opens at line {only_line}")
    namespace = {"__name__": "__main__"}
    for block in blocks:
        if block.kind == "requires" and only_line is None:
            summary["standalone"].append(block.line)
            continue
        try:
            summary[run_block(block, namespace)] += 1
        except BaseException as exc:  # SystemExit too: a block may not end the run quietly
            if isinstance(exc, KeyboardInterrupt):
                raise
            traceback.print_exc()
            summary["failed"] = {"line": block.line, "error": f"{type(exc).__name__}: {exc}"}
            print(f"FAILED: the block at {block.name}", file=sys.stderr)
            break
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--block", type=int, default=None, metavar="LINE",
                        help="run only the block whose fence is at LINE (of the one file)")
    args = parser.parse_args(argv)
    if args.block is not None and len(args.files) != 1:
        parser.error("--block needs exactly one file")
    os.environ.setdefault("MPLBACKEND", "Agg")
    failed = False
    for path in args.files:
        summary = run_file(path, args.block)
        failed |= summary["failed"] is not None
        print(json.dumps(summary))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
