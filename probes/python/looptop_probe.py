"""looptop's Python probe: GC pauses and the asyncio default executor, written into the agent's
shared-memory segment as fixed 64-byte records with os.pwrite (no thread of its own, bounded,
never blocks).

GC pauses   gc.callbacks start/stop around every collection: generation and duration (exact);
            collections shorter than 50 us are counted by CPython only, not reported.
Pool        loop.run_in_executor(None, ...) (and asyncio.to_thread): the submission time is taken
            on the loop, the start time inside the worker thread, so queued = submitted - started
            and wait = start - submit are exact.

The probe must be invisible (README, "What a program can observe of the probes"):
- It keeps no file descriptor. Each write (or batch) opens the segment by the path it found,
  checks with fstat that it is still the same file, writes and closes. A program that closes
  every descriptor and opens its own files never has a number of its own written into by us; an
  open that fails (EMFILE under `ulimit -n`, the segment gone) drops the record, silently.
- It imports nothing the interpreter has not already imported at startup, except `gc`, which
  sitecustomize takes out of sys.modules again (the module is stateless: a later `import gc` gets
  the same gc.callbacks); it starts no thread and adds nothing to os.environ.
- It calls os functions taken before the program runs, so a program (or a test) that patches
  os.open or os.close never sees the probe's calls.
- run_in_executor is only wrapped where the original would run a plain callable on the default
  ThreadPoolExecutor; everything else (an explicit executor, a coroutine or coroutine function, a
  non-callable, a replaced default executor) goes to the original untouched, which keeps its own
  checks and errors. Exceptions pass through with the probe's own frames taken out of their
  tracebacks (Python 3.11 and later; 3.10 shows one frame of the probe).
"""
import _thread
import gc
import os
import sys
import time

_RECORD = 64
_HEADER = 136
_GC, _POOL, _POOL_WAIT, _POOL_KIND, _PROBE = 2, 3, 4, 5, 6
_GC_MIN_NS = 50_000
_FLUSH_NS = 100_000_000
_RETRY_NS = 100_000_000
_BUCKETS_PER_OCTAVE = 8
_OPEN_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_U64 = (1 << 64) - 1
_ZERO_SEQ = bytes(8)
_NESTED = -1

# Taken now, before the program runs: the program's patches of os never see the probe.
_open, _close, _fstat, _pread, _pwrite, _read = os.open, os.close, os.fstat, os.pread, os.pwrite, os.read
_listdir, _getpid, _geteuid = os.listdir, os.getpid, os.geteuid
_now, _sleep = time.monotonic_ns, time.sleep
_ident, _native_id, _new_lock, _new_rlock = _thread.get_ident, _thread.get_native_id, _thread.allocate_lock, \
    _thread.RLock
_DIR = os.environ.get("LOOPTOP_SHM_DIR") or "/dev/shm"


def _unpack_from(fmt, buf, offset):
    """struct.unpack_from for the two formats the probe reads ("<I", "<Q"): struct is not loaded
    at startup, and loading it would be visible in sys.modules."""
    n = 4 if fmt == "<I" else 8
    return (int.from_bytes(buf[offset:offset + n], "little"),)


def _u64(v):
    if v.__class__ is not int:  # int(v) of an int would still leave a trace in gc.get_count()
        v = int(v)
    return (v if 0 <= v <= _U64 else 0 if v < 0 else _U64).to_bytes(8, "little")


