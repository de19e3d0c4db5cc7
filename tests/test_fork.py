"""Processes made by fork() after the parent ran threaded kernels (issue 12, item 1).

GNU OpenMP is not fork-safe: a child's first multi-threaded parallel region
waits forever for the parent's pool threads.  cyconv's thread-count resolution
(``cyconv/_threads.py``) runs such a child's kernels on one thread, with one
``ThreadsAfterForkWarning``.  Each scenario runs in a subprocess in its own
session under a timeout, so a hang is a test failure (the whole process group
is killed), not a hung test run.  The parent always runs every kernel on 2
threads first.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("cyconv_ext._conv", reason="the compiled backend is not built")
if not hasattr(os, "fork"):
    pytest.skip("no fork() on this platform", allow_module_level=True)

TIMEOUT = 120

# Every prange kernel once (conv forward/backward by GEMM and Winograd, max and
# avg pooling forward/backward, ReLU, Adam, and the cyconv-gap plugin when
# installed), on 2 threads, with data big enough that each really uses them.
KERNELS = textwrap.dedent('''
    import hashlib, json, os, sys, warnings
    import numpy as np
    import cyconv
    from cyconv.optim import Adam

    def run_kernels(n_threads=2):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((8, 8, 32, 32))
        w = rng.standard_normal((16, 8, 3, 3))
        outs = []
        for algorithm in ("gemm", "winograd"):
            y = cyconv.conv2d(x, w, padding=1, algorithm=algorithm, n_threads=n_threads)
            outs += [y, *cyconv.conv2d_backward(y, x, w, padding=1, algorithm=algorithm,
                                                n_threads=n_threads)]
        m, idx = cyconv.max_pool2d(y, 2, return_indices=True, n_threads=n_threads)
        outs += [m, cyconv.max_pool2d_backward(m, y, 2, indices=idx, n_threads=n_threads)]
        a = cyconv.avg_pool2d(y, 2, n_threads=n_threads)
        outs += [a, cyconv.avg_pool2d_backward(a, y, 2, n_threads=n_threads)]
        relu = cyconv.ReLU(backend="cython")  # layers use the global setting
        outs += [relu.forward(y), relu.backward(y)]
        p, g = {"w": y.copy()}, {"w": y * 0.5}
        Adam(lr=0.01).update(p, g)
        outs.append(p["w"])
        try:
            gap = cyconv.create_layer("GlobalAvgPool2D", backend="cython")
        except Exception:
            pass
        else:
            outs += [gap.forward(y), gap.backward(np.ones((8, 16)))]
        return [hashlib.sha256(np.ascontiguousarray(o).tobytes()).hexdigest() for o in outs]

    def report(**extra):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cyconv.set_num_threads(2)
            digests = run_kernels()
            threads = cyconv.get_num_threads()
        fork_warnings = [str(w.message) for w in caught
                         if issubclass(w.category, cyconv.ThreadsAfterForkWarning)]
        return dict(digests=digests, threads=threads, fork_warnings=fork_warnings, **extra)

    def in_child(work):
        """Run work() in an os.fork() child; return what it returned (through JSON)."""
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                os.write(write, json.dumps(work()).encode())
            finally:
                os._exit(0)
        os.close(write)
        data = b""
        while chunk := os.read(read, 1 << 16):
            data += chunk
        os.waitpid(pid, 0)
        return json.loads(data)
''')


def _run(tmp_path, body):
    """Run KERNELS + body as a script in its own session; its last stdout line is JSON."""
    script = tmp_path / "scenario.py"
    script.write_text(KERNELS + textwrap.dedent(body))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            cwd=str(tmp_path))
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"hung for {TIMEOUT} s (a forked child waiting for libgomp's threads?)\n"
                    f"{out[-2000:]}\n{err[-3000:]}")
    finally:
        try:  # forked children of the scenario, if any survived it
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-2000:]}\n{err[-3000:]}"
    return json.loads(out.strip().splitlines()[-1])


def test_os_fork_child_runs_every_kernel_on_one_thread(tmp_path):
    result = _run(tmp_path, '''
        parent = report()

        def child_work():
            child = report()
            # explicit requests are served by one thread too, and do not hang
            cyconv.set_num_threads(4)
            child["after_set_4"] = cyconv.get_num_threads()
            from cyconv._threads import resolve_num_threads
            child["explicit_3"] = resolve_num_threads(3)
            child["explicit_4_digests"] = run_kernels(n_threads=4)
            with warnings.catch_warnings(record=True) as again:
                warnings.simplefilter("always")
                run_kernels(n_threads=-1)
            child["second_warnings"] = len(again)
            return child

        print(json.dumps(dict(parent=parent, child=in_child(child_work))))
    ''')
    parent, child = result["parent"], result["child"]
    assert parent["threads"] == 2 and parent["fork_warnings"] == []
    assert child["digests"] == parent["digests"]  # bitwise, whatever the thread count
    assert child["explicit_4_digests"] == parent["digests"]
    assert child["threads"] == child["after_set_4"] == child["explicit_3"] == 1
    assert len(child["fork_warnings"]) == 1 and child["second_warnings"] == 0
    message = child["fork_warnings"][0]
    assert "fork" in message and "one thread" in message
    assert "spawn" in message and "forkserver" in message and "n_threads" in message


def test_fork_before_any_threads_keeps_threads(tmp_path):
    """A child forked before the parent ran threads has no broken pool: it
    keeps its threads and gets no warning."""
    result = _run(tmp_path, '''
        child = in_child(report)
        print(json.dumps(dict(child=child, parent=report())))
    ''')
    assert result["child"]["threads"] == 2 and result["child"]["fork_warnings"] == []
    assert result["child"]["digests"] == result["parent"]["digests"]


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_multiprocessing_pool(tmp_path, method):
    """A user's ``Pool(2).map(predict, batches)`` after the parent used 2
    threads: fork workers run on one thread (warned), spawn and forkserver
    workers keep their threads; every worker computes the parent's results."""
    import multiprocessing
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method!r} start method here")
    result = _run(tmp_path, f'''
        import multiprocessing

        def work(i):
            return report(pid=os.getpid())

        if __name__ == "__main__":
            parent = report()
            with multiprocessing.get_context({method!r}).Pool(2) as pool:
                workers = pool.map(work, range(4))
            print(json.dumps(dict(parent=parent, workers=workers)))
    ''')
    parent, workers = result["parent"], result["workers"]
    assert all(w["digests"] == parent["digests"] for w in workers)
    if method == "fork":
        assert all(w["threads"] == 1 for w in workers)
        warned = {w["pid"] for w in workers if w["fork_warnings"]}
        assert warned == {w["pid"] for w in workers}  # each worker said it once
        assert sum(len(w["fork_warnings"]) for w in workers) == len(warned)
    else:
        assert all(w["threads"] == 2 and w["fork_warnings"] == [] for w in workers)


