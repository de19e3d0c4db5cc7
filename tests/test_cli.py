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


def test_bench_lists_its_ops_in_process(capsys):
    """``cyconv.bench`` is a package; ``--list`` runs nothing and shows every op."""
    from cyconv import bench
    from cyconv.bench.cli import DESCRIPTION

    assert bench.__doc__.split("\n\n")[0] == DESCRIPTION  # what --help shows
    assert bench.main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines] == [op[0] for op in bench.OPS]


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


def test_version():
    import cyconv

    result = cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"cyconv {cyconv.__version__}"


def test_help_shows_the_defaults():
    train = cli("train", "--help").stdout
    for text in ("training epochs (default: 10)", "mini-batch size (default: 100)",
                 "(default: adam)", "(default: float32)", "(default: digits)"):
        assert text in " ".join(train.split()), text
    demo = " ".join(cli("demo", "--help").stdout.split())
    assert "(default: 20)" in demo and "(default: 0.002)" in demo and "(default: 1)" in demo
    for text in (train, demo):
        assert "(default: None)" not in text and "(default: False)" not in text


def test_one_epoch_is_singular_and_a_log_gets_one_line_per_epoch(tmp_path):
    pytest.importorskip("sklearn")
    common = ["train", "--data", "digits", "--batch-size", "100", "--train-size", "200",
              "--test-size", "50", "--threads", "1"]
    one = cli(*common, "--epochs", "1", "--quiet")
    assert one.returncode == 0, one.stderr
    assert "1 epoch," in one.stdout and "after 1 epoch;" in one.stdout
    assert "1 epochs" not in one.stdout
    # stderr is a pipe here, as when output goes to a log: no redrawn bars
    two = cli(*common, "--epochs", "2")
    assert two.returncode == 0, two.stderr
    assert "2 epochs," in two.stdout
    lines = two.stderr.splitlines()
    assert [line.split(":")[0] for line in lines if line.startswith("epoch")] == [
        "epoch 1/2", "epoch 2/2"]
    assert "\r" not in two.stderr and "img/s" not in two.stderr
