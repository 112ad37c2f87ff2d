// A small client for the livestatus API: the REST reads a bot needs, typed from the API's own
// OpenAPI document (types/livestatus.d.ts, regenerated with `npm run types`).

/** @typedef {import('../types/livestatus.js').components['schemas']} Schemas */
/** @typedef {Schemas['Snapshot']} Snapshot */
/** @typedef {Schemas['StatusText']} StatusText */
/** @typedef {Schemas['ErrorBody']} ErrorBody */
/** @typedef {'telegram' | 'discord'} Platform */
/** @typedef {{ afterClusterTime?: string }} ReadOptions */

/**
 * The cluster time of your own write, as the API's `afterClusterTime` takes it: the MongoDB
 * session's `operationTime` (a BSON Timestamp) as "seconds.increment".
 * @param {{ operationTime?: { t: number, i: number } | null }} session a MongoDB Node driver ClientSession
 */
export function clusterTime(session) {
  const time = session.operationTime;
  if (!time) throw new Error('the session has no operationTime yet: read it after your write');
  return `${time.t}.${time.i}`;
}

/** An answer other than 2xx, with the API's stable error `code` (and Retry-After, when sent). */
export class LivestatusError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   * @param {number | null} retryAfterS
   */
  constructor(status, code, message, retryAfterS) {
    super(`${status} ${code}: ${message}`);
    this.name = 'LivestatusError';
    this.status = status;
    this.code = code;
    this.retryAfterS = retryAfterS;
  }
}

/**
 * @param {{ baseUrl: string, key: string, fetch?: typeof fetch }} options
 *   baseUrl: where the API runs (e.g. http://127.0.0.1:8000); key: a service key (any user).
 */
export function createClient({ baseUrl, key, fetch: fetchImpl = fetch }) {
  const root = baseUrl.replace(/\/+$/, '');

  /**
   * @param {string} path
   * @param {Record<string, string>} [query]
   * @returns {Promise<unknown>}
   */
  async function get(path, query = {}) {
    const url = new URL(root + path);
    for (const [name, value] of Object.entries(query)) url.searchParams.set(name, value);
    const response = await fetchImpl(url, { headers: { Authorization: `Bearer ${key}`, Accept: 'application/json' } });
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      const error = /** @type {ErrorBody | null} */ (body)?.error;
      const retry = response.headers.get('retry-after');
      throw new LivestatusError(response.status, error?.code ?? `http_${response.status}`,
        error?.message ?? response.statusText, retry === null ? null : Number(retry));
    }
    return body;
  }

  const user = (/** @type {string} */ id) => `/users/${encodeURIComponent(id)}`;

  return {
    baseUrl: root,
    key,
    /**
     * The user's snapshot (operation getStatus). With `afterClusterTime` (see {@link clusterTime}),
     * answered once it shows that write; a `projection_behind` LivestatusError (504) after the wait.
     * @param {string} masterAccountId
     * @param {ReadOptions} [options]
     */
    status: async (masterAccountId, { afterClusterTime } = {}) => /** @type {Snapshot} */ (
      await get(`${user(masterAccountId)}/status`, afterClusterTime ? { afterClusterTime } : {})),
    /**
     * The status message rendered and escaped for a chat platform (operation getStatusText).
     * @param {string} masterAccountId
     * @param {Platform} platform
     * @param {ReadOptions} [options]
     */
    statusText: async (masterAccountId, platform, { afterClusterTime } = {}) => /** @type {StatusText} */ (
      await get(`${user(masterAccountId)}/status/text`, afterClusterTime ? { platform, afterClusterTime } : { platform })),
    /** @param {string} masterAccountId */
    streamUrl: (masterAccountId) => `${root}${user(masterAccountId)}/status/stream`,
    /**
     * The live chat text stream (operation streamStatusText): the message re-rendered when it changes,
     * at most one event per interval, then a final one when no task is live.
     * @param {string} masterAccountId
     * @param {Platform} platform
     */
    textStreamUrl: (masterAccountId, platform) =>
      `${root}${user(masterAccountId)}/status/text/stream?platform=${encodeURIComponent(platform)}`,
  };
}

/** @typedef {ReturnType<typeof createClient>} Livestatus */
