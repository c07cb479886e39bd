// Preloaded into a server (node -r): a busy stall of STALL_MS (120) every STALL_EVERY_MS (5000),
// in a function of its own, so that a long-running view has stalls and a blocker to show.
'use strict';
const ms = Number(process.env.STALL_MS || 120);
function stallOnPurpose() {
  const t = Date.now();
  while (Date.now() - t < ms);
}
setInterval(stallOnPurpose, Number(process.env.STALL_EVERY_MS || 5000)).unref();
