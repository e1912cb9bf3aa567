// A small client of percolator's Transactions service (percolator.v1.Transactions) for
// Node.js: @grpc/grpc-js and @grpc/proto-loader over the repository's proto/ files.
//
// The node runs the whole transaction protocol (lock resolution, waits for live locks,
// two-phase or one-phase commit, heartbeats, notifications); a client only begins,
// reads, and sends its writes with Commit.  See docs/grpc.md.
//
//   const { Client } = require('./percolator');
//   const client = new Client('127.0.0.1:7070');
//   // a node with TLS and tokens (docs/security.md):
//   //   new Client('node.example:7070', { token, tlsCa: 'ca.pem' })
//   // and with mutual TLS also tlsCert: 'client.pem', tlsKey: 'client.key'
//   await client.run(async (txn) => {
//     const a = Number(await txn.get('alice', 'balance'));
//     txn.set('alice', 'balance', String(a - 10));
//   });
'use strict';

const fs = require('fs');
const net = require('net');
const tls = require('tls');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const PROTO_DIR = process.env.PERCOLATOR_PROTO_DIR || path.join(__dirname, '..', '..', 'proto');

const definition = protoLoader.loadSync('percolator/v1/transactions.proto', {
  includeDirs: [PROTO_DIR],
  longs: String, // uint64 (txn_id, commit_ts) as decimal strings: exact beyond 2**53
  enums: String,
  defaults: true, // absent fields as their defaults (found: false, value: <empty>)
  oneofs: true, // a Stream response names its result: reply.result === 'commit', ...
});
const v1 = grpc.loadPackageDefinition(definition).percolator.v1;

// Conflicts travel as gRPC's rich error details: a google.rpc.Status in the
// `grpc-status-details-bin` trailer whose details hold a percolator.v1.Conflict.
// google.rpc.Status is three fields (googleapis' google/rpc/status.proto), declared here.
const errorTypes = protobuf.Root.fromJSON({
  nested: {
    google: {
      nested: {
        protobuf: { nested: { Any: { fields: { type_url: { type: 'string', id: 1 }, value: { type: 'bytes', id: 2 } } } } },
        rpc: {
          nested: {
            Status: {
              fields: {
                code: { type: 'int32', id: 1 },
                message: { type: 'string', id: 2 },
                details: { rule: 'repeated', type: 'google.protobuf.Any', id: 3 },
              },
            },
          },
        },
      },
    },
  },
});
errorTypes.resolvePath = (origin, target) => path.join(PROTO_DIR, target);
errorTypes.loadSync('percolator/v1/node.proto');
const Status = errorTypes.lookupType('google.rpc.Status');
const NativeHello = errorTypes.lookupType('percolator.v1.NativeHello');
const CommandError = errorTypes.lookupType('percolator.v1.CommandError');
const Conflict = errorTypes.lookupType('percolator.v1.Conflict');
const CONFLICT_URL = 'type.googleapis.com/percolator.v1.Conflict';

/** The error's class name the node sent beside a shared code (the bigtable-lite-error
 *  trailer, or a Stream error's `error`), e.g. 'SnapshotTooOld'; '' if none. */
function errorName(err) {
  if (err && err.error !== undefined) return err.error || '';
  const names = err && err.metadata ? err.metadata.get('bigtable-lite-error') : [];
  return names && names.length ? String(names[0]) : '';
}

/** The Conflict in a failed call's status details (ABORTED, or UNAVAILABLE on a live
 *  lock), as {reason, row, column, commitTs, lockStartTs}; null if it has none. */
function conflictOf(err) {
  if (err && err.conflict !== undefined) return err.conflict; // a Stream's error
  const raw = err && err.metadata ? err.metadata.get('grpc-status-details-bin') : [];
  if (!raw || raw.length === 0) return null;
  const status = Status.decode(raw[0]);
  for (const detail of status.details) {
    if (detail.type_url === CONFLICT_URL) {
      const c = Conflict.toObject(Conflict.decode(detail.value), { enums: String, longs: String });
      return {
        reason: c.reason,
        row: Buffer.from(c.row || []),
        column: Buffer.from(c.column || []),
        commitTs: c.commitTs || '0',
        lockStartTs: c.lockStartTs || '0',
      };
    }
  }
  return null;
}

const bytes = (x) => (Buffer.isBuffer(x) ? x : Buffer.from(String(x), 'utf8'));
const key = (row, column) => ({ row: bytes(row), column: bytes(column) });
const keyString = (row, column) => `${bytes(row).toString('hex')}/${bytes(column).toString('hex')}`;

function promised(stub, method, request, deadlineSeconds) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + deadlineSeconds * 1000);
    stub[method](request, { deadline }, (err, reply) => (err ? reject(err) : resolve(reply)));
  });
}

