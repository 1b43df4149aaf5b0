#!/usr/bin/env node
// Microsoft Entra ID stand-in for Tessera's integration tests: the
// client-credentials token endpoint that azure_identity's ClientSecretCredential,
// ClientAssertionCredential and WorkloadIdentityCredential call, over HTTPS
// (azure_identity refuses an authority host that is not https). Tokens are
// RS256 JWTs signed with an oauth2-mock-server keystore key and verifiable
// against /jwks.
//
// Usage:
//   node testenv/entra_mock.mjs --cert PEM --key PEM --tenant TENANT
//        --client ID:SECRET [--client ID:SECRET ...] [--federated ID ...]
//        [--port 0] [--port-file PATH] [--host 127.0.0.1]
//        [--token-lifetime 3600]
// Serves HTTPS on HOST:PORT (port 0: the kernel picks). Once listening, the
// port is written atomically to --port-file and "READY <port>" is printed on
// stdout. SIGTERM/SIGINT: exit 0. Logs go to stderr, one line per token
// request plus one per unexpected path ("UNEXPECTED GET /x").
//
// Point azure_identity at it with ClientOptions.cloud =
// CloudConfiguration::Custom { authority_host: "https://127.0.0.1:PORT" } (or
// AZURE_AUTHORITY_HOST) and make the test CA trusted by the HTTP client.
// azure_identity 1.0 calls only POST {authority}/{tenant}/oauth2/v2.0/token.
//
// Endpoints:
//   POST /{tenant}/oauth2/v2.0/token   form-encoded, as Entra:
//        grant_type=client_credentials, client_id, scope=RESOURCE/.default,
//        and client_secret (or HTTP Basic), or
//        client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer
//        + client_assertion = a JWT whose aud is api://AzureADTokenExchange
//        (only for --federated clients; payload decoded, signature not checked).
//     200 {"token_type":"Bearer","expires_in":N,"ext_expires_in":N,"access_token":JWT}
//        JWT claims: aud=RESOURCE (https://cognitiveservices.azure.com for the
//        Azure OpenAI scope), iss=https://sts.windows.net/{tenant}/, tid,
//        appid=azp=client_id, appidacr ("1" secret, "2" assertion), oid=sub
//        (stable per tenant+client), idtyp=app, ver=1.0, jti, iat, nbf=iat,
//        exp=iat+N. Header: alg RS256, typ JWT, kid.
//     Errors, Entra-shaped ({"error","error_description":"AADSTSnnn: ...",
//        "error_codes":[nnn],"timestamp","trace_id","correlation_id","error_uri"}):
//        unknown tenant 400 invalid_request (90002); unknown client 400
//        unauthorized_client (700016); wrong secret 401 invalid_client
//        (7000215); no secret nor assertion 401 invalid_client (7000218);
//        malformed assertion 400 invalid_request (50027); assertion aud wrong
//        401 invalid_client (700212); assertion for a client not --federated
//        401 invalid_client (70021); grant_type not client_credentials 400
//        unsupported_grant_type (70003); missing parameter 400 invalid_request
//        (900144); scope not one RESOURCE/.default 400 invalid_scope (1002012).
//   GET  /jwks, /{tenant}/discovery/v2.0/keys, /{tenant}/discovery/keys
//        the signing key set (oauth2-mock-server's JWKS handler)
//   GET  /{tenant}/v2.0/.well-known/openid-configuration,
//        /{tenant}/.well-known/openid-configuration   OIDC discovery whose
//        token_endpoint is the URL above (host taken from the request)
//   GET  /common/discovery/instance   MSAL-style instance discovery
// Control API (JSON):
//   POST /__control/mode {"mode": "ok"|"fail"|"hang", "lifetime": N?}
//        (either key alone is fine) -> {"mode", "lifetime"}
//        fail: token requests get 500 {"error":"temporarily_unavailable",...}
//        hang: token requests are read and never answered; when the mode
//        leaves "hang" the held requests are dropped (connection destroyed,
//        no response). Applies to every token request before anything is
//        checked. lifetime: expires_in / exp for tokens issued from now on.
//   GET  /__control/mode    -> {"mode", "lifetime"}
//   GET  /__control/calls   -> {"token_requests": n (any outcome, any mode),
//        "by_client": {client_id: n}, "issued": [{"client_id", "issued_at"
//        (unix float, just before the response is written), "expires_at"
//        (issued_at + expires_in), "jti", "auth" ("secret"|"assertion"),
//        "scope", "aud", "access_token"}]}
//   DELETE /__control/calls forget counts and issued tokens
//
// Note for callers: azure_identity's pipeline retries 500/503/... (default:
// exponential from 200 ms, 8 retries, 60 s), so "fail" shows up as several
// requests per get_token; its token cache refetches only when the cached token
// expires within 300 s; it has no request timeout of its own ("hang" hangs).

