"""The docs stay true: every Python block of README.md and docs/*.md runs.

``tools/run_doc_blocks.py`` runs each file's blocks in order in a subprocess,
in a fresh temporary folder (blocks write files and register layers); its
markers (``<!-- no-run: ... -->``, ``<!-- file: ... -->``, ``<!-- requires:
... -->``, ``<!-- raises: ... -->``) are described there.  A block that needs
modules beyond cyconv's ``[test]`` extra (``requires``) runs alone, and is
skipped, naming them, where they are missing.  A new docs/*.md file is picked
up without changes here.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
RUNNER = ROOT / "tools" / "run_doc_blocks.py"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _runner():
    spec = importlib.util.spec_from_file_location("cyconv_tools_run_doc_blocks", RUNNER)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


parse = _runner().parse


def _run(path, tmp_path, *extra):
    # One thread everywhere: the blocks are checked for what they compute, and on a busy
    # machine the README's 20-epoch training took 90 s with 2 threads (results do not
    # depend on the thread count).
    env = dict(os.environ, MPLBACKEND="Agg", CYCONV_NUM_THREADS="1", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(RUNNER), str(path), *extra], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (f"{path.name}: a block failed\n{result.stdout[-4000:]}\n"
                                    f"{result.stderr[-6000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_python_block_runs(path, tmp_path):
    blocks = [b for b in parse(path) if b.kind != "requires"]
    if not blocks:
        pytest.skip(f"{path.name} has no Python block to run in sequence (none, or only 'requires' ones)")
    summary = _run(path, tmp_path)
    assert summary["ran"] + summary["written"] + summary["shown"] == len(blocks)


STANDALONE = [(path, block) for path in DOCS for block in parse(path) if block.kind == "requires"]


@pytest.mark.parametrize("path,block", STANDALONE,
                         ids=[f"{p.name}:{b.line}" for p, b in STANDALONE])
def test_blocks_with_optional_requirements_run_alone(path, block, tmp_path):
    missing = [m for m in block.modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{path.name}:{block.line} needs {', '.join(missing)}")
    assert _run(path, tmp_path, "--block", str(block.line))["ran"] == 1


def test_the_runner_catches_a_wrong_block(tmp_path):
    doc = tmp_path / "bad.md"
    doc.write_text("```python\nx = 1\n```\n\n<!-- raises: ValueError -->\n```python\n"
                   "int('3')\n```\n\n```python\n>>> 1 + 1\n3\n```\n")
    result = subprocess.run([sys.executable, str(RUNNER), str(doc)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "expected ValueError, nothing was raised" in result.stderr
    doc.write_text("```python\n>>> int('x')\nValueError: invalid literal for int() with base "
                   "10: 'x'\n>>> 1 +\\\n... 1\n2\n>>> print('a  b')\na b\n```\n")
    assert _run(doc, tmp_path)["ran"] == 1
    doc.write_text("```python\n>>> 1 + 1\n3\n```\n")
    result = subprocess.run([sys.executable, str(RUNNER), str(doc)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "expected:\n3" in result.stderr