// The node's native transport (docs/grpc.md, "The native transport: TXN frames"): frames
// of uint32 length (big-endian) | uint8 kind | payload; a TXN frame holds what a Stream
// message would (a TxnStreamRequest), its REPLY the Stream's answer.
const HELLO = 1;
const WELCOME = 3;
const REPLY = 4;
const CLOSE = 5;
const TXN = 6;
const streamMethod = definition['percolator.v1.Transactions'].Stream;

function frame(kind, payload) {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(payload.length, 0);
  head.writeUInt8(kind, 4);
  return Buffer.concat([head, payload]);
}

/** A status code's name (7: PERMISSION_DENIED), as grpc-js names a failed call's. */
const STATUS_NAMES = Object.fromEntries(Object.entries(grpc.status).map(([name, code]) => [code, name]));

/** An error's message as grpc-js words a failed call's: "7 PERMISSION_DENIED: details". */
function statusMessage(code, details) {
  return `${code} ${STATUS_NAMES[code] || 'UNKNOWN'}: ${details}`;
}

/** The error a CLOSE frame (or any frame but the one expected) stands for. */
function closedError(kind, payload) {
  if (kind !== CLOSE) return new Error(`unexpected native frame kind ${kind}`);
  const e = CommandError.toObject(CommandError.decode(payload), { defaults: true });
  return Object.assign(new Error(statusMessage(e.code, e.message)), { code: e.code, details: e.message, error: e.error });
}

/** A Stream's or a TXN frame's failed answer as an Error like a failed call's. */
function answerError(e) {
  const err = new Error(statusMessage(e.code, e.message));
  return Object.assign(err, { code: e.code, details: e.message, error: e.error, conflict: e.conflict && {
    reason: e.conflict.reason, row: Buffer.from(e.conflict.row), column: Buffer.from(e.conflict.column),
    commitTs: e.conflict.commitTs, lockStartTs: e.conflict.lockStartTs } });
}

const STREAM_FIELDS = {
  Begin: 'begin', Get: 'get', BatchGet: 'batchGet', Scan: 'scan', Commit: 'commit', Rollback: 'rollback',
};

/** Whether HOST of HOST:PORT is this machine (127.0.0.0/8, ::1, localhost). */
function isLoopback(address) {
  const host = address.replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1');
  if (host === 'localhost') return true;
  if (net.isIPv4(host)) return host.startsWith('127.');
  return net.isIPv6(host) && host === '::1';
}

/** A PEM file's bytes, or undefined for no file. */
function readPem(file) {
  return file ? fs.readFileSync(file) : undefined;
}

/** Channel credentials and interceptors for a node's TLS and token (docs/security.md):
 *  TLS when tlsCa is given (tlsCert and tlsKey add a client certificate: mutual TLS);
 *  the token on every call as `authorization: Bearer TOKEN`, sent without TLS only to a
 *  loopback address (as the Python client: a token never travels in the clear). */
function security(address, { token = '', tlsCa = '', tlsCert = '', tlsKey = '' }) {
  if (Boolean(tlsCert) !== Boolean(tlsKey)) throw new Error('tlsCert and tlsKey go together');
  if (tlsCert && !tlsCa) throw new Error('a client certificate (tlsCert) needs tlsCa');
  const credentials = tlsCa
    ? grpc.credentials.createSsl(readPem(tlsCa), readPem(tlsKey), readPem(tlsCert))
    : grpc.credentials.createInsecure();
  if (!token) return { credentials, interceptors: [] };
  if (!tlsCa && !isLoopback(address)) {
    throw new Error(`a token is sent only over TLS or to this host: give tlsCa to reach ${address}`);
  }
  const bearer = (options, nextCall) => new grpc.InterceptingCall(nextCall(options), {
    start(metadata, listener, next) {
      metadata.set('authorization', `Bearer ${token}`);
      next(metadata, listener);
    },
  });
  return { credentials, interceptors: [bearer] };
}

/** Connect to a node's native port with the same TLS as the channel (the node's
 *  certificate verified against tlsCa and the host dialled; a client certificate for
 *  mutual TLS), or plain TCP without tlsCa; onReady once the connection can carry the
 *  HELLO. */
function nativeSocket(host, port, { tlsCa = '', tlsCert = '', tlsKey = '' }, onReady) {
  if (!tlsCa) return net.connect(port, host, onReady);
  return tls.connect({
    host, port, servername: net.isIP(host) ? '' : host,
    ca: readPem(tlsCa), cert: readPem(tlsCert), key: readPem(tlsKey),
  }, onReady);
}