import { createHash, randomUUID } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { parseArgs } from 'node:util';

const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const FEDERATED_AUDIENCE = 'api://AzureADTokenExchange';
const MAX_BODY = 1 << 20;

function log(msg) {
  process.stderr.write(`entra_mock: ${msg}\n`);
}

function die(msg) {
  log(msg);
  process.exit(2);
}

// ---------------------------------------------------------------- arguments
let args;
try {
  args = parseArgs({
    options: {
      port: { type: 'string', default: '0' },
      host: { type: 'string', default: '127.0.0.1' },
      'port-file': { type: 'string' },
      cert: { type: 'string' },
      key: { type: 'string' },
      tenant: { type: 'string' },
      client: { type: 'string', multiple: true, default: [] },
      federated: { type: 'string', multiple: true, default: [] },
      'token-lifetime': { type: 'string', default: '3600' },
    },
    strict: true,
  }).values;
} catch (e) {
  die(`${e.message}\nusage: entra_mock.mjs --cert PEM --key PEM --tenant TENANT --client ID:SECRET [--client ...] [--federated ID ...] [--port 0] [--port-file PATH] [--host 127.0.0.1] [--token-lifetime SECONDS]`);
}
for (const req of ['cert', 'key', 'tenant']) {
  if (!args[req]) die(`--${req} is required`);
}
const tenant = args.tenant;
const secrets = new Map(); // client_id -> secret
for (const spec of args.client) {
  const i = spec.indexOf(':');
  if (i <= 0) die(`--client wants ID:SECRET, got '${spec}'`);
  secrets.set(spec.slice(0, i), spec.slice(i + 1));
}
const federated = new Set(args.federated);
if (secrets.size === 0 && federated.size === 0) die('give at least one --client ID:SECRET or --federated ID');
const port = Number(args.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) die(`bad --port '${args.port}'`);

function parseLifetime(v) {
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
  return Number.isInteger(n) && n >= 0 ? n : undefined;
}
const state = { mode: 'ok', lifetime: parseLifetime(args['token-lifetime']) };
if (state.lifetime === undefined) die(`bad --token-lifetime '${args['token-lifetime']}' (whole seconds >= 0)`);

const calls = { token_requests: 0, by_client: {}, issued: [] };
const held = new Set(); // responses of token requests held in "hang" mode

// ---------------------------------------------------------- issuer + keystore
let OAuth2Issuer;
let OAuth2Service;
try {
  ({ OAuth2Issuer, OAuth2Service } = await import('oauth2-mock-server'));
} catch (e) {
  die(`cannot load oauth2-mock-server (${e.code || e.message}): run testenv/setup`);
}
const issuer = new OAuth2Issuer();
issuer.url = `https://sts.windows.net/${tenant}/`;
await issuer.keys.generate('RS256');
// The service is used for its JWKS handler and its token builder (which signs
// with the issuer's keystore and fires the beforeTokenSigning event).
const service = new OAuth2Service(issuer, { jwks: '/jwks' });

