// Follow one user's live chat text (GET /users/{id}/status/text/stream): the status message as the
// API renders it for a platform, sent when it changes, at most once per interval (the server paces
// and coalesces, so each event can go straight into an edit), then `final` once no task is live.
import { EventSource } from 'eventsource';

/** @typedef {import('../types/livestatus.js').components['schemas']['StatusText'] & { liveTasks: number, final: boolean }} LiveText */

/**
 * @param {import('./livestatus.js').Livestatus} livestatus
 * @param {string} masterAccountId
 * @param {import('./livestatus.js').Platform} platform
 * @param {{ onText: (text: LiveText) => void | Promise<void> }} handlers
 *   onText: each event, the last one with `final: true`; events are handed over one at a time
 *   (the next waits until the previous handler finished).
 * @returns {{ close: () => void, done: Promise<void> }} done: settles after the final event
 */
export function followStatusText(livestatus, masterAccountId, platform, { onText }) {
  const source = new EventSource(livestatus.textStreamUrl(masterAccountId, platform), {
    fetch: (input, init) =>
      fetch(input, { ...init, headers: { ...init?.headers, Authorization: `Bearer ${livestatus.key}` } }),
  });
  let chain = Promise.resolve();
  /** @type {(value: void) => void} */
  let finish = () => {};
  /** @type {(error: unknown) => void} */
  let fail = () => {};
  const done = new Promise((resolve, reject) => { finish = resolve; fail = reject; });
  /** @param {MessageEvent} event */
  const handle = (event) => {
    const text = /** @type {LiveText} */ (JSON.parse(event.data));
    if (text.final) source.close(); // the server ends the stream: do not reconnect
    chain = chain.then(() => onText(text)).then(() => { if (text.final) finish(); }, (error) => { source.close(); fail(error); });
  };
  source.addEventListener('text', handle);
  source.addEventListener('final', handle);
  return { close: () => { source.close(); finish(); }, done };
}
