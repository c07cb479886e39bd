// Injects stalls of known length into the event loop, busy (CPU) and off-CPU (Atomics.wait),
// one per timer tick with quiet ticks between, and writes what it did to INJECT_TRUTH (JSON
// lines): kind, start (CLOCK_MONOTONIC ns, the clock of looptop's agent), measured length, and
// what Node's own perf_hooks.monitorEventLoopDelay (1 ms resolution) saw for that stall: its max
// delay between a reset 20 ms before the stall (a reset also drops the next delay it measures, so
// it must not be right before the stall) and a read 40 ms after it.
'use strict';
const fs = require('fs');
const { monitorEventLoopDelay } = require('perf_hooks');

const out = process.env.INJECT_TRUTH;
const lengths = (process.env.INJECT_MS || '1,2,5,10,20,50,100,200,500,1000').split(',').map(Number);
const repeats = Number(process.env.INJECT_REPEATS || 3);
const plan = [];
for (let r = 0; r < repeats; r++) for (const ms of lengths) for (const kind of ['busy', 'offcpu']) plan.push({ kind, ms });

const h = monitorEventLoopDelay({ resolution: 1 });
h.enable();
const sab = new Int32Array(new SharedArrayBuffer(4));
const lines = [];

function block(kind, ms) {
  if (kind === 'busy') {
    const t0 = performance.now();
    let x = 0;
    while (performance.now() - t0 < ms) x += Math.sqrt(x + 1);
  } else {
    Atomics.wait(sab, 0, 0, ms);
  }
}

let i = 0;
function next() {
  if (i === plan.length) {
    fs.writeFileSync(out, lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
    h.disable();
    return;
  }
  const { kind, ms } = plan[i++];
  h.reset();
  setTimeout(() => {
    const start = process.hrtime.bigint();
    block(kind, ms);
    const end = process.hrtime.bigint();
    const rec = { kind, target_ms: ms, start_ns: start.toString(), ms: Number(end - start) / 1e6 };
    setTimeout(() => {
      rec.meld_max_ms = h.max / 1e6;
      lines.push(rec);
      setTimeout(next, 40);
    }, 40);
  }, 20);
}
setTimeout(next, 300);
