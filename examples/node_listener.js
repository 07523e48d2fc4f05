#!/usr/bin/env node
// Follow gate_bridge's event stream with node-postgres: print every
// incident event (created, acked, resolved, ...) once, in commit order, and
// carry on where it stopped after a lost connection, a server restart or a
// restart of this program.  psycopg_listener.py does the same in Python;
// its docstring explains the stream.
//
//   (cd examples && npm ci)            # installs pg, pinned in package-lock.json
//   PGUSER=dashboard node examples/node_listener.js listener.pos
//   {"position":7,"id":7,"incident_id":3,"event":"created",...}
//   ...
//   {"events":12,"reconnects":1,"rewinds":0,"position":18}
//
// Connects with the libpq environment (PGHOST, PGPORT, PGDATABASE, PGUSER,
// PGPASSWORD; node-postgres reads them too) or DATABASE_URL, as the
// README's reader role.  The file named on the command line keeps the last
// position processed; without it the stream is read from its start
// (--from-now: from its head).  --idle-exit N stops after N seconds without
// a new event; SIGTERM or SIGINT stop it after the batch at hand.  Either
// way it prints a summary line and exits 0.  After MAX_FAILURES failed
// attempts in a row to reach the server it gives up and exits 1.
'use strict';

const fs = require('fs');
const { Client, types } = require('pg');

const PROGRAM = 'node_listener';
const CHANNEL = 'incident_events';  // gate_bridge.events_channel
const BATCH = 500;                  // events per call of events_after()
const POLL_MS = 5000;               // read anyway when no notification came
const MAX_FAILURES = 10;            // failed attempts in a row before giving up

// Worth another try on a new connection (see psycopg_listener.py): a lost
// connection (a network error, or node-postgres's own "Connection
// terminated" without a code), the server shutting down or starting up or
// ending this session (57P01, pg_terminate_backend), a cancelled query, a
// lock or serialization conflict, too many connections.  Anything else (a
// missing grant, a bad password, a state file that cannot be written) is
// fatal.
const TRANSIENT_SQLSTATES = new Set(['40001', '40P01', '55P03', '57014',
  '57P01', '57P02', '57P03']);
const TRANSIENT_CLASSES = new Set(['08', '53']);
const NETWORK_ERRORS = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT',
  'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ENOTFOUND']);
const SQLSTATE = /^[0-9A-Z]{5}$/;

const READ_SQL = 'SELECT position, id, incident_id, event, at, actor, detail'
  + '  FROM gate_bridge.events_after($1, $2)';

// bigint (int8) arrives as text, since a JavaScript number is exact only up
// to 2^53.  Positions and ids stay far below that; refuse any that does not.
types.setTypeParser(types.builtins.INT8, (text) => {
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new RangeError(`bigint ${text} is too large`);
  return n;
});

function transient(err) {
  const code = err.code;
  if (code === undefined) return err.constructor === Error;  // not a TypeError, ...
  if (!SQLSTATE.test(code)) return NETWORK_ERRORS.has(code);
  return TRANSIENT_SQLSTATES.has(code) || TRANSIENT_CLASSES.has(code.slice(0, 2));
}

function describe(err) {
  const first = String(err.message || err).split('\n')[0];
  return SQLSTATE.test(err.code || '') ? `SQLSTATE ${err.code}: ${first}` : first;
}

