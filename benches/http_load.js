// Closed-loop HTTP load: CONNECTIONS keep-alive connections, each sending the next request when
// the previous answer arrives, for SECONDS. Prints "<requests/s> <p99 ms>".
'use strict';
const http = require('http');
const [port, seconds = '3', connections = '16'] = process.argv.slice(2);
const agent = new http.Agent({ keepAlive: true, maxSockets: Number(connections) });
const lat = [];
let done = 0;
const end = Date.now() + Number(seconds) * 1000;
function one() {
  if (Date.now() >= end) return finish();
  const t0 = process.hrtime.bigint();
  http.get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
    res.resume();
    res.on('end', () => {
      lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
      done++;
      one();
    });
  }).on('error', () => one());
}
let open = Number(connections);
function finish() {
  if (--open > 0) return;
  lat.sort((a, b) => a - b);
  console.log(`${(done / Number(seconds)).toFixed(0)} ${lat[Math.floor(lat.length * 0.99)].toFixed(2)}`);
  agent.destroy();
}
for (let i = 0; i < Number(connections); i++) one();
