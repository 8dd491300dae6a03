/**
 * The landing page: a live line of server counters from GET /stats, hidden while the
 * server does not answer.
 */

const line = /** @type {HTMLElement} */ (document.getElementById('server'));

/**
 * @param {number} n
 * @param {string} one
 * @param {string} many
 */
function plural(n, one, many) {
  return `${n.toLocaleString('en-US')} ${n === 1 ? one : many}`;
}

async function refresh() {
  try {
    const response = await fetch('/stats', { cache: 'no-store' });
    if (!response.ok) throw new Error(String(response.status));
    const stats = await response.json();
    line.textContent = [
      `Server now: ${plural(stats.rooms ?? 0, 'room', 'rooms')}`,
      plural(stats.participants ?? 0, 'participant', 'participants'),
      plural(stats.tracks ?? 0, 'track', 'tracks'),
    ].join(' · ');
    line.hidden = false;
  } catch {
    line.hidden = true;
  }
}

refresh();
setInterval(refresh, 5000);