class Client {
  /** @param {string} address HOST:PORT of a `percolator serve` node
   *  @param {object} options  stream: send every call as a message of one Stream call
   *  (cheaper for the node and for this process while there is work; falls back to
   *  unary calls if the node refuses the stream); native: send every call as a TXN
   *  frame of the node's native transport (cheaper still; found by Node.Describe; by
   *  gRPC if the node serves none); token: sent with every call; tlsCa: PEM file of
   *  the CA that signed the node's certificate (TLS on); tlsCert, tlsKey: PEM files of
   *  a client certificate and its key (mutual TLS) */
  constructor(address, {
    deadlineSeconds = 30, table = '', stream = false, native = false, token = '', tlsCa = '',
    tlsCert = '', tlsKey = '',
  } = {}) {
    this.address = address;
    this.security = security(address, { token, tlsCa, tlsCert, tlsKey });
    this.tlsFiles = { tlsCa, tlsCert, tlsKey };
    this.token = token;
    const { credentials, interceptors } = this.security;
    this.stub = new v1.Transactions(address, credentials, { interceptors });
    this.deadlineSeconds = deadlineSeconds;
    this.table = bytes(table);
    this.stream = stream;
    this.native = native;
    this.open = null; // the Stream call, while open
    this.socket = null; // the native connection (a promise), while open
    this.waiting = []; // requests not answered yet, in order: {method, request, resolve, reject}
  }

  call(method, request) {
    if (this.native) return this.onFrames(method, request);
    if (this.stream) return this.onStream(method, request);
    return promised(this.stub, method, request, this.deadlineSeconds);
  }

  async onFrames(method, request) {
    if (!this.socket) this.socket = this.connectNative();
    const socket = await this.socket;
    if (socket === null) { // the node serves no native transport: gRPC it is
      this.native = false;
      this.socket = null;
      return this.call(method, request);
    }
    return new Promise((resolve, reject) => {
      this.waiting.push({ method, request, resolve, reject });
      socket.write(frame(TXN, streamMethod.requestSerialize({ [STREAM_FIELDS[method]]: request })));
    });
  }

  /** Ask the node where its native transport is, connect, say HELLO, await WELCOME;
   *  null if it serves none. */
  async connectNative() {
    const node = new v1.Node(this.address, this.security.credentials,
      { interceptors: this.security.interceptors });
    let described;
    try {
      described = await promised(node, 'Describe', {}, this.deadlineSeconds);
    } finally {
      node.close();
    }
    if (!described.nativePort) return null;
    const host = this.address.slice(0, this.address.lastIndexOf(':')).replace(/^\[|\]$/g, '');
    return new Promise((resolve, reject) => {
      const hello = () => socket.write(frame(HELLO, Buffer.from(
        NativeHello.encode({ version: 1, token: this.token }).finish())));
      const socket = nativeSocket(host, described.nativePort, this.tlsFiles, hello);
      socket.setNoDelay(true);
      let buffer = Buffer.alloc(0);
      let welcomed = false;
      const fail = (err) => {
        this.socket = null;
        const pending = this.waiting;
        this.waiting = [];
        for (const w of pending) w.reject(err); // outcome unknown: retry as after a lost reply
        if (!welcomed) reject(err);
        socket.destroy();
      };
      socket.on('data', (chunk) => {
        buffer = Buffer.concat([buffer, chunk]);
        while (buffer.length >= 5 && buffer.length >= 5 + buffer.readUInt32BE(0)) {
          const kind = buffer.readUInt8(4);
          const payload = buffer.subarray(5, 5 + buffer.readUInt32BE(0));
          buffer = buffer.subarray(5 + payload.length);
          if (!welcomed && kind === WELCOME) {
            welcomed = true;
            resolve(socket);
          } else if (welcomed && kind === REPLY) {
            this.answer(streamMethod.responseDeserialize(payload));
          } else {
            fail(closedError(kind, payload));
            return;
          }
        }
      });
      socket.on('error', fail);
      socket.on('close', () => fail(new Error('the native connection closed')));
    });
  }

  /** Settle the oldest waiting request with a Stream's or TXN frame's answer. */
  answer(reply) {
    const w = this.waiting.shift();
    if (reply.result !== 'error') w.resolve(reply[reply.result]);
    else w.reject(answerError(reply.error));
  }

  onStream(method, request) {
    if (!this.open) this.openStream();
    return new Promise((resolve, reject) => {
      this.waiting.push({ method, request, resolve, reject });
      this.open.write({ [STREAM_FIELDS[method]]: request });
    });
  }

