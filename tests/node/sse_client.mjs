// Reads one livestatus stream with the `eventsource` npm package and prints one JSON line per
// thing that happens: each request it makes (with the Last-Event-ID it sends by itself), open,
// error, and every `snapshot` / `sync` event. Exits when stdin closes.
//
//   node sse_client.mjs URL SERVICE_KEY
import { EventSource } from 'eventsource';

const [url, key] = process.argv.slice(2);
const say = (message) => process.stdout.write(JSON.stringify(message) + '\n');

const source = new EventSource(url, {
  // The library's own request, with our credentials added; it sets Last-Event-ID itself.
  fetch: (input, init) => {
    say({ type: 'request', lastEventId: init.headers['Last-Event-ID'] ?? null });
    return fetch(input, { ...init, headers: { ...init.headers, Authorization: `Bearer ${key}` } });
  },
});
source.addEventListener('open', () => say({ type: 'open' }));
source.addEventListener('error', (event) => say({ type: 'error', message: event.message ?? null, code: event.code ?? null }));
for (const name of ['snapshot', 'sync']) {
  source.addEventListener(name, (event) => say({ type: name, id: event.lastEventId, data: JSON.parse(event.data) }));
}

// The library unrefs its reconnect timer; stdin keeps the process alive between attempts.
process.stdin.on('data', () => {});
process.stdin.on('end', () => {
  source.close();
  process.exit(0);
});
