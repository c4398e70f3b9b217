'use strict';
// A small Giosg-style message router on sockjs-node, for the giosg_visitor tests.
//
// It speaks the visitor socket protocol (JSON arrays [method, args, kwargs]):
//   ["sub", [channel, token], {"query": n}]  -> ["__qr__", [[]], {"query": n}]
//                                              or ["__qr__", [reason], {"query": n, "fail": true}]
//   ["unsub" | "uns", [channel], {"query": n}] -> ["__qr__", [[]], {"query": n}]
//   notifications: ["changed", [channel, {action, resourceId, resource_id, resource, channel}]]
//
// sockjs-node serves, under the prefix (default /router):
//   <prefix>/websocket                       raw WebSocket, one JSON message per text frame
//   <prefix>/<server>/<session>/websocket    SockJS framing (o, a[...], c[...]); the server
//                                            heartbeats these sessions with WebSocket pings
//   <prefix>/info                            the SockJS info JSON
//
// A control API for the tests lives on the same port, under /_control:
//   GET  /_control/stats    counters (JSON)
//   POST /_control/publish  {channel, action, resource, resource_id} -> {"delivered": n}
//   POST /_control/refuse   {"tokens": [...]} refuse subs with these tokens,
//                           {"next": n} refuse the next n subs, {"clear": true} forget both
//   POST /_control/config   {"authorize_url": url|null}: ask that URL about each sub
//                           (POST {token, channel} -> {"ok": bool, "reason": str});
//                           {"raw": "serve" | "404" | "200" | "close"}: how the raw
//                           endpoint answers (a deployment without it, a 200 without
//                           upgrade, a WebSocket closed right after open)
//   POST /_control/drop     {"code": 3000, "reason": "..."}: close every connection
//                           (faye-websocket allows 1000 and 3000-4999 only)
//
// Settings come from the environment: ROUTER_PORT (0: any free port), ROUTER_PREFIX,
// ROUTER_HEARTBEAT_MS (sockjs heartbeat_delay), ROUTER_DISCONNECT_MS. When it listens it
// prints one JSON line {"port": N} on stdout.

const http = require('http');
const sockjs = require('sockjs');

const prefix = process.env.ROUTER_PREFIX || '/router';
const heartbeatMs = parseInt(process.env.ROUTER_HEARTBEAT_MS || '25000', 10);
const disconnectMs = parseInt(process.env.ROUTER_DISCONNECT_MS || '5000', 10);
const port = parseInt(process.env.ROUTER_PORT || '0', 10);

const connections = new Set();
const channels = new Map(); // channel -> Set of connections
const refusedTokens = new Set();
let refuseNext = 0;
let authorizeUrl = null;
let rawMode = 'serve';
const stats = {
  connections_total: 0,
  connections_open: 0,
  by_protocol: {},
  subs: 0,
  subs_refused: 0,
  unsubs: 0,
  raw_attempts: 0,
  published: 0,
  delivered: 0,
  malformed: 0,
};

function send(conn, message) {
  conn.write(JSON.stringify(message));
}

function authorize(token, channel) {
  if (refuseNext > 0) {
    refuseNext -= 1;
    return Promise.resolve('refused by the test');
  }
  if (refusedTokens.has(token)) {
    return Promise.resolve('token not valid');
  }
  if (!authorizeUrl) {
    return Promise.resolve(null);
  }
  return new Promise((resolve) => {
    const body = JSON.stringify({ token, channel });
    const req = http.request(
      authorizeUrl,
      { method: 'POST', headers: { 'content-type': 'application/json' } },
      (res) => {
        let data = '';
        res.setEncoding('utf8');
        res.on('data', (chunk) => { data += chunk; });
        res.on('end', () => {
          try {
            const answer = JSON.parse(data);
            resolve(answer.ok ? null : String(answer.reason || 'not permitted'));
          } catch (e) {
            resolve('authorization failed');
          }
        });
      },
    );
    req.on('error', () => resolve('authorization unavailable'));
    req.end(body);
  });
}

function forget(conn) {
  for (const [channel, members] of channels) {
    members.delete(conn);
    if (members.size === 0) channels.delete(channel);
  }
}

async function onMessage(conn, text) {
  let message;
  try {
    message = JSON.parse(text);
  } catch (e) {
    stats.malformed += 1;
    return;
  }
  if (!Array.isArray(message) || typeof message[0] !== 'string') {
    stats.malformed += 1;
    return;
  }
  const [method, args, kwargs] = message;
  const query = kwargs && typeof kwargs === 'object' ? kwargs.query : undefined;
  const channel = Array.isArray(args) ? args[0] : undefined;
  if (method === 'sub') {
    stats.subs += 1;
    const token = Array.isArray(args) ? args[1] : undefined;
    const refusal = await authorize(String(token), String(channel));
    if (!connections.has(conn)) return;
    if (refusal !== null) {
      stats.subs_refused += 1;
      send(conn, ['__qr__', [refusal], { query, fail: true }]);
      return;
    }
    if (!channels.has(channel)) channels.set(channel, new Set());
    channels.get(channel).add(conn);
    send(conn, ['__qr__', [[]], { query }]);
  } else if (method === 'unsub' || method === 'uns') {
    stats.unsubs += 1;
    const members = channels.get(channel);
    if (members) {
      members.delete(conn);
      if (members.size === 0) channels.delete(channel);
    }
    send(conn, ['__qr__', [[]], { query }]);
  }
}