// half of it random, as runner_common.backoff(): 0.1 s doubling up to 5 s
function backoff(attempt) {
  const ceiling = Math.min(5.0, 0.1 * 2 ** (attempt - 1));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

class Listener {
  constructor(stateFile, fromNow, idleExit) {
    this.stateFile = stateFile;
    this.fromNow = fromNow;
    this.idleExit = idleExit;       // seconds, or null: never
    this.position = null;           // null: not known yet
    this.events = 0;
    this.reconnects = 0;
    this.rewinds = 0;
    this.stopping = false;
    this.woken = false;             // a notification came since the last read
    this.wake = null;               // ends the current wait
  }

  loadPosition() {
    try {
      this.position = Number.parseInt(fs.readFileSync(this.stateFile, 'utf8'), 10);
    } catch (err) {
      if (err.code !== 'ENOENT') throw err;
    }
  }

  // a new file renamed over the old one: a crash leaves one or the other
  savePosition() {
    const tmp = `${this.stateFile}.tmp`;
    const fd = fs.openSync(tmp, 'w');
    fs.writeSync(fd, `${this.position}\n`);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(tmp, this.stateFile);
  }

  // Wait up to ms for a notification, a broken connection (rejects) or a
  // signal to stop.
  sleep(ms) {
    return new Promise((resolve, reject) => {
      if (this.stopping || this.woken) return resolve();
      const timer = setTimeout(() => this.wake(), ms);
      this.wake = (err) => {
        clearTimeout(timer);
        this.wake = null;
        if (err) reject(err); else resolve();
      };
    });
  }

  stop() {
    this.stopping = true;
    if (this.wake) this.wake();
  }

  // Print the events after this.position; return how many.
  async readBatch(client) {
    let rows;
    try {
      ({ rows } = await client.query(READ_SQL, [this.position, BATCH]));
    } catch (err) {
      if (err.code !== 'SR001') throw err;
      // The server does not hold our position: history was rewound under
      // us.  Resume after the last position it holds before ours.
      const r = await client.query('SELECT gate_bridge.events_resume_point($1) AS p',
        [this.position]);
      process.stderr.write(`${PROGRAM}: position ${this.position} is not in the stream`
        + ' (SQLSTATE SR001: the history was rewound);'
        + ` resuming after position ${r.rows[0].p}\n`);
      this.position = r.rows[0].p;
      this.rewinds += 1;
      this.savePosition();
      return 0;
    }
    // Writes to a file or a pipe are synchronous in Node.js on Linux, so
    // the lines are out before the position is saved.
    for (const e of rows) {
      process.stdout.write(JSON.stringify({
        position: e.position, id: e.id, incident_id: e.incident_id, event: e.event,
        at: e.at.toISOString(), actor: e.actor, detail: e.detail,
      }) + '\n');
    }
    if (rows.length > 0) {
      this.position = rows[rows.length - 1].position;
      this.events += rows.length;
      this.savePosition();
    }
    return rows.length;
  }

  // One connection: LISTEN, then read until asked to stop or idle too long.
  async follow(client) {
    // A notification only wakes us; a lost connection ends the wait with
    // its error (the 'error' handler is run()'s).
    client.on('notification', () => { this.woken = true; if (this.wake) this.wake(); });
    client.on('end', () => {
      if (this.wake) this.wake(new Error('Connection terminated'));
    });
    // LISTEN before the first read: an event that commits after the read is
    // then sure to wake us.  autocommit: node-postgres sends each query on
    // its own, so the listener never sits in a transaction.
    await client.query(`LISTEN ${CHANNEL}`);
    if (this.position === null) {
      this.position = this.fromNow
        ? (await client.query('SELECT gate_bridge.events_head() AS p')).rows[0].p : 0;
    }
    let idleSince = Date.now();
    while (!this.stopping) {
      this.woken = false;
      if (await this.readBatch(client) > 0) {
        idleSince = Date.now();
        continue;                   // there may be more: read again
      }
      if (this.idleExit !== null && Date.now() - idleSince >= this.idleExit * 1000) return;
      await this.sleep(POLL_MS);
    }
  }

  async run() {
    this.loadPosition();
    let failures = 0;
    while (!this.stopping) {
      const client = new Client({ connectionString: process.env.DATABASE_URL,
        fallback_application_name: PROGRAM });
      // node-postgres emits 'error' for a connection that breaks outside a
      // query, even in the moment between connect() resolving and follow()
      // starting (a termination that arrives with the end of the
      // handshake); without a handler from the start, that would end the
      // process.  A query on the broken connection then fails, and the
      // catch below reconnects.
      client.on('error', (err) => { if (this.wake) this.wake(err); });
      try {
        await client.connect();
        failures = 0;
        await this.follow(client);
        await client.end();
        return;
      } catch (err) {
        // this connection is done with: nothing it says any more matters
        client.removeAllListeners();
        client.on('error', () => {});
        client.end().catch(() => {});
        if (!transient(err)) throw err;
        failures += 1;
        if (failures >= MAX_FAILURES) {
          throw new Error(`giving up after ${failures} failed attempts: ${describe(err)}`);
        }
        this.reconnects += 1;
        const delay = backoff(failures);
        process.stderr.write(`${PROGRAM}: ${describe(err)}; reconnecting in ${delay.toFixed(2)} s\n`);
        await this.sleep(delay * 1000);
      }
    }
  }

  summary() {
    return { events: this.events, reconnects: this.reconnects, rewinds: this.rewinds,
      position: this.position };
  }
}

// STATE_FILE [--from-now] [--idle-exit SECONDS], or null
function parseArgs(argv) {
  const opts = { stateFile: null, fromNow: false, idleExit: null };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--from-now') opts.fromNow = true;
    else if (argv[i] === '--idle-exit') opts.idleExit = Number(argv[++i]);
    else if (argv[i].startsWith('-') || opts.stateFile !== null) return null;
    else opts.stateFile = argv[i];
  }
  return opts.stateFile === null || Number.isNaN(opts.idleExit) ? null : opts;
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (!opts) {
    process.stderr.write(`usage: ${PROGRAM} STATE_FILE [--from-now] [--idle-exit SECONDS]\n`);
    process.exit(2);                // as argparse does
  }
  const listener = new Listener(opts.stateFile, opts.fromNow, opts.idleExit);
  process.on('SIGTERM', () => listener.stop());
  process.on('SIGINT', () => listener.stop());
  listener.run().then(() => {
    process.stdout.write(JSON.stringify(listener.summary()) + '\n');
  }, (err) => {
    process.stderr.write(`${PROGRAM}: ${describe(err)}\n`);
    process.exitCode = 1;
  });
}

main();
