/**
 * What the publisher and player pages share: query parameters, the status line, and the
 * live stats line. No WebRTC and no error wording here; both come from the SDK
 * (`/sdk/manifold.js`: WhipPublisher, WhepPlayer, statsSummary, errorText).
 * @module ui
 */

/** @typedef {import('../sdk/stats.js').StatsSummary} StatsSummary */

/** @typedef {'idle' | 'busy' | 'live' | 'error'} StatusKind */

/** The page's query parameters. */
export const query = new URLSearchParams(globalThis.location?.search ?? '');

/**
 * @param {string} id
 * @returns {HTMLElement}
 */
export function byId(id) {
  const element = document.getElementById(id);
  if (!element) throw new Error(`page is missing #${id}`);
  return element;
}

/**
 * @param {string} id
 * @returns {HTMLInputElement}
 */
export function input(id) {
  return /** @type {HTMLInputElement} */ (byId(id));
}

/**
 * Writes the status line. Tests read `kind` and `text` through `window.manifold.status`.
 */
export class StatusLine {
  /** @param {HTMLElement} element */
  constructor(element) {
    this.element = element;
    /** @type {StatusKind} */
    this.kind = 'idle';
    this.text = element.textContent ?? '';
  }

  /**
   * @param {StatusKind} kind
   * @param {string} text
   */
  set(kind, text) {
    this.kind = kind;
    this.text = text;
    this.element.textContent = text;
    this.element.dataset.kind = kind;
  }
}

/**
 * Refreshes `element` every second with a one-line summary of `read()`, until stopped.
 *
 * @param {HTMLElement} element
 * @param {() => Promise<StatsSummary | null>} read
 * @param {'publisher' | 'player'} role
 * @returns {() => void} Stops the loop and clears the line.
 */
export function showStats(element, read, role) {
  /** @type {StatsSummary | null} */
  let previous = null;
  let running = true;
  const tick = async () => {
    if (!running) return;
    try {
      const current = await read();
      if (running && current) {
        element.textContent = formatStats(current, previous, role);
        previous = current;
      }
    } catch {
      // getStats() on a closing connection can reject; the next tick or stop() settles it.
    }
  };
  const timer = setInterval(tick, 1000);
  tick();
  return () => {
    running = false;
    clearInterval(timer);
    element.textContent = '';
  };
}

/**
 * @param {StatsSummary} s
 * @param {StatsSummary | null} previous
 * @param {'publisher' | 'player'} role
 * @returns {string}
 */
export function formatStats(s, previous, role) {
  const parts = [];
  const video = [codecName(s.videoCodec) ?? 'video'];
  if (s.frameWidth) video.push(`${s.frameWidth}×${s.frameHeight}`);
  if (s.framesPerSecond) video.push(`${Math.round(s.framesPerSecond)} fps`);
  if (role === 'publisher') {
    video.push(`${count(s.framesSent)} frames sent`);
    parts.push(video.join(' '));
    parts.push(`${codecName(s.audioCodec) ?? 'audio'} ${count(s.audioPacketsSent)} packets sent`);
    parts.push(`↑ ${bitrate(s.bytesSent, previous?.bytesSent, s, previous)}`);
  } else {
    video.push(`${count(s.framesDecoded)} frames decoded`);
    parts.push(video.join(' '));
    parts.push(`${codecName(s.audioCodec) ?? 'audio'} ${count(s.audioPacketsReceived)} packets`);
    parts.push(`↓ ${bitrate(s.bytesReceived, previous?.bytesReceived, s, previous)}`);
    parts.push(`lost ${count(s.audioPacketsLost + s.videoPacketsLost)}`);
  }
  if (s.roundTripTime !== null) parts.push(`rtt ${Math.round(s.roundTripTime * 1000)} ms`);
  return parts.join(' · ');
}

/** @param {string | null} mimeType */
function codecName(mimeType) {
  return mimeType ? mimeType.split('/')[1] ?? mimeType : null;
}

/** @param {number} n */
function count(n) {
  return n.toLocaleString('en-US');
}

/**
 * @param {number} bytes
 * @param {number | undefined} previousBytes
 * @param {StatsSummary} now
 * @param {StatsSummary | null} before
 */
function bitrate(bytes, previousBytes, now, before) {
  if (previousBytes === undefined || !before) return '…';
  const seconds = (now.timestamp - before.timestamp) / 1000;
  if (seconds <= 0) return '…';
  const bits = ((bytes - previousBytes) * 8) / seconds;
  if (bits >= 1e6) return `${(bits / 1e6).toFixed(1)} Mbit/s`;
  return `${Math.round(bits / 1e3)} kbit/s`;
}
