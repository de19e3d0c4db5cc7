"""The crash-proof worker pool: cases run in subprocesses that may die or hang.

Each worker reads pickled case specs on stdin and answers result dicts on
stdout (length-prefixed pickles), under an address-space limit
(``RLIMIT_AS``).  A worker that dies (segfault, abort, OOM kill) is reported
as ``crash`` and one that misses the per-case deadline as ``hang``; either
is respawned for the next case.
"""

from __future__ import annotations

import json
import os
import pickle
import select
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

# The child imports this package through the parent's own sys.path, so it runs
# the same cyconv (the debug copy, an editable install...) and finds tools/.
_BOOT = ("import sys, json; sys.path[:0] = json.loads(sys.argv[1]); "
         "from tools.fuzz.worker import worker_main; worker_main(int(sys.argv[2]))")


def _send(fd, obj):
    data = pickle.dumps(obj, protocol=4)
    data = struct.pack("<Q", len(data)) + data
    while data:
        k = os.write(fd, data)
        data = data[k:]


def _recv(fd, deadline=None):
    buf = b""
    need = 8
    length = None
    while True:
        while len(buf) < need:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                r, _, _ = select.select([fd], [], [], left)
                if not r:
                    raise TimeoutError
            chunk = os.read(fd, max(need - len(buf), 1 << 16))
            if not chunk:
                raise EOFError
            buf += chunk
        if length is None:
            length = struct.unpack("<Q", buf[:8])[0]
            buf = buf[8:]
            need = length
            continue
        return pickle.loads(buf[:length])


def worker_main(mem_headroom):
    """Worker loop: read pickled specs on stdin, answer result dicts on stdout."""
    import faulthandler
    import resource

    faulthandler.enable()
    proto_out = os.dup(1)
    os.dup2(2, 1)  # stray prints from the library go to stderr, not the protocol
    proto_in = sys.stdin.fileno()
    import cyconv

    from .run import evaluate

    # warm up (thread pools, BLAS buffers) before limiting the address space
    x = np.random.rand(2, 2, 6, 6)
    w = np.random.rand(2, 2, 3, 3)
    y = cyconv.conv2d(x, w, padding=1)
    cyconv.conv2d_backward(y, x, w, padding=1)
    cyconv.max_pool2d(x, 2)
    cyconv.avg_pool2d(x, 2)
    if mem_headroom > 0:
        with open("/proc/self/statm") as f:
            vsize = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = vsize + mem_headroom
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    tmpdir = tempfile.mkdtemp(prefix="cyconv_fuzz_")
    _send(proto_out, {"ready": True, "pid": os.getpid()})
    while True:
        try:
            spec = _recv(proto_in)
        except EOFError:
            break
        res = evaluate(spec, tmpdir)
        for name in os.listdir(tmpdir):
            try:
                os.unlink(os.path.join(tmpdir, name))
            except OSError:
                pass
        _send(proto_out, res)


class Worker:
    """One worker subprocess: submit a case, collect its result (or crash / hang)."""

    def __init__(self, timeout, mem_headroom, env=None):
        self.timeout = timeout
        self.mem_headroom = mem_headroom
        self.env = env
        self.proc = None
        self.err = None
        self.spawns = 0

    def start(self):
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, json.dumps(sys.path), str(self.mem_headroom)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, env=self.env,
            close_fds=True)
        self.spawns += 1
        try:
            hello = _recv(self.proc.stdout.fileno(), time.monotonic() + 120)
        except (EOFError, TimeoutError):
            raise RuntimeError("fuzz worker failed to start:\n" + self.stderr_tail()) from None
        assert hello.get("ready")

    def stderr_tail(self, n=4000):
        if self.err is None:
            return ""
        self.err.seek(0)
        return self.err.read().decode(errors="replace")[-n:]

    def stop(self):
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def kill(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def submit(self, spec):
        if self.proc is None:
            self.start()
        self.spec = spec
        self.deadline = time.monotonic() + self.timeout
        try:
            _send(self.proc.stdin.fileno(), spec)
        except (BrokenPipeError, OSError):
            pass

    def collect(self):
        try:
            return _recv(self.proc.stdout.fileno(), self.deadline)
        except TimeoutError:
            self.kill()
            return {"status": "hang", "message": f"no answer within {self.timeout:.0f} s"}
        except EOFError:
            rc = self.proc.wait()
            tail = self.stderr_tail()
            self.proc = None
            return {"status": "crash", "message": f"worker died (returncode {rc})",
                    "stderr": tail}


class WorkerPool:
    """``n`` persistent worker subprocesses; crashes and hangs respawn them."""

    def __init__(self, n=1, timeout=10.0, mem_headroom=3 << 30, env=None):
        self.workers = [Worker(timeout, mem_headroom, env) for _ in range(n)]

    def run(self, spec):
        w = self.workers[0]
        w.submit(spec)
        return w.collect()

    def run_many(self, specs, callback=None):
        """Run specs on all workers; yields (spec, result) in completion order."""
        pending = list(specs)[::-1]
        busy = {}
        for w in self.workers:
            if w.proc is None:
                w.start()
        while pending or busy:
            for w in self.workers:
                if w not in busy.values() and pending:
                    spec = pending.pop()
                    w.submit(spec)
                    busy[w.proc.stdout.fileno()] = w
            fds = list(busy)
            timeout = max(0.0, min(w.deadline for w in busy.values()) - time.monotonic())
            ready, _, _ = select.select(fds, [], [], timeout)
            if not ready:  # someone passed their deadline
                ready = [fd for fd, w in busy.items() if time.monotonic() >= w.deadline]
            for fd in ready:
                w = busy.pop(fd)
                res = w.collect()
                yield w.spec, res

    def close(self):
        for w in self.workers:
            w.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
