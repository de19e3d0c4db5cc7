"""cyconv.distributed: DistributedTrainer under a real ``mpiexec -n 2`` (tests/mpi/train_ranks.py)
against single-process training in this process.

Tolerance of "2 ranks == 1 process with the same global batch": after 20 Adam
steps (global batch 64) every parameter array agrees within ``TRAJECTORY_RTOL``
times its largest magnitude: 1e-12 in float64, 3e-5 in float32, while the steps
moved it by more than 100 times that.  Both runs compute the same mean gradient;
only the order of summation over the batch differs (each rank sums its half, the
Allreduce adds the halves; NumPy's matrix product rounds differently for a half
batch), and Adam's steps carry those last-place differences along.  Measured on
the development machine (2026-12-01): at most 2.7e-15 (float64) and 2.7e-6
(float32).  On the 20-epoch digits recipe the per-epoch training losses agreed
to 1e-6 and the final test accuracy was the same (99.16%); the test allows 1e-3
and two of the 359 test digits.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

MPI = pytest.importorskip("mpi4py.MPI", reason="needs mpi4py and an MPI library (cyconv[mpi])")

from cyconv import _threads, datasets  # noqa: E402
from cyconv.distributed import DistributedTrainer  # noqa: E402
from cyconv.nn import SimpleConvNet  # noqa: E402
from cyconv.training import Trainer  # noqa: E402

SCRIPT = os.path.join(os.path.dirname(__file__), "mpi", "train_ranks.py")
TRAJECTORY_RTOL = {"float64": 1e-12, "float32": 3e-5}
LAUNCH_TIMEOUT = 300  # seconds; a hang fails the test instead of the whole run


def mpiexec():
    """The mpiexec next to this Python (the mpich wheel's), else one on PATH."""
    here = os.path.dirname(sys.executable)
    found = shutil.which("mpiexec", path=os.pathsep.join([here, os.environ.get("PATH", "")]))
    if found is None:
        pytest.skip("no mpiexec found: pip install mpich (cyconv[mpi])")
    version = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=60)
    command = [found]
    if "Open MPI" in version.stdout + version.stderr or "OpenRTE" in version.stdout:
        # Open MPI refuses to run as root without this; MPICH's hydra needs no flag
        command += ["--allow-run-as-root", "--oversubscribe"]
    return command


def launch(out, *args, n=2):
    env = {k: v for k, v in os.environ.items() if k not in ("CYCONV_NUM_THREADS",
                                                            "OMP_NUM_THREADS")}
    return subprocess.run(mpiexec() + ["-n", str(n), sys.executable, SCRIPT, str(out), *args],
                          capture_output=True, text=True, timeout=LAUNCH_TIMEOUT, env=env)


@pytest.fixture(autouse=True)
def one_thread():
    """Single-process references on one kernel and one BLAS thread: results do not depend
    on it (beyond BLAS rounding, within the tolerances), and on a busy machine two
    OpenMP threads can wait on each other for a long time."""
    from threadpoolctl import threadpool_limits

    with _threads.local_num_threads(1), threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("mpi")
    run = launch(out)
    assert run.returncode == 0, run.stderr[-4000:]
    with open(out / "result.json") as f:
        result = json.load(f)
    result["stdout"], result["out"] = run.stdout, out
    return result


@pytest.fixture(scope="module")
def digits():
    x, t = datasets.load_digits(dtype=np.float32)
    return datasets.train_test_split(x, t, 0.2, seed=0)


def make_net(seed, dtype):
    return SimpleConvNet((1, 8, 8), conv={"filters": 30, "size": 3, "pad": 1}, hidden=100,
                         weight_init="he", dtype=dtype, seed=seed)


def load(path, dtype):
    net = make_net(0, dtype)
    net.load_params(path)
    return net


def test_parameters_identical_on_every_rank_after_every_step(ranks):
    digits_run = ranks["digits"]
    assert ranks["size"] == 2
    # each rank built its network from its own seed: rank 0's start was broadcast
    assert len(set(digits_run["initial_digests"])) == 2
    assert digits_run["steps_checked"] == 20 * 45  # 1438 samples, global batch 32
    assert digits_run["mismatches"] == []


def test_one_flat_allreduce_per_step_and_nothing_pickled(ranks):
    run = ranks["digits"]
    steps, epochs = run["steps_checked"], 20
    # per step the gradient buffer; per epoch the training totals and the evaluation
    assert run["train_collectives"] == ["Allreduce"]
    assert len(run["allreduce_sizes"]) == steps + 2 * epochs
    assert run["allreduce_sizes"].count(run["num_params"]) == steps


def test_same_final_accuracy_as_one_process(ranks, digits):
    x_train, t_train, x_test, t_test = digits
    net = make_net(0, np.float32)
    history = Trainer(net, x_train, t_train, x_test, t_test, epochs=20, batch_size=32,
                      optimizer="adam", optimizer_params={"lr": 2e-3}, seed=0,
                      progress=False).train()
    two = ranks["digits"]["history"]
    assert two["steps"] == history.steps and two["samples"] == history.samples == 20 * len(x_train)
    assert two["test_acc"][-1] >= 0.97
    # the same accuracy, up to a couple of the 359 test digits flipped by rounding
    assert abs(two["test_acc"][-1] - history.test_acc[-1]) <= 2 / 359
    np.testing.assert_allclose(two["train_loss"], history.train_loss, rtol=1e-3)


