#!/usr/bin/env node
// Scenarios of tests/percolator/test_txn_service_clients.py, each run as its own Node.js
// process with the example client (examples/node/percolator.js).  Each prints JSON lines.
// A first argument --stream sends every call on one Stream call instead of unary calls,
// --native as TXN frames of the node's native transport.
//
//   node scenarios.js commit-big HOST:PORT PREFIX CELLS BYTES   prints {"committing"} then commits
//   node scenarios.js write HOST:PORT ROW COLUMN VALUE           one committed write
//   node scenarios.js conflict HOST:PORT ROW COLUMN              a conflict, as the caller sees it
//   node scenarios.js bad-input HOST:PORT                        the status code of each bad call
//   node scenarios.js expire HOST:PORT TTL_MS                    a transaction left alone expires
//   node scenarios.js begin-and-hang HOST:PORT TTL_MS            begins, then waits to be killed
'use strict';

const { Client, conflictOf, grpc } = require('../../examples/node/percolator');

const say = (obj) => console.log(JSON.stringify(obj));
const codeName = (code) => Object.keys(grpc.status).find((k) => grpc.status[k] === code);

async function outcome(promise) {
  try {
    return { ok: await promise };
  } catch (err) {
    return { code: codeName(err.code), details: err.details, conflict: conflictOf(err) };
  }
}

const scenarios = {
  async 'commit-big'(client, prefix, cells, size) {
    const txn = await client.begin();
    const value = Buffer.alloc(Number(size), 'x');
    for (let i = 0; i < Number(cells); i++) txn.set(`${prefix}/${i}`, 'blob', value);
    const pending = txn.commit();
    say({ committing: txn.txnId });
    say({ committed: await pending });
  },

  async write(client, row, column, value) {
    const txn = await client.begin();
    txn.set(row, column, value);
    say({ committed: await txn.commit() });
  },

  async conflict(client, row, column) {
    const first = await client.begin({ reads: [[row, column]] });
    const second = await client.begin({ reads: [[row, column]] });
    first.set(row, column, 'first');
    second.set(row, column, 'second');
    const committed = await first.commit();
    const got = await outcome(second.commit());
    say({ committed, second: got.code, conflict: got.conflict && {
      reason: got.conflict.reason, row: got.conflict.row.toString(),
      column: got.conflict.column.toString(), commitTs: got.conflict.commitTs } });
  },

  async 'bad-input'(client) {
    const txn = await client.begin();
    const id = txn.txnId;
    const calls = {
      emptyRow: () => client.call('Get', { txnId: id, row: Buffer.alloc(0), column: Buffer.from('c') }),
      systemColumn: () => client.call('Get', { txnId: id, row: Buffer.from('r'), column: Buffer.from('\0sys') }),
      noTxnId: () => client.call('Get', { row: Buffer.from('r'), column: Buffer.from('c') }),
      cellTwice: () => client.call('Commit', { txnId: id, writes: [
        { row: Buffer.from('r'), column: Buffer.from('c'), value: Buffer.from('1') },
        { row: Buffer.from('r'), column: Buffer.from('c'), delete: true }] }),
      deleteWithValue: () => client.call('Commit', { txnId: id, writes: [
        { row: Buffer.from('r'), column: Buffer.from('c'), value: Buffer.from('1'), delete: true }] }),
      tooManyCells: () => client.call('BatchGet', { txnId: id, cells: Array.from({ length: 1001 },
        (_, i) => ({ row: Buffer.from(`r${i}`), column: Buffer.from('c') })) }),
      ttlTooLong: () => client.call('Begin', { ttlMs: 3600001 }),
      invertedScan: () => client.call('Scan', { txnId: id, startRow: Buffer.from('b'), endRow: Buffer.from('a') }),
      unknownTxn: () => client.call('Get', { txnId: '12345678', row: Buffer.from('r'), column: Buffer.from('c') }),
    };
    const codes = {};
    for (const [name, call] of Object.entries(calls)) codes[name] = (await outcome(call())).code;
    txn.set('r', 'c', 'after-bad-input');
    codes.afterwards = (await outcome(txn.commit())).code || 'OK';
    say(codes);
  },

  async expire(client, ttlMs) {
    const txn = await client.begin({ ttlMs: Number(ttlMs) });
    say({ begun: txn.txnId });
    // Leave it alone for twice its TTL (any call on it would start the TTL again).
    await new Promise((r) => setTimeout(r, 2 * Number(ttlMs)));
    const got = await outcome(txn.get('r', 'c'));
    say({ afterTtl: got.code || 'OK' });
  },

  async 'begin-and-hang'(client, ttlMs) {
    const txn = await client.begin({ ttlMs: Number(ttlMs), reads: [['r', 'c']] });
    say({ begun: txn.txnId });
    await new Promise(() => {}); // abandoned: the test kills this process
  },
};

async function main() {
  let argv = process.argv.slice(2);
  const stream = argv[0] === '--stream';
  const native = argv[0] === '--native';
  if (stream || native) argv = argv.slice(1);
  const [name, address, ...args] = argv;
  if (!scenarios[name]) throw new Error(`unknown scenario ${name}`);
  const client = new Client(address, { stream, native });
  try {
    await scenarios[name](client, ...args);
  } finally {
    client.close();
  }
}

main().catch((err) => {
  console.error(err.stack || String(err));
  process.exit(1);
});