// ------------------------------------------------------------------- helpers
function sendJson(res, status, body, extraHeaders = {}) {
  const data = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(data),
    'Cache-Control': 'no-store, no-cache',
    Pragma: 'no-cache',
    ...extraHeaders,
  });
  res.end(data);
}

function entraError(res, status, error, code, message) {
  const now = new Date();
  const ts = now.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  const traceId = randomUUID();
  const correlationId = randomUUID();
  sendJson(res, status, {
    error,
    error_description: `AADSTS${code}: ${message}\r\nTrace ID: ${traceId}\r\nCorrelation ID: ${correlationId}\r\nTimestamp: ${ts}`,
    error_codes: [code],
    timestamp: ts,
    trace_id: traceId,
    correlation_id: correlationId,
    error_uri: `https://login.microsoftonline.com/error?code=${code}`,
  });
  return { status, error, code };
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function b64urlJson(segment) {
  if (!/^[A-Za-z0-9_-]+$/.test(segment)) return undefined;
  try {
    const v = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

// A well-formed JWS compact JWT: three base64url segments, header and payload
// JSON objects, header has alg, non-empty signature. Returns the payload.
function decodeJwt(token) {
  const parts = token.split('.');
  if (parts.length !== 3 || !/^[A-Za-z0-9_-]+$/.test(parts[2])) return undefined;
  const header = b64urlJson(parts[0]);
  const payload = b64urlJson(parts[1]);
  if (!header || typeof header.alg !== 'string' || !payload) return undefined;
  return payload;
}

// Stable object id for a service principal: a UUID derived from tenant+client.
function oidFor(clientId) {
  const h = createHash('sha256').update(`${tenant}\0${clientId}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

function baseUrl(req) {
  const host = req.headers.host || `${args.host}:${server.address().port}`;
  return `https://${host}`;
}

// ------------------------------------------------------------ token endpoint
// Returns a short outcome description for the log line.
async function handleToken(req, res, reqTenant) {
  calls.token_requests += 1;
  let body;
  try {
    body = await readBody(req);
  } catch {
    return 'body unreadable';
  }
  const form = new URLSearchParams(body);
  const clientIdForCount = form.get('client_id');
  let basic;
  const authz = req.headers.authorization || '';
  if (/^basic /i.test(authz)) {
    const dec = Buffer.from(authz.slice(6).trim(), 'base64').toString('utf8');
    const i = dec.indexOf(':');
    if (i > 0) basic = { id: decodeURIComponent(dec.slice(0, i)), secret: decodeURIComponent(dec.slice(i + 1)) };
  }
  const clientId = clientIdForCount ?? basic?.id;
  req.entraClientId = clientId;
  if (clientId) calls.by_client[clientId] = (calls.by_client[clientId] || 0) + 1;

  if (state.mode === 'hang') {
    held.add(res);
    res.on('close', () => held.delete(res));
    return 'held (mode=hang)';
  }
  if (state.mode === 'fail') {
    sendJson(res, 500, {
      error: 'temporarily_unavailable',
      error_description: 'entra_mock: mode=fail',
    });
    return '500 temporarily_unavailable (mode=fail)';
  }

  const fail = (...a) => {
    const r = entraError(res, ...a);
    return `${r.status} ${r.error} AADSTS${r.code}`;
  };
  if (reqTenant !== tenant) {
    return fail(400, 'invalid_request', 90002, `Tenant '${reqTenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.`);
  }
  const ctype = (req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
  if (ctype !== 'application/x-www-form-urlencoded') {
    return fail(400, 'invalid_request', 900144, "The request body must contain the following parameter: 'grant_type'.");
  }
  const grantType = form.get('grant_type');
  if (!grantType) {
    return fail(400, 'invalid_request', 900144, "The request body must contain the following parameter: 'grant_type'.");
  }
  if (grantType !== 'client_credentials') {
    return fail(400, 'unsupported_grant_type', 70003, `The app requested an unsupported grant type '${grantType}'.`);
  }
  if (!clientId) {
    return fail(400, 'invalid_request', 900144, "The request body must contain the following parameter: 'client_id'.");
  }
  if (!secrets.has(clientId) && !federated.has(clientId)) {
    return fail(400, 'unauthorized_client', 700016, `Application with identifier '${clientId}' was not found in the directory '${tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.`);
  }
  const scope = form.get('scope');
  if (!scope) {
    return fail(400, 'invalid_request', 900144, "The request body must contain the following parameter: 'scope'.");
  }
  const scopes = scope.split(' ').filter(Boolean);
  if (scopes.length !== 1 || !scopes[0].endsWith('/.default') || scopes[0] === '/.default') {
    return fail(400, 'invalid_scope', 1002012, `The provided value for scope ${scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).`);
  }
  const aud = scopes[0].slice(0, -'/.default'.length);

  let auth;
  let assertionClaims;
  const secret = form.get('client_secret') ?? (basic && basic.id === clientId ? basic.secret : null);
  const assertion = form.get('client_assertion');
  if (secret !== null && secret !== undefined) {
    if (!secrets.has(clientId) || secrets.get(clientId) !== secret) {
      return fail(401, 'invalid_client', 7000215, `Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '${clientId}'.`);
    }
    auth = 'secret';
  } else if (assertion !== null) {
    if (form.get('client_assertion_type') !== ASSERTION_TYPE) {
      return fail(400, 'invalid_request', 50027, `JWT token is invalid or malformed: client_assertion_type must be '${ASSERTION_TYPE}'.`);
    }
    const trimmed = assertion.trim();
    if (trimmed !== assertion) log(`note: client_assertion of ${clientId} has surrounding whitespace (trimmed)`);
    assertionClaims = decodeJwt(trimmed);
    if (!assertionClaims) {
      return fail(400, 'invalid_request', 50027, 'JWT token is invalid or malformed.');
    }
    if (!federated.has(clientId)) {
      return fail(401, 'invalid_client', 70021, `No matching federated identity record found for presented assertion. Assertion Issuer: '${assertionClaims.iss}'. Assertion Subject: '${assertionClaims.sub}'. Assertion Audience: '${assertionClaims.aud}'.`);
    }
    const auds = Array.isArray(assertionClaims.aud) ? assertionClaims.aud : [assertionClaims.aud];
    if (!auds.includes(FEDERATED_AUDIENCE)) {
      return fail(401, 'invalid_client', 700212, `No matching federated identity record found for presented assertion audience '${assertionClaims.aud}'.`);
    }
    auth = 'assertion';
  } else {
    return fail(401, 'invalid_client', 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.");
  }

  const lifetime = state.lifetime;
  const jti = randomUUID();
  const oid = oidFor(clientId);
  const accessToken = await service.buildToken(req, lifetime, (_header, payload) => {
    const iat = payload.iat; // set by oauth2-mock-server: floor(now)
    Object.assign(payload, {
      aud,
      iss: `https://sts.windows.net/${tenant}/`,
      iat,
      nbf: iat,
      exp: iat + lifetime,
      tid: tenant,
      appid: clientId,
      azp: clientId,
      appidacr: auth === 'secret' ? '1' : '2',
      oid,
      sub: oid,
      idtyp: 'app',
      ver: '1.0',
      jti,
      uti: jti.replaceAll('-', '').slice(0, 22),
    });
    delete payload.scope;
  });
  if (res.destroyed) return 'client went away';
  const issuedAt = Date.now() / 1000;
  calls.issued.push({
    client_id: clientId,
    issued_at: issuedAt,
    expires_at: issuedAt + lifetime,
    jti,
    auth,
    scope,
    aud,
    access_token: accessToken,
  });
  sendJson(res, 200, {
    token_type: 'Bearer',
    expires_in: lifetime,
    ext_expires_in: lifetime,
    access_token: accessToken,
  });
  return `200 ${auth} lifetime=${lifetime} jti=${jti}`;
}

// ------------------------------------------------------------ control API
async function handleControl(req, res, path) {
  if (path === '/__control/mode' && req.method === 'GET') {
    return sendJson(res, 200, { mode: state.mode, lifetime: state.lifetime });
  }
  if (path === '/__control/mode' && req.method === 'POST') {
    let body;
    try {
      body = JSON.parse(await readBody(req));
    } catch {
      return sendJson(res, 400, { error: 'body must be a JSON object' });
    }
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
      return sendJson(res, 400, { error: 'body must be a JSON object' });
    }
    const { mode, lifetime } = body;
    if (mode === undefined && lifetime === undefined) {
      return sendJson(res, 400, { error: 'give "mode" and/or "lifetime"' });
    }
    if (mode !== undefined && !['ok', 'fail', 'hang'].includes(mode)) {
      return sendJson(res, 400, { error: 'mode must be "ok", "fail" or "hang"' });
    }
    if (lifetime !== undefined && parseLifetime(lifetime) === undefined) {
      return sendJson(res, 400, { error: 'lifetime must be whole seconds >= 0' });
    }
    if (lifetime !== undefined) state.lifetime = parseLifetime(lifetime);
    if (mode !== undefined && mode !== state.mode) {
      const wasHang = state.mode === 'hang';
      state.mode = mode;
      if (wasHang) {
        for (const r of held) r.socket?.destroy();
        if (held.size) log(`dropped ${held.size} held token request(s)`);
        held.clear();
      }
    }
    log(`control: mode=${state.mode} lifetime=${state.lifetime}`);
    return sendJson(res, 200, { mode: state.mode, lifetime: state.lifetime });
  }
  if (path === '/__control/calls' && req.method === 'GET') {
    return sendJson(res, 200, calls);
  }
  if (path === '/__control/calls' && req.method === 'DELETE') {
    calls.token_requests = 0;
    calls.by_client = {};
    calls.issued = [];
    return sendJson(res, 200, calls);
  }
  log(`UNEXPECTED ${req.method} ${req.url}`);
  return sendJson(res, 404, { error: 'unknown control endpoint' });
}

// ------------------------------------------------------------ discovery
function openidConfiguration(req, t, v2) {
  const base = baseUrl(req);
  const suffix = v2 ? '/v2.0' : '';
  return {
    token_endpoint: `${base}/${t}/oauth2${suffix}/token`,
    token_endpoint_auth_methods_supported: ['client_secret_post', 'private_key_jwt', 'client_secret_basic'],
    jwks_uri: `${base}/${t}/discovery${suffix}/keys`,
    response_modes_supported: ['query', 'fragment', 'form_post'],
    subject_types_supported: ['pairwise'],
    id_token_signing_alg_values_supported: ['RS256'],
    response_types_supported: ['code', 'id_token', 'code id_token', 'id_token token'],
    scopes_supported: ['openid', 'profile', 'email', 'offline_access'],
    issuer: v2 ? `${base}/${t}/v2.0` : `https://sts.windows.net/${t}/`,
    request_uri_parameter_supported: false,
    userinfo_endpoint: `${base}/oidc/userinfo`,
    authorization_endpoint: `${base}/${t}/oauth2${suffix}/authorize`,
    device_authorization_endpoint: `${base}/${t}/oauth2${suffix}/devicecode`,
    http_logout_supported: true,
    frontchannel_logout_supported: true,
    end_session_endpoint: `${base}/${t}/oauth2${suffix}/logout`,
    claims_supported: ['sub', 'iss', 'aud', 'exp', 'iat', 'nbf', 'tid', 'oid', 'appid', 'azp', 'jti'],
    tenant_region_scope: 'NA',
    cloud_instance_name: 'microsoftonline.com',
    cloud_graph_host_name: 'graph.windows.net',
    msgraph_host: 'graph.microsoft.com',
    rbac_url: 'https://pas.windows.net',
  };
}

// ------------------------------------------------------------ router
async function route(req, res) {
  const url = new URL(req.url, 'https://placeholder');
  const path = url.pathname;
  const seg = path.split('/').filter(Boolean);

  if (path.startsWith('/__control/')) return handleControl(req, res, path);

  if (req.method === 'POST' && seg.length === 4 && seg[1] === 'oauth2' && seg[2] === 'v2.0' && seg[3] === 'token') {
    const outcome = await handleToken(req, res, decodeURIComponent(seg[0]));
    log(`POST ${path} client=${req.entraClientId ?? '?'} -> ${outcome}`);
    return undefined;
  }

  if (req.method === 'GET' || req.method === 'HEAD') {
    // JWKS: oauth2-mock-server's handler, also under Entra's jwks_uri paths.
    if (path === '/jwks'
        || (seg.length === 4 && seg[1] === 'discovery' && seg[2] === 'v2.0' && seg[3] === 'keys')
        || (seg.length === 3 && seg[1] === 'discovery' && seg[2] === 'keys')) {
      req.url = '/jwks';
      return service.requestHandler(req, res);
    }
    if (seg.length >= 3 && seg.at(-2) === '.well-known' && seg.at(-1) === 'openid-configuration'
        && (seg.length === 3 || (seg.length === 4 && seg[1] === 'v2.0'))) {
      const t = decodeURIComponent(seg[0]);
      if (t !== tenant && !['common', 'organizations'].includes(t)) {
        log(`discovery for unknown tenant '${t}': ${path}`);
        return entraError(res, 400, 'invalid_tenant', 90002, `Tenant '${t}' not found.`);
      }
      return sendJson(res, 200, openidConfiguration(req, t, seg.length === 4));
    }
    if (path === '/common/discovery/instance') {
      const host = (req.headers.host || '').replace(/:\d+$/, '') || args.host;
      const ta = url.searchParams.get('authorization_endpoint') || '';
      const m = /\/([^/]+)\/oauth2\//.exec(ta);
      const t = m ? m[1] : tenant;
      return sendJson(res, 200, {
        tenant_discovery_endpoint: `${baseUrl(req)}/${t}/v2.0/.well-known/openid-configuration`,
        'api-version': '1.1',
        metadata: [{ preferred_network: host, preferred_cache: host, aliases: [host] }],
      });
    }
  }

  log(`UNEXPECTED ${req.method} ${req.url}`);
  return sendJson(res, 404, { error: 'not_found', error_description: `entra_mock: no handler for ${req.method} ${path}` });
}

// ------------------------------------------------------------ server
const server = https.createServer(
  { cert: readFileSync(args.cert), key: readFileSync(args.key) },
  (req, res) => {
    route(req, res).catch((err) => {
      log(`error handling ${req.method} ${req.url}: ${err.stack || err}`);
      if (!res.headersSent) sendJson(res, 500, { error: 'server_error', error_description: String(err) });
      else res.destroy();
    });
  },
);
server.on('tlsClientError', (err) => log(`TLS handshake failed: ${err.message.trim()}`));

let stopping = false;
function stop(sig) {
  if (stopping) return;
  stopping = true;
  log(`${sig}: stopping`);
  for (const r of held) r.socket?.destroy();
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));

server.listen(port, args.host, () => {
  const bound = server.address().port;
  if (args['port-file']) {
    const tmp = `${args['port-file']}.tmp.${process.pid}`;
    writeFileSync(tmp, `${bound}\n`);
    renameSync(tmp, args['port-file']);
  }
  process.stdout.write(`READY ${bound}\n`);
  log(`listening on https://${args.host}:${bound} tenant=${tenant} clients=[${[...secrets.keys()].join(',')}] federated=[${[...federated].join(',')}] lifetime=${state.lifetime}`);
});
server.on('error', (err) => die(`listen failed: ${err.message}`));
