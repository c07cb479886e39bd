"""looptop's Python probe: GC pauses and the asyncio default executor, written into the agent's
shared-memory segment as fixed 64-byte records with os.pwrite (no thread of its own, bounded,
never blocks).

GC pauses   gc.callbacks start/stop around every collection: generation and duration (exact);
            collections shorter than 50 us are counted by CPython only, not reported.
Pool        loop.run_in_executor(None, ...) (and asyncio.to_thread): the submission time is taken
            on the loop, the start time inside the worker thread, so queued = submitted - started
            and wait = start - submit are exact.
"""
import gc
import os
import struct
import threading
import time

_RECORD = 64
_GC, _POOL, _POOL_WAIT, _POOL_KIND, _PROBE = 2, 3, 4, 5, 6
_GC_MIN_NS = 50_000
_FLUSH_NS = 100_000_000
_BUCKETS_PER_OCTAVE = 8


class _Channel:
    """Channel 0 of this process's segment; reopened after a fork."""

    def __init__(self):
        self.lock = threading.Lock()
        self.fd = None
        self.pid = None
        self.index = 0
        self.base = 0
        self.ring = 0
        self.tried_ns = 0

    def _open(self):
        self.tried_ns = time.monotonic_ns()
        self.pid = os.getpid()
        self.fd = None
        self.index = 0
        path = "%s/looptop-%d" % (os.environ.get("LOOPTOP_SHM_DIR") or "/dev/shm", self.pid)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return
        h = os.pread(fd, 136, 0)
        if len(h) < 136 or h[:7] != b"LOOPTOP" or struct.unpack_from("<I", h, 8)[0] != 3 \
                or struct.unpack_from("<I", h, 128)[0] != _RECORD:
            os.close(fd)
            return
        self.base = struct.unpack_from("<Q", h, 112)[0]
        self.ring = struct.unpack_from("<I", h, 124)[0]
        self.fd = fd

    def write(self, kind, t_ns, dur_ns, a=0, b=0, c=0, d=0):
        with self.lock:
            if self.pid != os.getpid():
                if self.fd is not None:
                    try:
                        os.close(self.fd)
                    except OSError:
                        pass
                self._open()
            elif self.fd is None and time.monotonic_ns() - self.tried_ns > 100_000_000:
                # A forked child's segment appears at its first wait: look again now and then.
                self._open()
            if self.fd is None:
                return
            off = self.base + (self.index % self.ring) * _RECORD
            rec = struct.pack("<QIIQQQQQQ", self.index + 1, kind, threading.get_native_id() & 0xFFFFFFFF,
                              max(0, int(t_ns)), max(0, int(dur_ns)), max(0, int(a)), max(0, int(b)),
                              max(0, int(c)), max(0, int(d)))
            try:
                os.pwrite(self.fd, b"\0" * 8, off)
                os.pwrite(self.fd, rec[8:], off + 8)
                os.pwrite(self.fd, rec[:8], off)
                self.index += 1
            except OSError:
                self.fd = None


_chan = _Channel()
_gc_start = {}


def _on_gc(phase, info):
    try:
        if phase == "start":
            _gc_start[threading.get_ident()] = time.monotonic_ns()
            return
        t0 = _gc_start.pop(threading.get_ident(), None)
        if t0 is None:
            return
        dur = time.monotonic_ns() - t0
        if dur >= _GC_MIN_NS:
            _chan.write(_GC, t0, dur, 16 + info.get("generation", 0), info.get("collected", 0))
    except Exception:
        pass


class _Pool:
    """The default executor as seen from run_in_executor: exact submit and start times."""

    def __init__(self):
        self.lock = threading.Lock()
        self.size = 0
        self.submitted = 0
        self.started = 0
        self.completed = 0
        self.queued_max = 0
        self.waits = {}
        self.last_flush = 0

    def bucket(self, ns):
        import math
        return 0 if ns < 1000 else 1 + int(math.log2(ns / 1000) * _BUCKETS_PER_OCTAVE)

    def low(self, b):
        return 0 if b == 0 else 1000 * 2 ** ((b - 1) / _BUCKETS_PER_OCTAVE)

    def queued(self):
        """Items submitted that no free worker can take yet (the lock is held)."""
        free = max(0, (self.size or 1) - (self.started - self.completed))
        return max(0, self.submitted - self.started - free)

    def submit(self):
        with self.lock:
            self.submitted += 1
            self.queued_max = max(self.queued_max, self.queued())
        return time.monotonic_ns()

    def start(self, submitted_ns):
        now = time.monotonic_ns()
        with self.lock:
            self.started += 1
            b = self.bucket(now - submitted_ns)
            w = self.waits.setdefault(b, [0, 0])
            w[0] += 1
            w[1] = max(w[1], now - submitted_ns)

    def done(self):
        with self.lock:
            self.completed += 1
            idle = self.completed == self.submitted
        now = time.monotonic_ns()
        if idle or now - self.last_flush >= _FLUSH_NS:
            self.flush(now)

    def flush(self, now):
        with self.lock:
            self.last_flush = now
            waits, self.waits = self.waits, {}
            queued = self.queued()
            state = (self.size, self.submitted - self.completed, max(self.queued_max, queued), self.submitted)
            self.queued_max = queued
        _chan.write(_POOL, now, 0, *state)
        for b, (count, longest) in waits.items():
            _chan.write(_POOL_WAIT, now, 0, self.low(b), self.low(b + 1), count, longest)


_pool = _Pool()


def _track_executor(base_loop):
    import functools

    original = base_loop.run_in_executor

    @functools.wraps(original)
    def run_in_executor(self, executor, func, *args):
        if executor is not None:
            return original(self, executor, func, *args)
        submitted = _pool.submit()

        def timed(*a):
            _pool.start(submitted)
            try:
                return func(*a)
            finally:
                _pool.done()

        try:
            fut = original(self, None, functools.update_wrapper(timed, func) if callable(func) else func, *args)
        except BaseException:
            with _pool.lock:
                _pool.submitted -= 1
            raise
        ex = getattr(self, "_default_executor", None)
        size = getattr(ex, "_max_workers", 0)
        if size and size != _pool.size:
            _pool.size = size
            _chan.write(_POOL_KIND, time.monotonic_ns(), 0, 2, size)
        return fut

    base_loop.run_in_executor = run_in_executor


class _AfterImport:
    """Patches asyncio once the program imports it, so that programs without asyncio pay
    nothing (importing asyncio ourselves would slow every Python start)."""

    def find_spec(self, name, path=None, target=None):
        if name != "asyncio.base_events":
            return None
        import importlib.util
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_patch(module):
            exec_module(module)
            try:
                _track_executor(module.BaseEventLoop)
            except Exception:
                pass

        spec.loader.exec_module = exec_then_patch
        return spec


try:
    if os.environ.get("LOOPTOP_PROBE") != "0":
        import sys
        gc.callbacks.append(_on_gc)
        _chan.write(_PROBE, time.monotonic_ns(), 0, 2)
        if "asyncio.base_events" in sys.modules:
            _track_executor(sys.modules["asyncio.base_events"].BaseEventLoop)
        else:
            sys.meta_path.insert(0, _AfterImport())
except Exception:
    pass
