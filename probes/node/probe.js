// looptop's Node probe, preloaded with `--require` (the agent adds it to NODE_OPTIONS).
//
// It reports into the agent's shared-memory segment, writing fixed 64-byte records into its own
// channel of the segment file with pwrite (fs.writeSync at a position): no thread, no pipe,
// bounded memory, and it never blocks, whether or not looptop is reading. It keeps no descriptor:
// each batch of records (one PerformanceObserver callback, one pool sample) opens the segment by
// the path found at start, checks with fstat that it is the same file, writes and closes.
//
//   GC pauses   every PerformanceObserver 'gc' entry: start, duration, kind, flags (exact, as V8
//               reports them).
//   Thread pool the libuv pool (size = UV_THREADPOOL_SIZE, default 4). Every submission by this
//               thread is seen by wrapping the pool's users: all async fs binding calls (one
//               libuv work item each), crypto pbkdf2/scrypt/randomBytes/randomFill/randomInt/
//               generateKeyPair/generateKey/generatePrime/checkPrime/hkdf, zlib convenience
//               methods, dns.lookup/lookupService. libuv runs items FIFO, so with submission and
//               completion times the queue is replayed: queued = items waiting for a worker,
//               wait = when a worker became free for the item − when it was submitted. Completion
//               is seen when the callback runs, so a busy loop inflates waits by its own lag.
//
// The probe must never change what the program does: wrapped functions pass `this`, arguments,
// return values and exceptions through untouched, keep their own properties (e.g.
// util.promisify.custom), and callbacks keep their order. It calls fs functions taken before the
// program runs, so the program's own patches of fs never see them. Every probe failure disables
// the probe or drops the records at hand, silently.
'use strict';

