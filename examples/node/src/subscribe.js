// Follow one user's status live over Server-Sent Events (the `eventsource` package: it
// reconnects by itself and resumes with Last-Event-ID, so no version is missed or repeated).
import { EventSource } from 'eventsource';

/** @typedef {import('../types/livestatus.js').components['schemas']} Schemas */

/**
 * @param {import('./livestatus.js').Livestatus} livestatus
 * @param {string} masterAccountId
 * @param {{
 *   onSnapshot: (snapshot: Schemas['Snapshot']) => void,
 *   onSync?: (sync: Schemas['SyncEvent']) => void,
 *   onEnd?: (end: Schemas['EndEvent']) => void,
 *   onError?: (error: Event) => void,
 * }} handlers
 *   onSnapshot: each new version of the snapshot (the first is the current one);
 *   onSync: the stream is caught up; onEnd: the stream was closed for good (a user token expired).
 * @returns {{ close: () => void }}
 */
export function subscribe(livestatus, masterAccountId, { onSnapshot, onSync, onEnd, onError }) {
  const source = new EventSource(livestatus.streamUrl(masterAccountId), {
    // The library's own request (it sets Last-Event-ID on reconnects), with our credentials.
    fetch: (input, init) =>
      fetch(input, { ...init, headers: { ...init?.headers, Authorization: `Bearer ${livestatus.key}` } }),
  });
  source.addEventListener('snapshot', (event) => onSnapshot(JSON.parse(event.data)));
  source.addEventListener('sync', (event) => onSync?.(JSON.parse(event.data)));
  source.addEventListener('end', (event) => {
    source.close(); // the server will not take this stream back: a new token is needed
    onEnd?.(JSON.parse(event.data));
  });
  if (onError) source.addEventListener('error', onError);
  return { close: () => source.close() };
}
