// ONNX Runtime worker for refimpl's onnx-runtime target (driven by refimpl/harness/onnx_runtime.py).
//
// One process serves a whole check run. It reads framed requests on stdin and answers each with one
// framed response on stdout, in order. A frame is
//     u32 little-endian header length | header (UTF-8 JSON) | payload (raw bytes)
//
// Requests:
//   {"op": "hello"}                          -> {"ok": true, "ort": "<version>", "node": "<version>"}
//   {"op": "run", "id": n, "model": key, "model_nbytes": m,
//    "inputs": [{"name", "type", "dims", "nbytes"}, ...], "outputs": ["Y", ...]}
//       payload: the ONNX model (m bytes; m = 0 when a model with this key was sent before), then
//       each input's bytes in order. Answer: {"id": n, "ok": true, "outputs": [{"name", "type",
//       "dims", "nbytes"}, ...]} with the outputs' bytes as payload, or {"id": n, "ok": false,
//       "error": "..."} for a per-case failure (session creation or run), the process going on.
//   {"op": "bye"}                            -> exits 0.
//
// Argument: the folder holding node_modules/onnxruntime-node (tools/ort of the project).
// Sessions are cached by model key: the Python side builds models with symbolic dimensions, so one
// session serves every case that shares dtype, mask kind and attributes.
import { createRequire } from 'node:module';
import path from 'node:path';

const ortDir = process.argv[2];
if (!ortDir) {
  process.stderr.write('usage: node ort_runner.mjs <folder with node_modules/onnxruntime-node>\n');
  process.exit(2);
}
const require = createRequire(path.join(path.resolve(ortDir), 'package.json'));
const ort = require('onnxruntime-node');
const ortVersion = require('onnxruntime-node/package.json').version;
ort.env.logLevel = 'error';

const SESSION_OPTIONS = {
  intraOpNumThreads: 1,       // cases are small; the machine's cores are shared with other work
  interOpNumThreads: 1,
  executionProviders: ['cpu'],
  logSeverityLevel: 3,
};
// ONNX tensor type names (as the Python side sends them) -> typed-array constructor for ort.Tensor
const TYPED = { float32: Float32Array, float16: Uint16Array, bool: Uint8Array };

const models = new Map();     // key -> model bytes (Uint8Array)
const sessions = new Map();   // key -> InferenceSession

function frame(header, payloads = []) {
  const h = Buffer.from(JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32LE(h.length, 0);
  return Buffer.concat([len, h, ...payloads]);
}

function send(header, payloads) {
  process.stdout.write(frame(header, payloads));
}

function tensorFrom(desc, bytes) {
  const Ctor = TYPED[desc.type];
  if (!Ctor) throw new Error(`input ${desc.name}: unsupported type ${desc.type}`);
  // copy into a fresh, aligned ArrayBuffer: the payload slice may start at any byte offset
  const buf = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length);
  return new ort.Tensor(desc.type, new Ctor(buf), desc.dims);
}

async function sessionFor(key) {
  let s = sessions.get(key);
  if (!s) {
    const model = models.get(key);
    if (!model) throw new Error(`model ${key} was never sent`);
    s = await ort.InferenceSession.create(model, SESSION_OPTIONS);
    sessions.set(key, s);
  }
  return s;
}

async function handleRun(header, payload) {
  let offset = 0;
  if (header.model_nbytes > 0) {
    models.set(header.model, new Uint8Array(payload.subarray(0, header.model_nbytes)));
    offset = header.model_nbytes;
  }
  try {
    const feeds = {};
    for (const desc of header.inputs) {
      feeds[desc.name] = tensorFrom(desc, payload.subarray(offset, offset + desc.nbytes));
      offset += desc.nbytes;
    }
    const session = await sessionFor(header.model);
    const result = await session.run(feeds, header.outputs);
    const outs = [];
    const bytes = [];
    for (const name of header.outputs) {
      const t = result[name];
      const data = Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
      outs.push({ name, type: t.type, dims: t.dims, nbytes: data.length });
      bytes.push(data);
    }
    send({ id: header.id, ok: true, outputs: outs }, bytes);
  } catch (e) {
    send({ id: header.id, ok: false, error: String(e && e.message ? e.message : e) });
  }
}

// Bytes received and not yet consumed, as a list of chunks: a backlog of many requests is not
// re-copied on every chunk that arrives.
const queue = { chunks: [], length: 0 };

function take(n) {
  const parts = [];
  let need = n;
  while (need > 0) {
    const c = queue.chunks[0];
    if (c.length <= need) {
      parts.push(c);
      queue.chunks.shift();
      need -= c.length;
    } else {
      parts.push(c.subarray(0, need));
      queue.chunks[0] = c.subarray(need);
      need = 0;
    }
  }
  queue.length -= n;
  return parts.length === 1 ? Buffer.from(parts[0]) : Buffer.concat(parts, n);
}

function peekHeader() {
  if (queue.length < 4) return null;
  const head = queue.chunks[0].length >= 4 ? queue.chunks[0] : Buffer.concat(queue.chunks, Math.min(queue.length, 4));
  const hlen = head.readUInt32LE(0);
  if (queue.length < 4 + hlen) return null;
  const first = Buffer.concat(queue.chunks, Math.min(queue.length, 4 + hlen));
  const header = JSON.parse(first.subarray(4, 4 + hlen).toString('utf8'));
  const plen = header.op === 'run'
    ? (header.model_nbytes || 0) + header.inputs.reduce((a, d) => a + d.nbytes, 0)
    : 0;
  return queue.length < 4 + hlen + plen ? null : { header, hlen, plen };
}

let busy = false;
let stdinEnded = false;   // exit once the requests already received are answered

async function drain() {
  if (busy) return;          // the running loop picks up what arrived meanwhile
  busy = true;
  try {
    for (let next = peekHeader(); next; next = peekHeader()) {
      take(4 + next.hlen);
      const payload = take(next.plen);
      const { header } = next;
      if (header.op === 'hello') {
        send({ ok: true, ort: ortVersion, node: process.version });
      } else if (header.op === 'bye') {
        process.exit(0);
      } else if (header.op === 'run') {
        await handleRun(header, payload);
      } else {
        send({ id: header.id, ok: false, error: `unknown op ${JSON.stringify(header.op)}` });
      }
    }
  } finally {
    busy = false;
  }
  if (stdinEnded) process.exit(0);
}

process.stdin.on('data', (chunk) => {
  queue.chunks.push(chunk);
  queue.length += chunk.length;
  drain();
});
process.stdin.on('end', () => {
  stdinEnded = true;
  if (!busy) process.exit(0);
});
