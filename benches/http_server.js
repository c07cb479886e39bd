// Benchmark server: each request stats a file (one libuv pool item, through the probe's fs
// wrapper) and answers a small JSON body. Prints "listening <port>".
'use strict';
const http = require('http');
const fs = require('fs');
const server = http.createServer((req, res) => {
  fs.stat(__filename, (err, st) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ ok: !err, size: st ? st.size : 0, t: Date.now() }));
  });
});
server.listen(0, '127.0.0.1', () => console.log('listening ' + server.address().port));
process.on('SIGTERM', () => process.exit(0));