def test_fork_while_another_thread_is_inside_a_blas_product(tmp_path):
    """The BLAS guard in the child: the thread that held it does not exist
    there, so the child starts with the guard released and numpy's BLAS back
    at the user's count."""
    result = _run(tmp_path, '''
        import threading
        from cyconv import _blas
        from cyconv_ext import _blas_limit
        a, b = np.ones((64, 64)), np.ones((64, 64))
        _blas.matmul(a, b, n_threads=2)
        real, entered, release = _blas._matmul, threading.Event(), threading.Event()

        def blocking(x, y):
            if threading.current_thread() is not threading.main_thread():
                entered.set()
                release.wait()
            return real(x, y)

        before = _blas_limit.blas_threads()
        _blas._matmul = blocking
        t = threading.Thread(target=_blas.matmul, args=(a, b), kwargs=dict(n_threads=1))
        t.start()
        entered.wait()
        inside = (_blas_limit.depth(), _blas_limit.blas_threads())

        def child_work():
            _blas._matmul = real
            state = [_blas_limit.depth(), _blas_limit.blas_threads()]
            _blas.matmul(a, b, n_threads=1)
            return state + [_blas_limit.depth(), _blas_limit.blas_threads()]

        child = in_child(child_work)
        release.set()
        t.join()
        print(json.dumps(dict(before=before, inside=inside, child=child,
                              after=[_blas_limit.depth(), _blas_limit.blas_threads()])))
    ''')
    before = result["before"]
    if before is None:
        pytest.skip("numpy's BLAS is not controlled on this machine")
    assert result["inside"] == [1, 1]
    assert result["child"] == [0, before, 0, before]
    assert result["after"] == [0, before]