(function looptopProbe() {
  const fs = require('fs');
  const { isMainThread, threadId } = require('worker_threads');

  const RECORD = 64;
  const KIND = { GC: 2, POOL: 3, POOL_WAIT: 4, POOL_KIND: 5, PROBE: 6 };
  const WAIT_BUCKETS_PER_OCTAVE = 8;

  // The functions the probe calls, taken before the program runs: a program (or a test) that
  // patches fs never sees the probe's calls.
  const { openSync, closeSync, fstatSync, readSync, writeSync, readdirSync, readFileSync } = fs;
  const { O_RDWR, O_RDONLY, O_NOFOLLOW, O_NONBLOCK } = fs.constants;
  const OPEN_FLAGS = O_RDWR | O_NOFOLLOW | O_NONBLOCK; // libuv adds O_CLOEXEC to every open
  const HEADER = 136;
  const RETRY_NS = 100e6;
  const dir = process.env.LOOPTOP_SHM_DIR || '/dev/shm';
  const euid = typeof process.geteuid === 'function' ? process.geteuid() : -1;

  // This process's segment, found once: its path and identity, never a descriptor. Every batch of
  // records opens it, checks it is the same file, writes and closes, so the program never sees a
  // descriptor of ours, nor gets a number of its own written into; an open that fails (EMFILE,
  // the segment gone) drops the batch.
  const seg = { path: null, dev: 0n, ino: 0n, base: 0, ring: 0, triedNs: 0 };
  let index = 0;
  const rec = Buffer.alloc(RECORD);
  const zero = Buffer.alloc(8);
  const header = Buffer.alloc(HEADER);

  function startTime() {
    // Field 22 of /proc/self/stat, which the agent writes into the header (0 when unreadable).
    try {
      const stat = readFileSync('/proc/self/stat', 'latin1');
      return BigInt(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
    } catch (_) {
      return 0n;
    }
  }

  // The layout of a candidate file, or null when it is not this process's segment.
  function valid(f, start) {
    const st = fstatSync(f, { bigint: true });
    if (!st.isFile() || (euid >= 0 && st.uid !== BigInt(euid)) || st.size < BigInt(HEADER)) return null;
    const h = header;
    if (readSync(f, h, 0, HEADER, 0) < HEADER) return null;
    if (h.toString('latin1', 0, 8) !== 'LOOPTOP\0' || h.readUInt32LE(8) !== 6 || h.readUInt32LE(24) !== process.pid ||
      h.readUInt32LE(128) !== RECORD) return null;
    const headerStart = h.readBigUInt64LE(32);
    if (start && headerStart && headerStart !== start) return null; // a dead process's, pid reused
    const channels = h.readUInt32LE(120);
    const ring = h.readUInt32LE(124);
    const probeOffset = Number(h.readBigUInt64LE(112));
    if (!channels || !ring || st.size < BigInt(probeOffset + channels * ring * RECORD)) return null;
    return { dev: st.dev, ino: st.ino, base: probeOffset + (threadId % channels) * ring * RECORD, ring };
  }

  // looptop-<pid>, else looptop-<pid>-<16 hex> (the name the agent takes when the first was taken
  // by a file it could not remove).
  function find() {
    seg.triedNs = nowNs();
    seg.path = null;
    const start = startTime();
    const name = `looptop-${process.pid}`;
    let names = [name];
    for (let i = 0; i < names.length; i++) {
      const path = `${dir}/${names[i]}`;
      let f = -1;
      let found = null;
      try {
        f = openSync(path, OPEN_FLAGS);
        found = valid(f, start);
      } catch (_) {
        found = null;
      } finally {
        if (f >= 0) try { closeSync(f); } catch (_) { /* already closed */ }
      }
      if (found) {
        Object.assign(seg, found, { path });
        return true;
      }
      if (i === 0) {
        try {
          names = names.concat(readdirSync(dir).filter((n) => n.startsWith(`${name}-`) &&
            /^[0-9a-f]{16}$/.test(n.slice(name.length + 1))));
        } catch (_) { /* no folder: no segment */ }
      }
    }
    return false;
  }

  // A descriptor of the segment for one batch, or -1.
  function openSegment() {
    if (seg.path === null && (nowNs() - seg.triedNs < RETRY_NS || !find())) return -1;
    for (let attempt = 0; attempt < 2; attempt++) {
      let f = -1;
      try {
        f = openSync(seg.path, OPEN_FLAGS);
        const st = fstatSync(f, { bigint: true });
        if (st.dev === seg.dev && st.ino === seg.ino) return f;
      } catch (_) { /* gone: find it again */ }
      if (f >= 0) try { closeSync(f); } catch (_) { /* already closed */ }
      if (nowNs() - seg.triedNs < RETRY_NS || !find()) {
        seg.path = null;
        return -1;
      }
    }
    return -1;
  }

  // One record: seq cleared, fields, then seq = index + 1 (the reader checks it before and after).
  function put(f, [kind, tNs, durNs, a, b, c, d]) {
    const off = seg.base + (index % seg.ring) * RECORD;
    rec.writeBigUInt64LE(BigInt(index + 1), 0);
    rec.writeUInt32LE(kind, 8);
    rec.writeUInt32LE(threadId, 12);
    rec.writeBigUInt64LE(BigInt(Math.max(0, Math.round(tNs))), 16);
    rec.writeBigUInt64LE(BigInt(Math.max(0, Math.round(durNs))), 24);
    rec.writeBigUInt64LE(BigInt(Math.max(0, Math.round(a))), 32);
    rec.writeBigUInt64LE(BigInt(Math.max(0, Math.round(b))), 40);
    rec.writeBigUInt64LE(BigInt(Math.max(0, Math.round(c || 0))), 48);
    rec.writeBigUInt64LE(BigInt(Math.max(0, Math.round(d || 0))), 56);
    writeSync(f, zero, 0, 8, off);
    writeSync(f, rec, 8, RECORD - 8, off + 8);
    writeSync(f, rec, 0, 8, off);
    index++;
  }

  // Writes a batch of records ([kind, tNs, durNs, a, b, c, d]); any error drops the rest.
  function write(records) {
    if (disabled) return;
    let f = -1;
    try {
      f = openSegment();
      if (f < 0) return;
      for (const r of records) put(f, r);
    } catch (_) {
      // dropped
    } finally {
      if (f >= 0) try { closeSync(f); } catch (_) { /* already closed */ }
    }
  }
  let disabled = false;

  const hr = process.hrtime.bigint; // CLOCK_MONOTONIC, the segment's clock
  const nowNs = () => Number(hr());

  // ---- GC pauses ----------------------------------------------------------------------------
  function observeGc() {
    const { PerformanceObserver, performance, constants: k } = require('perf_hooks');
    // performance.now() counts from timeOrigin; map it onto CLOCK_MONOTONIC once.
    const originNs = nowNs() - performance.now() * 1e6;
    const kinds = new Map([
      [k.NODE_PERFORMANCE_GC_MINOR, 1],
      [k.NODE_PERFORMANCE_GC_MAJOR, 2],
      [k.NODE_PERFORMANCE_GC_INCREMENTAL, 4],
      [k.NODE_PERFORMANCE_GC_WEAKCB, 8],
    ]);
    const obs = new PerformanceObserver((list) => {
      const batch = [];
      for (const e of list.getEntries()) {
        const d = e.detail || {};
        batch.push([KIND.GC, originNs + e.startTime * 1e6, e.duration * 1e6, kinds.get(d.kind) || 0, d.flags || 0]);
      }
      write(batch);
    });
    obs.observe({ entryTypes: ['gc'] });
  }

  // ---- libuv thread pool --------------------------------------------------------------------
  const size = Math.max(1, Math.min(1024, Number(process.env.UV_THREADPOOL_SIZE) || 4));
  let running = 0; // items on a worker (modelled)
  const queue = []; // submit times of items waiting for a worker, FIFO like libuv
  let submitted = 0;
  let queuedMax = 0;
  let waits = new Map(); // bucket -> [count, max]
  let flushTimer = null;

  function bucketOf(ns) {
    return ns < 1000 ? 0 : 1 + Math.floor(Math.log2(ns / 1000) * WAIT_BUCKETS_PER_OCTAVE);
  }
  function bucketLow(b) {
    return b === 0 ? 0 : 1000 * 2 ** ((b - 1) / WAIT_BUCKETS_PER_OCTAVE);
  }

  function recordWait(ns) {
    const b = bucketOf(ns);
    const w = waits.get(b);
    if (w) {
      w[0]++;
      if (ns > w[1]) w[1] = ns;
    } else {
      waits.set(b, [1, ns]);
    }
  }

  let activeSinceFlush = false;

  function flush() {
    const t = nowNs();
    const batch = [[KIND.POOL, t, 0, size, running + queue.length, queuedMax, submitted]];
    for (const [b, [count, max]] of waits) batch.push([KIND.POOL_WAIT, t, 0, bucketLow(b), bucketLow(b + 1), count, max]);
    write(batch);
    waits = new Map();
    queuedMax = queue.length;
    // Stop sampling after a whole quiet interval, so a busy server does not create and clear a
    // timer per request, and an idle one has no timer from us at all.
    if (!activeSinceFlush && running + queue.length === 0 && flushTimer) {
      clearInterval(flushTimer);
      flushTimer = null;
    }
    activeSinceFlush = false;
  }

  function submit() {
    submitted++;
    activeSinceFlush = true;
    if (running < size) {
      running++;
      recordWait(0);
    } else {
      // Only a queued item needs its submit time (a clock read allocates a BigInt).
      queue.push(nowNs());
      if (queue.length > queuedMax) queuedMax = queue.length;
    }
    if (!flushTimer) {
      flushTimer = setInterval(flush, 100);
      flushTimer.unref();
    }
  }

  function complete() {
    if (queue.length) recordWait(nowNs() - queue.shift());
    else if (running > 0) running--;
  }

  function cancel() {
    // The call threw before submitting: undo the submission.
    submitted--;
    if (queue.length) queue.pop();
    else if (running > 0) running--;
  }

  function copyProps(from, to) {
    for (const key of Reflect.ownKeys(from)) {
      if (key === 'length' || key === 'name' || key === 'prototype' || key === 'arguments' || key === 'caller') continue;
      try {
        Object.defineProperty(to, key, Object.getOwnPropertyDescriptor(from, key));
      } catch (_) { /* non-configurable: leave it */ }
    }
    return to;
  }

  // Public API with a trailing callback: one pool item per call that has a callback.
  function wrapCallbackApi(obj, name, usesPool = () => true) {
    const orig = obj && obj[name];
    if (typeof orig !== 'function') return;
    const wrapped = function (...args) {
      const cb = args[args.length - 1];
      if (typeof cb !== 'function' || !usesPool(args)) return orig.apply(this, args);
      submit();
      let done = false;
      args[args.length - 1] = function (...r) {
        if (!done) {
          done = true;
          complete();
        }
        return cb.apply(this, r);
      };
      try {
        return orig.apply(this, args);
      } catch (e) {
        if (!done) {
          done = true;
          cancel();
        }
        throw e;
      }
    };
    obj[name] = copyProps(orig, wrapped);
  }

  // fs binding: an async call passes an FSReqCallback (callback API) or kUsePromises (promises
  // API) as its last argument; each is one libuv work item.
  function wrapFsBinding() {
    let b;
    const warn = process.emitWarning;
    try {
      process.emitWarning = () => {};
      b = process.binding('fs');
    } finally {
      process.emitWarning = warn;
    }
    const Req = b.FSReqCallback;
    const usePromises = b.kUsePromises;
    for (const name of Object.keys(b)) {
      const orig = b[name];
      if (typeof orig !== 'function' || /^[A-Z]/.test(name) || /Sync$|^internal|^legacy|^getFormat/.test(name)) continue;
      b[name] = copyProps(orig, function (...args) {
        const last = args[args.length - 1];
        if (Req && last instanceof Req) {
          submit();
          const oc = last.oncomplete;
          if (typeof oc === 'function') {
            last.oncomplete = function (...r) {
              complete();
              return oc.apply(this, r);
            };
          }
          try {
            return orig.apply(this, args);
          } catch (e) {
            cancel();
            throw e;
          }
        }
        if (usePromises !== undefined && last === usePromises) {
          submit();
          let p;
          try {
            p = orig.apply(this, args);
          } catch (e) {
            cancel();
            throw e;
          }
          if (p && typeof p.then === 'function') p.then(complete, complete);
          else complete();
          return p;
        }
        return orig.apply(this, args);
      });
    }
  }

  function trackPool() {
    wrapFsBinding();
    const crypto = require('crypto');
    for (const n of ['pbkdf2', 'scrypt', 'randomBytes', 'randomFill', 'randomInt', 'generateKeyPair', 'generateKey',
      'generatePrime', 'checkPrime', 'hkdf']) wrapCallbackApi(crypto, n);
    const zlib = require('zlib');
    for (const n of ['deflate', 'deflateRaw', 'gzip', 'gunzip', 'inflate', 'inflateRaw', 'unzip', 'brotliCompress',
      'brotliDecompress']) wrapCallbackApi(zlib, n);
    const dns = require('dns');
    const { isIP } = require('net');
    // An IP literal never reaches the pool: dns.lookup answers it on the next tick.
    wrapCallbackApi(dns, 'lookup', (args) => typeof args[0] === 'string' && isIP(args[0]) === 0);
    wrapCallbackApi(dns, 'lookupService');
    write([[KIND.POOL_KIND, nowNs(), 0, 1, size]]);
    process.on('exit', () => {
      if (submitted > 0) flush();
    });
  }

  try {
    if (process.env.LOOPTOP_PROBE === '0') return;
    write([[KIND.PROBE, nowNs(), 0, 1, 0]]);
    observeGc();
    if (isMainThread) trackPool();
  } catch (_) {
    disabled = true; // fail open: the program runs as if the probe were not there
  }
})();