def test_evaluation_reduced_across_ranks(ranks, digits):
    _, _, x_test, t_test = digits
    net = load(ranks["out"] / "digits.npz", np.float32)       # saved by rank 0
    loss, acc = net.evaluate(x_test, t_test)
    two_loss, two_acc = ranks["digits"]["evaluate"]
    assert two_acc == acc
    assert two_loss == pytest.approx(loss, rel=1e-5)
    assert ranks["digits"]["history"]["test_acc"][-1] == acc


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_twenty_steps_match_one_process_to_rounding(ranks, digits, dtype):
    x_train, t_train, _, _ = digits
    net = make_net(0, dtype)
    Trainer(net, x_train[:1280], t_train[:1280], epochs=1, batch_size=64, optimizer="adam",
            optimizer_params={"lr": 1e-3}, seed=3, progress=False).train()
    two = load(ranks["out"] / f"steps20-{dtype}.npz", dtype)
    start = make_net(0, dtype)
    for key, p in net.params.items():
        scale = np.abs(p).max()
        assert np.abs(two.params[key] - p).max() <= TRAJECTORY_RTOL[dtype] * scale, key
        assert np.abs(p - start.params[key]).max() > 100 * TRAJECTORY_RTOL[dtype] * scale, key


def test_every_sample_once_per_epoch_and_an_empty_share(ranks, digits):
    shares = ranks["shares"]  # rank -> its part of each global batch of 4, of 33 samples
    assert len(shares) == 2 and len(shares[0]) == len(shares[1]) == 9
    seen = [i for rank in shares for part in rank for i in part]
    assert sorted(seen) == list(range(33))
    assert shares[1][-1] == []                    # the last global batch holds one sample
    assert len(set(ranks["uneven_digests"])) == 1
    x_train, t_train, _, _ = digits
    net = make_net(0, np.float64)
    Trainer(net, x_train[:33], t_train[:33], epochs=2, batch_size=4, optimizer="sgd",
            optimizer_params={"lr": 0.1}, seed=5, progress=False).train()
    two = load(ranks["out"] / "uneven.npz", np.float64)
    for key, p in net.params.items():
        np.testing.assert_allclose(two.params[key], p, rtol=0, atol=1e-12 * np.abs(p).max())


def test_rank0_alone_prints_and_threads_are_per_rank(ranks):
    for epoch in (1, 20):
        assert ranks["stdout"].count(f"epoch {epoch}/20: loss") == 1
    run = ranks["digits"]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert run["threads_per_rank"] == max(1, cores // 2)
    assert run["threads_seen"] == [run["threads_per_rank"]]
    assert run["threads_after"] == run["threads_before"]   # restored after train()


def test_a_rank_that_raises_aborts_the_job(tmp_path):
    run = launch(tmp_path, "--raise-on-rank", "1")
    assert run.returncode != 0
    assert "rank 1 of 2 raised ValueError; aborting all ranks" in run.stderr
    assert "deliberate failure on rank 1 at step 3" in run.stderr


def test_one_rank_is_bitwise_the_plain_trainer(digits):
    x_train, t_train, x_test, t_test = digits
    histories, nets = [], []
    for make_trainer in (Trainer, lambda *a, **k: DistributedTrainer(*a, comm=MPI.COMM_SELF,
                                                                     **k)):
        net = make_net(0, np.float32)
        histories.append(make_trainer(net, x_train[:320], t_train[:320], x_test, t_test,
                                      epochs=2, batch_size=32, seed=1, progress=False).train())
        nets.append(net)
    for key in nets[0].params:
        np.testing.assert_array_equal(nets[0].params[key], nets[1].params[key])
    assert histories[0].test_acc == histories[1].test_acc
    assert histories[0].train_loss == histories[1].train_loss


def test_cli_train_mpi_prints_and_saves_on_rank0(tmp_path):
    command = mpiexec() + ["-n", "2", sys.executable, "-m", "cyconv", "train", "--mpi",
                           "--epochs", "2", "--train-size", "400", "--test-size", "100",
                           "--quiet", "--save", str(tmp_path / "p.npz")]
    run = subprocess.run(command, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    assert run.returncode == 0, run.stderr[-4000:]
    assert run.stdout.count("training SimpleConvNet on digits: 400 train / 100 test") == 1
    assert "2 MPI ranks x" in run.stdout and run.stdout.count("test accuracy") == 1
    assert run.stdout.count("parameters saved to") == 1
    load(tmp_path / "p.npz", np.float32)  # a valid parameter file of the network


def test_bad_arguments_raise_on_a_single_rank(digits):
    # with one rank nobody can hang: errors reach the caller instead of aborting
    x_train, t_train, _, _ = digits
    net = make_net(0, np.float32)
    for kwargs, exc, match in [({"batch_size": 0}, ValueError, "batch_size"),
                               ({"threads_per_rank": 0}, ValueError, "threads_per_rank"),
                               ({"threads_per_rank": 1.5}, ValueError, "threads_per_rank"),
                               ({"threads_per_rank": 4096}, ValueError,
                                r"threads_per_rank=4096 puts 4096 threads on a node")]:
        with pytest.raises(exc, match=match):
            DistributedTrainer(net, x_train, t_train, comm=MPI.COMM_SELF, **kwargs)
    net.params["3.b"] = net.params["3.b"].astype(np.float64)
    with pytest.raises(TypeError, match="share one float32 or float64 dtype"):
        DistributedTrainer(net, x_train, t_train, comm=MPI.COMM_SELF)
