/**
 * The player page: Play and Stop, the received video, status and stats.
 * Tests drive it through `window.manifold` and `?autostart=1`.
 */

import { WhepPlayer, errorText, statsSummary } from '../sdk/manifold.js';
import { StatusLine, byId, input, query, showStats } from './ui.js';

const form = /** @type {HTMLFormElement} */ (byId('controls'));
const room = input('room');
const participant = input('participant');
const token = input('token');
const playButton = /** @type {HTMLButtonElement} */ (byId('play'));
const stopButton = /** @type {HTMLButtonElement} */ (byId('stop'));
const video = /** @type {HTMLVideoElement} */ (byId('video'));
const status = new StatusLine(byId('status'));
const statsLine = byId('stats');

room.value = query.get('room') || 'demo';
participant.value = query.get('participant') || '';
token.value = query.get('token') || '';

/** @type {WhepPlayer | null} */
let player = null;
/** @type {(() => void) | null} */
let stopStats = null;

window.manifold = {
  get player() {
    return player;
  },
  stats: async () => (player?.pc ? statsSummary(player.pc) : null),
  get status() {
    return { kind: status.kind, text: status.text };
  },
};

/** @param {boolean} running */
function setRunning(running) {
  playButton.disabled = running;
  stopButton.disabled = !running;
  room.disabled = running;
  participant.disabled = running;
  token.disabled = running;
}

async function play() {
  if (player) return;
  const roomName = room.value.trim();
  const who = participant.value.trim();
  const path = who
    ? `/whep/${encodeURIComponent(roomName)}/${encodeURIComponent(who)}`
    : `/whep/${encodeURIComponent(roomName)}`;
  const what = who ? `${who} in room “${roomName}”` : `room “${roomName}”`;
  setRunning(true);
  const session = new WhepPlayer({ url: path, token: token.value.trim() });
  player = session;
  session.addEventListener('statechange', () => {
    if (player !== session) return;
    if (session.state === 'connected') status.set('live', `Playing ${what}.`);
    else if (session.state === 'disconnected') status.set('busy', 'Connection interrupted, waiting for it to recover…');
    else if (session.state === 'failed') status.set('error', 'Connection to the server was lost.');
  });
  try {
    status.set('busy', `Connecting to ${what}…`);
    stopStats = showStats(statsLine, () => window.manifold.stats(), 'player');
    const stream = await session.play();
    if (player !== session) return;
    video.srcObject = stream;
    // Muted video may autoplay; if the browser still refuses, the controls let a person start it.
    video.play().catch(() => {});
  } catch (error) {
    if (player !== session) return;
    await stop();
    status.set('error', `Could not play: ${errorText(error)}`);
  }
}

async function stop() {
  const session = player;
  player = null;
  stopStats?.();
  stopStats = null;
  video.srcObject = null;
  setRunning(false);
  status.set('idle', 'Stopped.');
  await session?.stop();
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  play();
});
stopButton.addEventListener('click', () => stop());
window.addEventListener('pagehide', () => player?.stop());

status.set('idle', 'Ready. Press Play to watch the room.');
if (query.get('autostart') === '1') play();
