// A local stand-in of Discord's HTTP API, enough for discord.js's WebhookClient: it records the
// JSON body of every webhook execution and answers with the message Discord would create.
import { createServer } from 'node:http';

export async function startDiscordApi() {
  /** @type {{ path: string, body: Record<string, any> }[]} */
  const posted = [];
  const server = createServer(async (request, response) => {
    const chunks = [];
    for await (const chunk of request) chunks.push(chunk);
    const path = new URL(request.url ?? '/', 'http://stand-in').pathname;
    const match = request.method === 'POST' && /^\/api\/v\d+\/webhooks\/(\d+)\/([^/]+)$/.exec(path);
    response.setHeader('Content-Type', 'application/json');
    if (!match) {
      response.writeHead(404).end(JSON.stringify({ message: 'Unknown', code: 0 }));
      return;
    }
    const body = JSON.parse(Buffer.concat(chunks).toString() || '{}');
    posted.push({ path, body });
    response.writeHead(200).end(JSON.stringify({
      id: String(1000 + posted.length), type: 0, channel_id: '42', webhook_id: match[1], content: body.content ?? '',
      embeds: body.embeds ?? [], attachments: [], mentions: [], mention_roles: [], pinned: false, mention_everyone: false,
      tts: false, timestamp: new Date().toISOString(), edited_timestamp: null, flags: 0, components: [],
      author: { id: match[1], username: body.username ?? 'hook', discriminator: '0000', avatar: null, bot: true },
    }));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  const address = /** @type {import('node:net').AddressInfo} */ (server.address());
  return {
    api: `http://127.0.0.1:${address.port}/api`,
    posted,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve(undefined)); }),
  };
}