  openStream() {
    const call = this.stub.Stream();
    this.open = call;
    call.on('data', (reply) => this.answer(reply));
    call.on('error', (err) => {
      const pending = this.waiting;
      this.waiting = [];
      this.open = null;
      const refused = err.code === grpc.status.RESOURCE_EXHAUSTED
        && (err.metadata.get('percolator-txn-stream')[0] === 'refused');
      if (refused) this.stream = false; // none of them was executed: send them as calls
      for (const w of pending) {
        if (refused) this.call(w.method, w.request).then(w.resolve, w.reject);
        else w.reject(err);
      }
    });
    call.on('end', () => { this.open = null; });
  }

  /** A new transaction at a fresh snapshot; `reads` ([[row, column], ...]) are read in the
   *  same round trip (txn.value(row, column) returns them).  `readOnly`: the node ends it
   *  in that call too (a read-only transaction in one message: nothing to commit). */
  async begin({ reads = [], ttlMs = 0, readOnly = false } = {}) {
    const reply = await this.call('Begin', {
      ttlMs, table: this.table, reads: reads.map(([r, c]) => key(r, c)), readOnly,
    });
    return new Transaction(this, reply.txnId, reply.values);
  }

  /** fn(txn), then commit; run again in a new transaction while the commit is ABORTED (a
   *  conflict: nothing was written) or the snapshot fell below the GC safe point
   *  (FAILED_PRECONDITION named SnapshotTooOld).  Resolves to fn's result. */
  async run(fn, { reads = [], maxAttempts = 50 } = {}) {
    for (let attempt = 1; ; attempt++) {
      const txn = await this.begin({ reads });
      const result = await fn(txn);
      try {
        await txn.commit();
        return result;
      } catch (err) {
        const again = err.code === grpc.status.ABORTED
          || (err.code === grpc.status.FAILED_PRECONDITION && errorName(err) === 'SnapshotTooOld');
        if (!again || attempt >= maxAttempts) throw err;
      }
      await new Promise((r) => setTimeout(r, Math.random() * 2 * 2 ** Math.min(attempt, 6)));
    }
  }

  close() {
    if (this.open) this.open.end();
    if (this.socket) this.socket.then((socket) => socket && socket.end(), () => {});
    this.stub.close();
  }
}

class Transaction {
  constructor(client, txnId, values) {
    this.client = client;
    this.txnId = txnId; // a decimal string: the transaction's start_ts
    this.begun = new Map(values.map((v) => [keyString(v.row, v.column), v.found ? v.value : null]));
    this.writes = new Map();
    this.weak = [];
  }

  /** A value read by begin({reads}): a Buffer, or null when absent. */
  value(row, column) {
    return this.begun.get(keyString(row, column));
  }

  async get(row, column) {
    const reply = await this.client.call('Get', { txnId: this.txnId, ...key(row, column) });
    return reply.value.found ? reply.value.value : null;
  }

  /** Values of [[row, column], ...], in order (a Buffer, or null when absent). */
  async batchGet(cells) {
    const reply = await this.client.call('BatchGet', {
      txnId: this.txnId, cells: cells.map(([r, c]) => key(r, c)),
    });
    return reply.values.map((v) => (v.found ? v.value : null));
  }

  /** Live cells {row, column, value} of [startRow, endRow), page by page. */
  async *scan({ startRow = '', endRow = '', columns = [], pageSize = 0 } = {}) {
    const request = {
      txnId: this.txnId, startRow: bytes(startRow), endRow: bytes(endRow),
      columns: columns.map(bytes), limit: pageSize,
    };
    for (;;) {
      const reply = await this.client.call('Scan', request);
      yield* reply.cells;
      if (!reply.next) return;
      request.after = reply.next;
    }
  }

  set(row, column, value) {
    this.writes.set(keyString(row, column), { ...key(row, column), value: bytes(value) });
  }

  delete(row, column) {
    this.writes.set(keyString(row, column), { ...key(row, column), delete: true });
  }

  /** Run the observers of (row, column) after the commit without writing it. */
  notify(row, column) {
    this.weak.push(key(row, column));
  }

  commitRequest() {
    return {
      txnId: this.txnId, table: this.client.table, writes: [...this.writes.values()],
      notify: this.weak,
    };
  }

  /** Commit the writes; resolves to commit_ts (a decimal string).  Rejected with ABORTED
   *  on a conflict (conflictOf(err) names the cell); UNAVAILABLE: send the same Commit
   *  again (answered by the first one's outcome, never committed twice). */
  async commit() {
    const reply = await this.client.call('Commit', this.commitRequest());
    return reply.commitTs;
  }

  async rollback() {
    await this.client.call('Rollback', { txnId: this.txnId });
  }
}

module.exports = {
  Client, Transaction, conflictOf, errorName, isLoopback, grpc, status: grpc.status,
};
