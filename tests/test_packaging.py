"""Packaging: the sdist is complete, and a wheel built from it has the compiled backend.

``test_wheel_from_sdist_in_a_fresh_venv`` is what a user installing from an
index gets: ``python -m build --sdist``, then in a new virtual environment
``pip wheel`` of that sdist (with build isolation, so the build requirements
come from pyproject.toml alone), ``pip install`` of the wheel and
``tools/wheel_smoke_test.py`` against it.  It takes about two minutes of CPU
on 2 cores: the extension is compiled at ``-O0`` (``CYCONV_DEBUG_CYTHON=1``)
because the test checks packaging, not speed.  It skips, saying why, without
a C compiler or a reachable package index, or with ``CYCONV_SKIP_PACKAGING=1``;
CI runs it.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess
import sys
import sysconfig
import tarfile
import urllib.parse
import zipfile

import pytest

import cyconv

ROOT = pathlib.Path(__file__).resolve().parent.parent
VERSION = cyconv.__version__

pytestmark = pytest.mark.packaging


def _run(cmd, *, cwd, env=None, timeout=900):
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, (f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n"
                                    f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def _compiler():
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc)


def _index_reachable():
    """Whether pip's index answers (build isolation and the fresh venv download from it)."""
    url = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        return os.path.isdir(parts.path)
    try:
        with socket.create_connection((parts.hostname, parts.port or 443), timeout=5):
            return True
    except OSError:
        return False


def _packaging_prerequisites():
    if os.environ.get("CYCONV_SKIP_PACKAGING", "").strip() in {"1", "true", "yes"}:
        pytest.skip("CYCONV_SKIP_PACKAGING=1 is set")
    if _compiler() is None:
        pytest.skip("no C compiler: a wheel cannot be built here")
    pytest.importorskip("build", reason="needs the 'build' package (cyconv's [test] extra)")
    if not _index_reachable():
        pytest.skip("the package index is unreachable (offline): build isolation and the "
                    "fresh venv need it")


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    _packaging_prerequisites()
    out = tmp_path_factory.mktemp("sdist")
    # --no-isolation: this environment has the build requirements (the [test] extra)
    _run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", out, ROOT],
         cwd=out)
    (path,) = out.glob("cyconv-*.tar.gz")
    return path


def test_sdist_holds_the_sources_and_no_build_products(sdist):
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    pyx = {p.relative_to(ROOT).as_posix() for p in (ROOT / "cyconv_ext").glob("*.pyx")}
    pxd = {p.relative_to(ROOT).as_posix() for p in (ROOT / "cyconv_ext").glob("*.p[xy][di]")}
    assert pyx and pyx <= names, f"missing .pyx sources: {sorted(pyx - names)}"
    assert pxd <= names, f"missing .pxd/.pyi files: {sorted(pxd - names)}"
    include = ROOT / "cyconv_ext" / "include"
    if include.is_dir():
        headers = {p.relative_to(ROOT).as_posix() for p in include.rglob("*") if p.is_file()}
        assert headers <= names, f"missing cyconv_ext/include files: {sorted(headers - names)}"
    for required in ("LICENSE", "README.md", "setup.py", "pyproject.toml", "MANIFEST.in",
                     "plugins/cyconv-gap/src/cyconv_gap/_gap.pyx",
                     "plugins/cyconv-activations/pyproject.toml", "tests/conftest.py",
                     "tools/wheel_smoke_test.py", "docs/tutorial.md"):
        assert required in names, f"{required} is not in the sdist"
    # hand-written C lives in cyconv_ext/include/ and tests/ (gemm_variants.c);
    # any other .c is Cython output
    generated = [n for n in names if n.endswith((".so", ".pyc", ".html"))
                 or (n.endswith(".c") and "/include/" not in n and not n.startswith("tests/"))
                 or n.endswith("_build_info.py")]
    assert not generated, f"build products in the sdist: {generated}"
    with tarfile.open(sdist) as tar:
        pkg_info = tar.extractfile(f"cyconv-{VERSION}/PKG-INFO").read().decode()
    assert "License-Expression: BSD-3-Clause" in pkg_info
    assert "License-File: LICENSE" in pkg_info and "Author: cyconv developers" in pkg_info
    assert "Classifier: Programming Language :: Cython" in pkg_info


def test_the_metadata_names_the_projects_home(sdist):
    """[project.urls] (github.com/cyconv/cyconv is a placeholder for the real repository)."""
    with tarfile.open(sdist) as tar:
        pkg_info = tar.extractfile(f"cyconv-{VERSION}/PKG-INFO").read().decode()
    urls = dict(line.split(": ", 1)[1].split(", ", 1) for line in pkg_info.splitlines()
                if line.startswith("Project-URL: "))
    assert {k.lower() for k in urls} == {"homepage", "source", "documentation", "issues"}
    assert all(url.startswith("https://github.com/cyconv/cyconv") for url in urls.values())


def test_wheel_from_sdist_in_a_fresh_venv(sdist, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    env = dict(os.environ, CYCONV_DEBUG_CYTHON="1", CYCONV_BUILD_JOBS="2")
    for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
        env.pop(name, None)
    wheelhouse = tmp_path / "wheelhouse"
    _run([python, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", wheelhouse, sdist],
         cwd=tmp_path, env=env)
    (wheel,) = wheelhouse.glob("cyconv-*.whl")
    assert not wheel.name.endswith("-none-any.whl"), f"a pure-Python wheel: {wheel.name}"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    modules = {pathlib.Path(p).stem for p in (ROOT / "cyconv_ext").glob("*.pyx")}
    built = {n.split("/")[-1].split(".")[0] for n in names if n.endswith(".so")}
    assert modules <= built, f"extension modules missing from {wheel.name}: {modules - built}"
    assert "cyconv_ext/_build_info.py" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    _run([python, "-m", "pip", "install", wheel], cwd=tmp_path, env=env)
    smoke = _run([python, ROOT / "tools" / "wheel_smoke_test.py"], cwd=tmp_path, env=env)
    assert "compiled backend OK" in smoke.stdout and str(venv) in smoke.stdout
    versions = _run([python, "-c", "import cyconv; cyconv.show_versions()"], cwd=tmp_path,
                    env=env).stdout
    build = versions.split("\nBuild:\n", 1)[1].split("\n\n", 1)[0]
    # the wheel carries the record of its own build (Cython from the isolated build env)
    assert "CYCONV_DEBUG_CYTHON=1" in build
    (cython,) = [line for line in build.splitlines() if line.strip().startswith("Cython:")]
    assert cython.split(":", 1)[1].strip()[:1].isdigit(), cython


def test_a_tree_without_pyx_sources_refuses_to_build(tmp_path):
    """An incomplete source tree must not yield a silent pure-Python wheel."""
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "cyconv", tmp_path / "cyconv",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "cyconv_ext").mkdir()
    for path in (ROOT / "cyconv_ext").glob("*.p[xy][di]"):
        shutil.copy(path, tmp_path / "cyconv_ext" / path.name)
    result = subprocess.run([sys.executable, "setup.py", "bdist_wheel"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "no Cython sources (cyconv_ext/*.pyx)" in result.stderr + result.stdout
    assert not list(tmp_path.glob("dist/*.whl"))
