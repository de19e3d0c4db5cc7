"""Neither optional engine is needed by ``import cyconv``: Dask (cyconv[dask]) and
MPI (cyconv[mpi]) load only with cyconv.dask and cyconv.distributed."""

import subprocess
import sys

import pytest

OPTIONAL = ("dask", "distributed", "mpi4py")


def run_blocked(code, blocked=OPTIONAL):
    # sys.modules[name] = None makes `import name` raise ImportError, as if not installed
    prelude = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True,
                          timeout=120)


def test_import_cyconv_and_its_networks_without_dask_or_mpi():
    run = run_blocked(
        "import numpy as np, cyconv\n"
        "from cyconv import datasets, nn, optim, training, compat\n"
        "net = nn.Sequential([cyconv.Affine(3)], input_shape=(4,), seed=0)\n"
        "x, t = np.ones((6, 4)), np.arange(6) % 3\n"
        "training.Trainer(net, x, t, epochs=1, batch_size=2, progress=False).train()\n"
        "cyconv.show_config()\n"
        "print('ok')\n")
    assert run.returncode == 0, run.stderr
    assert run.stdout.endswith("ok\n")


def test_import_cyconv_loads_neither_engine():
    run = subprocess.run([sys.executable, "-c",
                          "import sys, cyconv\nfrom cyconv import nn, training\n"
                          "print(sorted(m for m in sys.modules if m.split('.')[0] in "
                          f"{OPTIONAL!r}))"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


@pytest.mark.parametrize("module, extra", [("cyconv.dask", "cyconv[dask]"),
                                           ("cyconv.distributed", "cyconv[mpi]")])
def test_the_integrations_say_what_to_install(module, extra):
    run = run_blocked(f"import {module}")
    assert run.returncode != 0
    assert "ImportError" in run.stderr and f'pip install "{extra}"' in run.stderr


def test_train_mpi_without_mpi4py_is_a_one_line_error():
    run = run_blocked("from cyconv.__main__ import main\n"
                      "sys.exit(main(['train', '--mpi', '--epochs', '1', '--train-size', '10']))")
    assert run.returncode == 2
    assert run.stderr.startswith("cyconv: error: cyconv.distributed needs mpi4py")
    assert "Traceback" not in run.stderr
