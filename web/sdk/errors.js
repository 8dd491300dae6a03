/**
 * Errors the SDK throws and emits, and the one place that turns any error, or a reason
 * the server gave for closing, into a sentence for the user.
 *
 * @module manifold/errors
 */

/**
 * A failure the application can show or branch on. `code` is the server's error code
 * (`unauthorized`, `rate_limited`, `limit_reached`, ... see docs/protocol.md) when the
 * server refused a request, or one of the client's own codes:
 * `network` (no WebSocket, or the HTTP request never got an answer), `timeout`, `closed`
 * (the room was left or lost, or the session stopped, while waiting), `media`
 * (getUserMedia, getDisplayMedia or WebRTC failed), `state` (wrong call for the current
 * state), `protocol` (the server said something unexpected), `http-<status>` (a WHIP or
 * WHEP request refused without a JSON error body).
 */
export class ManifoldError extends Error {
  /**
   * @param {string} message
   * @param {{code?: string, requestId?: string | number | null, status?: number, cause?: unknown}} [details]
   */
  constructor(message, { code = 'client', requestId = null, status = 0, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'ManifoldError';
    /** Machine-readable reason. */
    this.code = code;
    /** The `id` of the room request the server refused, if any. */
    this.requestId = requestId;
    /** HTTP status of a refused WHIP or WHEP request; 0 otherwise. */
    this.status = status;
  }
}

/**
 * The sentence to show for any thrown value.
 * @param {unknown} error
 * @returns {string}
 */
export function errorText(error) {
  return error instanceof Error ? error.message : String(error);
}

/**
 * The sentence for a reason the server gave in `closing` (or a client-side one).
 * @param {string} reason
 * @returns {string}
 */
export function closingText(reason) {
  return {
    left: 'You left the room.',
    replaced: 'You joined this room from another tab or device.',
    kicked: 'You were removed from the room.',
    room_closed: 'The room was closed.',
    draining: 'The server is restarting.',
    timeout: 'The connection timed out.',
    policy: 'The server closed the connection (policy violation).',
  }[reason] ?? `The server closed the connection (${reason}).`;
}
