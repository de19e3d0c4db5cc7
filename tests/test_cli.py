"""The command line: ``python -m cyconv ...`` in a subprocess, and ``main(argv)`` in process."""

import os
import subprocess
import sys

import numpy as np
import pytest

from cyconv.__main__ import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, cwd=None, timeout=240):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "cyconv", *args], check=False,
                          capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout)


def assert_one_line_error(result):
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("cyconv")
    assert "error:" in lines[0]
    return lines[0]


ARG_ERRORS = [
    ([], "COMMAND"),
    (["frobnicate"], "invalid choice"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--epochs", "many"], "--epochs"),
    (["train", "--data", "cifar"], "--data"),
    (["train", "--lr", "-1"], "--lr"),
    (["train", "--threads", "0"], "thread"),
    (["train", "--no-such-flag"], "unrecognized arguments"),
    (["demo", "--batch-size", "-3"], "--batch-size"),
]


@pytest.mark.parametrize("args, fragment", ARG_ERRORS)
def test_argument_errors_in_process(args, fragment, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and fragment in lines[0]


@pytest.mark.parametrize("args, fragment", [ARG_ERRORS[0], ARG_ERRORS[2], ARG_ERRORS[7]])
def test_argument_errors_exit_2_with_one_line(args, fragment):
    line = assert_one_line_error(cli(*args))
    assert fragment in line


def test_run_errors_exit_2_with_one_line(tmp_path):
    line = assert_one_line_error(cli("train", "--data", "mnist", "--data-dir",
                                     str(tmp_path / "absent")))
    assert "does not exist" in line
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"rubbish rubbish")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"rubbish")
    line = assert_one_line_error(cli("train", "--data", "mnist", "--data-dir", str(tmp_path)))
    assert "bad magic number" in line
    line = assert_one_line_error(cli("train", "--backend", "nonesuch"))
    assert "nonesuch" in line


def test_in_process_errors(capsys):
    assert main(["train", "--data", "digits", "--train-size", "100000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cyconv: error: --train-size 100000 exceeds") and err.count("\n") == 1
    with pytest.raises(SystemExit) as info:
        main(["train", "--model", "huge"])
    assert info.value.code == 2


def test_layers_and_info():
    result = cli("layers")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "numpy" in lines[0]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:] if line.strip()
            and not line.startswith("backend")}
    assert {"Conv2D", "MaxPool2D", "Affine", "ReLU"} <= set(rows)
    assert "x" in rows["Conv2D"]
    result = cli("info")
    assert result.returncode == 0, result.stderr
    assert "numpy" in result.stdout and "threads" in result.stdout


def test_bench_delegates(monkeypatch, capsys):
    import types

    seen = {}
    fake = types.ModuleType("cyconv.bench")
    fake.main = lambda argv: seen.setdefault("argv", argv) and 0
    monkeypatch.setitem(sys.modules, "cyconv.bench", fake)
    import cyconv

    monkeypatch.setattr(cyconv, "bench", fake, raising=False)
    assert main(["bench", "--quick", "--threads", "2"]) in (0, None, ["--quick", "--threads", "2"])
    assert seen["argv"] == ["--quick", "--threads", "2"]


def test_bench_missing(monkeypatch, capsys):
    import cyconv

    monkeypatch.setitem(sys.modules, "cyconv.bench", None)
    monkeypatch.delattr(cyconv, "bench", raising=False)
    assert main(["bench"]) == 2
    err = capsys.readouterr().err
    assert "cyconv.bench is not available" in err and err.count("\n") == 1


def test_tiny_train_run_on_digits(tmp_path):
    pytest.importorskip("sklearn")
    save = tmp_path / "params.npz"
    plot = tmp_path / "curves.png"
    args = ["train", "--data", "digits", "--epochs", "1", "--batch-size", "50",
            "--train-size", "300", "--test-size", "100", "--seed", "1", "--threads", "1",
            "--save", str(save), "--quiet", "--summary"]
    have_mpl = True
    try:
        import matplotlib  # noqa: F401
        args += ["--plot", str(plot)]
    except ImportError:
        have_mpl = False
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout and "training time" in result.stdout
    assert "300 train / 100 test" in result.stdout
    assert "Conv2D" in result.stdout  # --summary
    with np.load(save) as data:
        assert "0.W" in data.files and data["0.W"].shape == (30, 1, 3, 3)
        assert data["0.W"].dtype == np.float32
    if have_mpl:
        assert plot.stat().st_size > 1000
        assert (tmp_path / "curves-filters.png").stat().st_size > 1000


def test_demo_quick(tmp_path):
    pytest.importorskip("sklearn")
    result = cli("demo", "--epochs", "1", "--compare-steps", "2", "--quiet", "--threads", "1",
                 "--out", str(tmp_path / "plots"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "test accuracy" in out and "speed-up" in out and "training time" in out
    if "plots saved" in out:
        assert (tmp_path / "plots" / "cyconv-demo-curves.png").exists()
        assert (tmp_path / "plots" / "cyconv-demo-filters.png").exists()
    else:
        assert "matplotlib is not installed" in out
