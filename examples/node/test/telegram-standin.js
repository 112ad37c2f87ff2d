// A local stand-in of the Telegram Bot API, enough for a polling bot: it hands out the updates a
// test queues (getUpdates) and records every sendMessage it receives, answering as Telegram does.
import { createServer } from 'node:http';

/**
 * @typedef {{ method: string, token: string, params: Record<string, string>, at: number }} Call
 * @typedef {Record<string, unknown> & { update_id: number }} Update
 */

/** @param {import('node:http').IncomingMessage} request */
async function params(request) {
  const chunks = [];
  for await (const chunk of request) chunks.push(chunk);
  const body = Buffer.concat(chunks).toString();
  const url = new URL(request.url ?? '/', 'http://stand-in');
  /** @type {Record<string, string>} */
  const found = Object.fromEntries(url.searchParams);
  if ((request.headers['content-type'] ?? '').startsWith('application/json')) Object.assign(found, JSON.parse(body || '{}'));
  else Object.assign(found, Object.fromEntries(new URLSearchParams(body)));
  return found;
}

export async function startBotApi() {
  /** @type {Update[]} */
  const queued = [];
  /** @type {Call[]} */
  const calls = [];
  let messageId = 1000;

  const server = createServer(async (request, response) => {
    const match = /^\/bot([^/]+)\/(\w+)/.exec(new URL(request.url ?? '/', 'http://stand-in').pathname);
    const reply = (/** @type {unknown} */ result, status = 200) => {
      response.writeHead(status, { 'Content-Type': 'application/json' });
      response.end(JSON.stringify(status === 200 ? { ok: true, result } : { ok: false, error_code: status, description: result }));
    };
    if (!match) return reply('Not Found', 404);
    const [, token, method] = match;
    const given = await params(request);
    calls.push({ method, token, params: given, at: Date.now() });
    if (method === 'getUpdates') {
      const offset = Number(given.offset ?? 0);
      return reply(queued.filter((update) => update.update_id >= offset));
    }
    if (method === 'editMessageText') {
      return reply({ message_id: Number(given.message_id), date: Math.floor(Date.now() / 1000),
        chat: { id: Number(given.chat_id), type: 'private' }, text: given.text, edit_date: Math.floor(Date.now() / 1000) });
    }
    if (method === 'sendMessage') {
      return reply({ message_id: ++messageId, date: Math.floor(Date.now() / 1000),
        chat: { id: Number(given.chat_id), type: 'private' }, text: given.text });
    }
    return reply(true);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  const address = /** @type {import('node:net').AddressInfo} */ (server.address());

  return {
    url: `http://127.0.0.1:${address.port}`,
    calls,
    /** the sendMessage calls received so far */
    sent: () => calls.filter((call) => call.method === 'sendMessage').map((call) => call.params),
    /** the editMessageText calls received so far: their parameters and the moment each arrived (ms) */
    edits: () => calls.filter((call) => call.method === 'editMessageText').map(({ params, at }) => ({ params, at })),
    /** @param {Update} update */
    push: (update) => queued.push(update),
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve(undefined)); }),
  };
}
