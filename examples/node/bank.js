#!/usr/bin/env node
// Bank transfers on a percolator node from Node.js, through the Transactions service.
//
//   node bank.js HOST:PORT load     [--accounts 10] [--prefix bank]
//   node bank.js HOST:PORT transfer [--accounts 10] [--prefix bank] [--transfers 100]
//                                   [--seconds 0] [--seed 1] [--audit-every 10] [--stream 1] [--native 1]
//   node bank.js HOST:PORT total    [--accounts 10] [--prefix bank]
//
// A node with TLS and tokens (docs/security.md): --token TOKEN (default
// $PERCOLATOR_TOKEN), --tls-ca FILE (the CA of the node's certificate), and for mutual
// TLS --tls-cert FILE --tls-key FILE (a client certificate).
//
// `load` opens every account with 100 units; `transfer` moves 1..10 units between two
// random accounts per transaction (retried on conflicts), takes a snapshot of all the
// accounts every --audit-every transfers and checks that it sums to the total, and
// prints one JSON line: {"committed", "retries", "audits", "badAudits", "moves"};
// `total` prints the sum of a snapshot.  --stream 1 sends the calls on one Stream call,
// --native 1 as TXN frames of the node's native transport.
'use strict';

const { Client } = require('./percolator');

const INITIAL = 100;
const COLUMN = 'balance';

function options(argv) {
  const opts = {
    accounts: 10, prefix: 'bank', transfers: 100, seconds: 0, seed: 1, auditEvery: 10, stream: 0, native: 0,
    token: process.env.PERCOLATOR_TOKEN || '', tlsCa: '', tlsCert: '', tlsKey: '',
  };
  const text = new Set(['prefix', 'token', 'tlsCa', 'tlsCert', 'tlsKey']);
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, '').replace(/-(\w)/g, (_, c) => c.toUpperCase());
    if (!(name in opts)) throw new Error(`unknown option ${argv[i]}`);
    if (i + 1 >= argv.length) throw new Error(`option ${argv[i]} needs a value`);
    opts[name] = text.has(name) ? argv[i + 1] : Number(argv[i + 1]);
  }
  return opts;
}

const account = (opts, i) => `${opts.prefix}/acct${String(i).padStart(4, '0')}`;

function random(seed) { // mulberry32: seeded, so a failing run can be repeated
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function snapshotTotal(client, opts) {
  const cells = Array.from({ length: opts.accounts }, (_, i) => [account(opts, i), COLUMN]);
  const txn = await client.begin({ reads: cells, readOnly: true });  // one message
  return cells.reduce((sum, [row, column]) => sum + Number(txn.value(row, column) || 0), 0);
}

async function transfer(client, opts) {
  const rand = random(opts.seed);
  const deadline = opts.seconds ? Date.now() + opts.seconds * 1000 : Infinity;
  const out = { committed: 0, retries: 0, audits: 0, badAudits: 0, moves: [] };
  while (out.committed < opts.transfers && Date.now() < deadline) {
    const a = Math.floor(rand() * opts.accounts);
    let b = Math.floor(rand() * (opts.accounts - 1));
    if (b >= a) b += 1;
    const amount = 1 + Math.floor(rand() * 10);
    const [ra, rb] = [account(opts, a), account(opts, b)];
    let attempts = 0;
    const moved = await client.run(async (txn) => {
      attempts += 1;
      const va = Number(txn.value(ra, COLUMN) || 0);
      const vb = Number(txn.value(rb, COLUMN) || 0);
      if (va < amount) return false;
      txn.set(ra, COLUMN, String(va - amount));
      txn.set(rb, COLUMN, String(vb + amount));
      return true;
    }, { reads: [[ra, COLUMN], [rb, COLUMN]] });
    out.committed += 1;
    out.retries += attempts - 1;
    if (moved) out.moves.push([a, b, amount]);
    if (opts.auditEvery && out.committed % opts.auditEvery === 0) {
      out.audits += 1;
      if (await snapshotTotal(client, opts) !== opts.accounts * INITIAL) out.badAudits += 1;
    }
  }
  return out;
}

async function main() {
  const [address, command, ...rest] = process.argv.slice(2);
  if (!address || !command) throw new Error('usage: node bank.js HOST:PORT load|transfer|total [options]');
  const opts = options(rest);
  const client = new Client(address, {
    stream: Boolean(opts.stream),
    native: Boolean(opts.native),
    token: opts.token,
    tlsCa: opts.tlsCa,
    tlsCert: opts.tlsCert,
    tlsKey: opts.tlsKey,
  });
  try {
    if (command === 'load') {
      const txn = await client.begin();
      for (let i = 0; i < opts.accounts; i++) txn.set(account(opts, i), COLUMN, String(INITIAL));
      console.log(JSON.stringify({ loaded: opts.accounts, commitTs: await txn.commit() }));
    } else if (command === 'transfer') {
      console.log(JSON.stringify(await transfer(client, opts)));
    } else if (command === 'total') {
      console.log(JSON.stringify({ total: await snapshotTotal(client, opts) }));
    } else {
      throw new Error(`unknown command ${command}`);
    }
  } finally {
    client.close();
  }
}

main().catch((err) => {
  console.error(err.stack || String(err));
  process.exit(1);
});
