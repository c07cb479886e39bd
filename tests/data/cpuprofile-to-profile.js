// Converts a V8 .cpuprofile (node --cpu-prof) into looptop's flame::Profile JSON:
//   node cpuprofile-to-profile.js IN.cpuprofile TITLE SUBTITLE > OUT.json
// Frames are the profile's distinct call frames (1-based line/col, file:// URLs as paths); each
// node of the call tree with samples becomes one stack, root first, weighted by its sample count.
// V8's synthetic "(root)" is left out; code without a script ("(program)", "(garbage
// collector)", RegExp code, builtins) is V8 code.
'use strict';
const fs = require('fs');
const [input, title, subtitle] = process.argv.slice(2);
const prof = JSON.parse(fs.readFileSync(input, 'utf8'));
const nodes = new Map(prof.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of prof.nodes) for (const c of n.children || []) parent.set(c, n.id);

const frames = [];
const frameIds = new Map();
function frameId(cf) {
  const key = JSON.stringify([cf.functionName, cf.url, cf.lineNumber, cf.columnNumber]);
  if (!frameIds.has(key)) {
    const f = { name: cf.functionName || '(anonymous)', kind: cf.url ? 'js' : 'v8-code' };
    if (cf.url) f.file = cf.url.startsWith('file://') ? decodeURIComponent(cf.url.slice(7)) : cf.url;
    if (cf.url && cf.lineNumber >= 0) f.line = cf.lineNumber + 1;
    if (cf.url && cf.columnNumber >= 0) f.col = cf.columnNumber + 1;
    frameIds.set(key, frames.length);
    frames.push(f);
  }
  return frameIds.get(key);
}

const weights = new Map();
for (const id of prof.samples) weights.set(id, (weights.get(id) || 0) + 1);
const stacks = [];
for (const [id, weight] of [...weights].sort((a, b) => a[0] - b[0])) {
  const path = [];
  for (let n = id; n !== undefined; n = parent.get(n)) {
    const cf = nodes.get(n).callFrame;
    if (cf.functionName !== '(root)') path.push(frameId(cf));
  }
  stacks.push([path.reverse(), weight]);
}
process.stdout.write(JSON.stringify({ title, subtitle, frames, stacks }) + '\n');