const sock = sockjs.createServer({
  prefix,
  heartbeat_delay: heartbeatMs,
  disconnect_delay: disconnectMs,
  log: () => {},
});

sock.on('connection', (conn) => {
  if (conn === null) return;
  if (conn.protocol === 'websocket-raw' && rawMode === 'close') {
    conn.close(1000, 'Normal closure');
    return;
  }
  connections.add(conn);
  stats.connections_total += 1;
  stats.connections_open += 1;
  stats.by_protocol[conn.protocol] = (stats.by_protocol[conn.protocol] || 0) + 1;
  conn.on('data', (text) => { onMessage(conn, text); });
  conn.on('close', () => {
    if (connections.delete(conn)) stats.connections_open -= 1;
    forget(conn);
  });
});

function readJson(req) {
  return new Promise((resolve) => {
    let data = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => { data += chunk; });
    req.on('end', () => {
      try {
        resolve(data ? JSON.parse(data) : {});
      } catch (e) {
        resolve(null);
      }
    });
  });
}

function reply(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

async function control(req, res) {
  const path = req.url.split('?')[0];
  if (req.method === 'GET' && path === '/_control/stats') {
    reply(res, 200, { ...stats, channels: channels.size, refuse_next: refuseNext });
    return;
  }
  if (req.method !== 'POST') {
    reply(res, 405, { detail: 'method not allowed' });
    return;
  }
  const body = await readJson(req);
  if (body === null || typeof body !== 'object') {
    reply(res, 400, { detail: 'a JSON object is required' });
    return;
  }
  if (path === '/_control/publish') {
    const resourceId = body.resource_id !== undefined && body.resource_id !== null
      ? body.resource_id
      : (body.resource && body.resource.id);
    const notification = { action: body.action, channel: body.channel };
    if (resourceId !== undefined) {
      notification.resourceId = resourceId;
      notification.resource_id = resourceId;
    }
    if (body.resource !== undefined && body.resource !== null) notification.resource = body.resource;
    const members = channels.get(body.channel) || new Set();
    for (const conn of members) send(conn, ['changed', [body.channel, notification]]);
    stats.published += 1;
    stats.delivered += members.size;
    reply(res, 200, { delivered: members.size });
  } else if (path === '/_control/refuse') {
    if (body.clear) {
      refusedTokens.clear();
      refuseNext = 0;
    }
    for (const token of body.tokens || []) refusedTokens.add(String(token));
    if (Number.isInteger(body.next)) refuseNext = body.next;
    reply(res, 200, { refused_tokens: refusedTokens.size, refuse_next: refuseNext });
  } else if (path === '/_control/config') {
    if ('authorize_url' in body) authorizeUrl = body.authorize_url || null;
    if (['serve', '404', '200', 'close'].includes(body.raw)) rawMode = body.raw;
    reply(res, 200, { authorize_url: authorizeUrl, raw: rawMode });
  } else if (path === '/_control/drop') {
    const code = Number.isInteger(body.code) ? body.code : 3000;
    const reason = typeof body.reason === 'string' ? body.reason : 'dropped by the test';
    const count = connections.size;
    for (const conn of Array.from(connections)) conn.close(code, reason);
    reply(res, 200, { dropped: count });
  } else {
    reply(res, 404, { detail: 'not found' });
  }
}

const server = http.createServer((req, res) => {
  if (req.url.startsWith('/_control/')) {
    control(req, res).catch((e) => reply(res, 500, { detail: `control failed: ${e}` }));
    return;
  }
  res.writeHead(404, { 'content-type': 'text/plain' });
  res.end('not found');
});
sock.installHandlers(server);

// In front of sockjs-node's upgrade handler: count raw attempts and, when told to,
// answer them as a deployment without the raw endpoint would.
const sockjsUpgrade = server.listeners('upgrade');
server.removeAllListeners('upgrade');
server.on('upgrade', (req, socket, head) => {
  if (req.url.split('?')[0] === `${prefix}/websocket`) {
    stats.raw_attempts += 1;
    if (rawMode === '404' || rawMode === '200') {
      const status = rawMode === '404' ? '404 Not Found' : '200 OK';
      socket.end(`HTTP/1.1 ${status}\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nno\n`);
      return;
    }
  }
  for (const listener of sockjsUpgrade) listener.call(server, req, socket, head);
});
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
});

function shutdown() {
  for (const conn of Array.from(connections)) conn.close(1001, 'going away');
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