def _start_time():
    """Field 22 of /proc/self/stat (the agent writes it into the header), None if unreadable."""
    try:
        fd = _open("/proc/self/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            stat = _read(fd, 4096)
        finally:
            _close(fd)
        return int(stat[stat.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


class _Segment:
    """This process's segment, found once per pid; written through a descriptor that lives only
    for one batch of records."""

    def __init__(self):
        self.lock = _new_lock()
        self.owner = None  # thread writing now
        self.pending = []  # records of a GC that happened during our own write
        self.pid = None
        self.path = None
        self.dev = self.ino = 0
        self.base = self.ring = 0
        self.index = 0
        self.tried_ns = 0

    def _valid(self, fd, pid, uid, start):
        """The layout of a candidate file, or None when it is not this process's segment."""
        st = _fstat(fd)
        if st.st_mode & 0o170000 != 0o100000 or st.st_uid != uid or st.st_size < _HEADER:
            return None
        h = _pread(fd, _HEADER, 0)
        if len(h) < _HEADER or h[:8] != b"LOOPTOP\0" or _unpack_from("<I", h, 8)[0] != 6 \
                or _unpack_from("<I", h, 24)[0] != pid or _unpack_from("<I", h, 128)[0] != _RECORD:
            return None
        header_start = _unpack_from("<Q", h, 32)[0]
        if start is not None and header_start and header_start != start:
            return None  # a dead process's segment under a reused pid
        base = _unpack_from("<Q", h, 112)[0]
        channels = _unpack_from("<I", h, 120)[0]
        ring = _unpack_from("<I", h, 124)[0]
        if not channels or not ring or st.st_size < base + channels * ring * _RECORD:
            return None
        return st.st_dev, st.st_ino, base, ring

    def _candidates(self, pid):
        name = "looptop-%d" % pid
        yield name
        # When that name was taken by a file the agent could not remove: looptop-<pid>-<16 hex>.
        try:
            names = _listdir(_DIR)
        except OSError:
            return
        for n in names:
            tail = n[len(name) + 1:]
            if n.startswith(name + "-") and len(tail) == 16 and all(c in "0123456789abcdef" for c in tail):
                yield n

    def _find(self, pid):
        self.tried_ns = _now()
        self.path = None
        uid = _geteuid()
        start = _start_time()
        for name in self._candidates(pid):
            path = _DIR + "/" + name
            try:
                fd = _open(path, _OPEN_FLAGS)
            except OSError:
                continue
            try:
                found = self._valid(fd, pid, uid, start)
            except OSError:
                found = None
            finally:
                _close(fd)
            if found is not None:
                self.path = path
                self.dev, self.ino, self.base, self.ring = found
                return True
        return False

    def _open(self, pid):
        """A descriptor of the segment for one batch, or None (the record is dropped)."""
        if self.path is None:
            if self.tried_ns and _now() - self.tried_ns < _RETRY_NS:
                return None  # a fork child's segment appears at its first wait: look now and then
            if not self._find(pid):
                return None
        for _ in range(2):
            try:
                fd = _open(self.path, _OPEN_FLAGS)
            except OSError:
                fd = None
            if fd is not None:
                try:
                    st = _fstat(fd)
                    if st.st_dev == self.dev and st.st_ino == self.ino:
                        return fd
                except OSError:
                    pass
                _close(fd)
            # Gone or replaced: find it again (once per call, and at most every 100 ms).
            if _now() - self.tried_ns < _RETRY_NS or not self._find(pid):
                self.path = None
                return None
        return None

    def _put(self, fd, kind, t_ns, dur_ns, a, b, c, d):
        off = self.base + (self.index % self.ring) * _RECORD
        body = (kind.to_bytes(4, "little") + (_native_id() & 0xFFFFFFFF).to_bytes(4, "little") + _u64(t_ns)
                + _u64(dur_ns) + _u64(a) + _u64(b) + _u64(c) + _u64(d))
        _pwrite(fd, _ZERO_SEQ, off)
        _pwrite(fd, body, off + 8)
        _pwrite(fd, (self.index + 1).to_bytes(8, "little"), off)
        self.index += 1

    # Writes run inside gc.callbacks, where every object the collector tracks that they leave
    # behind shows in gc.get_count(): one record goes through plain arguments (no tuple, no list,
    # no closure), and the pending list is emptied in place, never replaced.

    def write(self, kind, t_ns, dur_ns, a=0, b=0, c=0, d=0):
        """Writes one record; drops it on any error."""
        fd = self._begin()
        if fd == _NESTED:
            self.pending.append((kind, t_ns, dur_ns, a, b, c, d))
        elif fd is not None:
            try:
                self._put(fd, kind, t_ns, dur_ns, a, b, c, d)
            except Exception:
                pass
            finally:
                self._end(fd)

    def write_batch(self, records):
        """Writes records (kind, t_ns, dur_ns, a, b, c, d) through one descriptor."""
        fd = self._begin()
        if fd == _NESTED:
            self.pending.extend(records)
        elif fd is not None:
            try:
                for rec in records:
                    self._put(fd, *rec)
            except Exception:
                pass
            finally:
                self._end(fd)

    def _begin(self):
        """Takes the lock and opens the segment: the descriptor; _NESTED when this thread is
        writing already (a GC or a signal handler inside our own write: that write takes the
        records); None when the records are dropped."""
        me = _ident()
        if self.owner == me:
            return _NESTED
        pid = _getpid()
        if pid != self.pid:
            # First write, or a fork child: its own segment, and a lock no other thread holds.
            self.lock = _new_lock()
            self.owner, self.path, self.tried_ns, self.index = None, None, 0, 0
            self.pending.clear()
            self.pid = pid
        # No timeout: every holder releases within one batch, even when a signal handler raises
        # (and acquire() without arguments leaves nothing behind in gc.get_count()).
        self.lock.acquire()
        fd = None
        try:
            self.owner = me
            fd = self._open(pid)
        except Exception:
            pass
        except BaseException:
            # A signal handler raised (KeyboardInterrupt): never leave the lock or a descriptor.
            if fd is not None:
                _close(fd)
            self.pending.clear()
            self._release()
            raise
        if fd is None:
            self.pending.clear()
            self._release()
        return fd

    def _end(self, fd):
        """Writes the records queued meanwhile, closes the descriptor, releases the lock."""
        try:
            while self.pending:
                self._put(fd, *self.pending.pop(0))
        except Exception:
            self.pending.clear()
        finally:
            try:
                _close(fd)
            except OSError:
                pass
            finally:
                self._release()

    def _release(self):
        self.owner = None
        self.lock.release()


_seg = _Segment()
_gc_start = {}


def _gc_driver():
    """The body of the probe's GC callback, as a generator. The callback itself is C code
    (`_functools.partial(max, key=driver.send)`), so a Python signal handler whose signal came
    during the collection runs inside this generator's `try` (CPython runs pending handlers when
    Python code resumes) rather than at the entry of a Python callback, where CPython would report
    its exception as "ignored" and lose it. Caught here, the exception is handed back (see
    `_hand_back`): the handler runs once more in the program's own code, where its exception
    (KeyboardInterrupt on Ctrl-C, SystemExit from sys.exit in a SIGTERM handler) is raised as it
    would be without the probe."""
    phase = None
    while True:
        try:
            while True:
                value = yield 0
                if value.__class__ is str:
                    phase = value
                elif phase is not None:
                    _on_gc(phase, value)
                    phase = None
        except BaseException as e:  # noqa: B902 - a signal handler's exception, handed back
            phase = None
            signum = _signal_of(e)
            if signum is not None:
                _hand_back(signum)


_callback = []  # [the partial in gc.callbacks]
_pending_signals = []
_NO_OP = {}.get  # a callback in C that does nothing: gc.callbacks[i] = _NO_OP while handing back


def _hand_back(signum):
    """Runs the handler of `signum` again in the program's own code: the probe's callback steps
    out of gc.callbacks (replaced in place by a no-op in C, so that no Python code runs in a
    collection and the program's own callbacks keep their places), and a short-lived thread
    raises the signal again (`_thread.interrupt_main`; from the callback itself the handler would
    run right there), then puts the callback back 50 ms later. GC pauses in those 50 ms are not
    recorded."""
    if signum not in _pending_signals:
        _pending_signals.append(signum)
    try:
        i = gc.callbacks.index(_callback[0])
    except (IndexError, ValueError):
        return  # already stepped out: the thread under way raises it too
    gc.callbacks[i] = _NO_OP
    try:
        _thread.start_new_thread(_retrip, ())
    except BaseException:  # noqa: B902 - no thread to be had: step back in, as without the fix
        gc.callbacks[i] = _callback[0]


def _retrip():
    try:
        while _pending_signals:
            _thread.interrupt_main(_pending_signals.pop(0))
        _sleep(0.05)
        i = gc.callbacks.index(_NO_OP)
        gc.callbacks[i] = _callback[0]
    except BaseException:  # noqa: B902 - a thread of the probe never raises
        pass


def _signal_of(exc):
    """The signal whose handler raised `exc`: the one whose handler's code is on its traceback,
    or SIGINT for the default handler's KeyboardInterrupt; None when no handler raised it."""
    codes = set()
    tb = exc.__traceback__
    while tb is not None:
        codes.add(tb.tb_frame.f_code)
        tb = tb.tb_next
    signal = sys.modules.get("signal")
    if signal is not None:
        for signum in signal.valid_signals():
            try:
                handler = signal.getsignal(signum)
            except (OSError, ValueError):
                continue
            code = getattr(getattr(handler, "__func__", handler), "__code__", None)
            if code is not None and code in codes:
                return int(signum)
    return 2 if isinstance(exc, KeyboardInterrupt) else None


def _gc_callback():
    """The callback to append to gc.callbacks (see `_gc_driver`); `_functools` is taken out of
    sys.modules again when the program had not imported it (it is stateless)."""
    had = "_functools" in sys.modules
    import _functools
    if not had:
        sys.modules.pop("_functools", None)
    driver = _gc_driver()
    next(driver)
    _callback[:] = [_functools.partial(max, key=driver.send)]
    return _callback[0]


def _on_gc(phase, info):
    try:
        if phase == "start":
            _gc_start[_ident()] = _now()
            return
        t0 = _gc_start.pop(_ident(), None)
        if t0 is None:
            return
        dur = _now() - t0
        if dur >= _GC_MIN_NS:
            _seg.write(_GC, t0, dur, 16 + info.get("generation", 0), info.get("collected", 0))
    except Exception:
        pass


_OCTAVE_STEPS = [2 ** (k / _BUCKETS_PER_OCTAVE) for k in range(1, _BUCKETS_PER_OCTAVE)]


class _Pool:
    """The default executor as seen from run_in_executor: exact submit and start times."""

    def __init__(self):
        self.pid = None
        self.reset()

    def reset(self):
        # Reentrant: a signal handler may submit work while this thread holds it.
        self.lock = _new_rlock()
        self.pid = _getpid()
        self.size = 0
        self.submitted = 0
        self.started = 0
        self.completed = 0
        self.queued_max = 0
        self.waits = {}
        self.last_flush = 0

    @staticmethod
    def bucket(ns):
        """1 + floor(8 * log2(ns / 1 us)), 0 under 1 us (without math: not loaded at startup)."""
        if ns < 1000:
            return 0
        x = ns / 1000
        e = int(x).bit_length() - 1
        m = x / (1 << e)
        return 1 + e * _BUCKETS_PER_OCTAVE + sum(1 for s in _OCTAVE_STEPS if m >= s)

    @staticmethod
    def low(b):
        return 0 if b == 0 else 1000 * 2 ** ((b - 1) / _BUCKETS_PER_OCTAVE)

    def queued(self):
        """Items submitted that no free worker can take yet (the lock is held)."""
        free = max(0, (self.size or 1) - (self.started - self.completed))
        return max(0, self.submitted - self.started - free)

    def submit(self):
        if self.pid != _getpid():
            self.reset()  # a fork child: the parent's workers are not ours
        with self.lock:
            self.submitted += 1
            self.queued_max = max(self.queued_max, self.queued())
        return _now()

    def cancel(self):
        try:
            with self.lock:
                self.submitted -= 1
        except Exception:
            pass

    def start(self, submitted_ns):
        try:
            now = _now()
            with self.lock:
                self.started += 1
                b = self.bucket(now - submitted_ns)
                w = self.waits.setdefault(b, [0, 0])
                w[0] += 1
                w[1] = max(w[1], now - submitted_ns)
        except Exception:
            pass

    def done(self):
        try:
            with self.lock:
                self.completed += 1
                idle = self.completed == self.submitted
            now = _now()
            if idle or now - self.last_flush >= _FLUSH_NS:
                self.flush(now)
        except Exception:
            pass

    def flush(self, now):
        with self.lock:
            self.last_flush = now
            waits, self.waits = self.waits, {}
            queued = self.queued()
            state = (self.size, self.submitted - self.completed, max(self.queued_max, queued), self.submitted)
            self.queued_max = queued
        records = [(_POOL, now, 0) + state]
        for b, (count, longest) in waits.items():
            records.append((_POOL_WAIT, now, 0, self.low(b), self.low(b + 1), count, longest))
        _seg.write_batch(records)


_pool = _Pool()


def _hide_frame(exc, code):
    """Takes the probe's own frame (`code`) off the head of `exc`'s traceback, so that a bare
    `raise` passes the exception on as if the probe were not there (3.11+: a bare raise uses
    __traceback__; 3.10 keeps the frame)."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_frame.f_code is code:
        exc.__traceback__ = tb.tb_next


def _thread_pool(modules):
    """concurrent.futures.ThreadPoolExecutor if loaded (asking concurrent.futures for it would
    load it: a module the program may never import)."""
    return getattr(modules.get("concurrent.futures.thread"), "ThreadPoolExecutor", None)


def _track_executor(base_events):
    """Wraps BaseEventLoop.run_in_executor of the freshly imported asyncio.base_events."""
    loop_class = base_events.BaseEventLoop
    original = loop_class.run_in_executor
    coroutines = base_events.coroutines
    modules = sys.modules

    @base_events.functools.wraps(original)
    def run_in_executor(self, executor, func, *args):
        default = self.__dict__.get("_default_executor")
        submitted = None
        if executor is None and callable(func) and not coroutines.iscoroutine(func) \
                and not coroutines.iscoroutinefunction(func) and (default is None or type(default) is _thread_pool(modules)):
            try:
                submitted = _pool.submit()
            except Exception:
                pass
        if submitted is None:
            # Not a plain callable for the default pool: the original decides, untouched.
            try:
                return original(self, executor, func, *args)
            except BaseException as e:
                _hide_frame(e, run_in_executor.__code__)
                raise

        def timed(*a):
            _pool.start(submitted)
            try:
                result = func(*a)
            except BaseException as e:
                _pool.done()
                _hide_frame(e, timed.__code__)
                raise
            _pool.done()
            return result

        try:
            fut = original(self, None, timed, *args)
        except BaseException as e:
            _pool.cancel()
            _hide_frame(e, run_in_executor.__code__)
            raise
        try:
            size = getattr(self.__dict__.get("_default_executor"), "_max_workers", 0)
            if size and size != _pool.size:
                _pool.size = size
                _seg.write(_POOL_KIND, _now(), 0, 2, size)
        except Exception:
            pass
        return fut

    loop_class.run_in_executor = run_in_executor


class _AfterImport:
    """Wraps run_in_executor once the program imports asyncio, so that programs without asyncio
    pay nothing (importing asyncio ourselves would slow every Python start and be visible). Takes
    itself off sys.meta_path at that import."""

    def find_spec(self, name, path=None, target=None):
        if name != "asyncio.base_events":
            return None
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None:
            return spec

        def exec_then_patch(module):
            try:
                del loader.exec_module  # the loader is as it was
            except AttributeError:
                pass
            exec_module(module)
            try:
                _track_executor(module)
            except Exception:
                pass

        try:
            loader.exec_module = exec_then_patch
        except (AttributeError, TypeError):
            pass
        return spec


try:
    if os.environ.get("LOOPTOP_PROBE") != "0":
        gc.callbacks.append(_gc_callback())
        _seg.write(_PROBE, _now(), 0, 2)
        if "asyncio.base_events" in sys.modules:
            _track_executor(sys.modules["asyncio.base_events"])
        else:
            sys.meta_path.insert(0, _AfterImport())
except Exception:
    pass
