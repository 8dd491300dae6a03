/**
 * Errors the SDK throws and emits.
 *
 * @module manifold/errors
 */

/**
 * A failure the application can show or branch on. `code` is the server's error code
 * (`unauthorized`, `rate_limited`, `limit_reached`, ... see docs/protocol.md) when the
 * server refused a request, or one of the client's own codes:
 * `network` (no WebSocket), `timeout`, `closed` (the room was left or lost while waiting),
 * `media` (getUserMedia, getDisplayMedia or WebRTC failed), `state` (wrong call for the
 * current state), `protocol` (the server said something unexpected).
 */
export class ManifoldError extends Error {
  /**
   * @param {string} message
   * @param {{code?: string, requestId?: string | number | null, cause?: unknown}} [details]
   */
  constructor(message, { code = 'client', requestId = null, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'ManifoldError';
    /** Machine-readable reason. */
    this.code = code;
    /** The `id` of the request the server refused, if any. */
    this.requestId = requestId;
  }
}

/**
 * @param {unknown} error
 * @returns {string}
 */
export function errorText(error) {
  return error instanceof Error ? error.message : String(error);
}
