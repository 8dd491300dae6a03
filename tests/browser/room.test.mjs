#!/usr/bin/env node
/**
 * End to end through a running Manifold server and its room app (web/index.html): three
 * headless Chromium pages join one room through the join form, and the test checks, from
 * each page's own peer connection and DOM, that
 *
 *   1. everyone sees three tiles;
 *   2. each decodes the other two's camera (framesDecoded per inbound video m-line) and
 *      receives their microphone (packetsReceived per inbound audio m-line), both growing;
 *   3. a microphone muted with the UI shows the mute badge on the others' tiles;
 *   4. a screen shared with the UI reaches the others as an extra video, decoded;
 *   5. chat typed into the UI reaches the others' panels (and a private message only its
 *      recipient);
 *   6. a participant leaving with the UI shrinks the others' grids.
 *
 *   MANIFOLD_URL=http://127.0.0.1:18080 node room.test.mjs
 *
 * On a dev-mode server (GET /dev/token answers) no token is needed. Otherwise set
 * MANIFOLD_TOKENS to three comma-separated tokens (one identity each). Uses Debian's
 * /usr/bin/chromium (CHROMIUM overrides it); never downloads a browser. Exit code 0 means
 * pass. A screenshot of the first participant's page goes to artifacts/room.png.
 */

import { mkdir, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';
import { TestFailure, bounded, closeBrowser, printBrowserLog, runTest } from './harness.mjs';

const OVERALL_TIMEOUT_MS = 150_000;
const JOIN_TIMEOUT_MS = 20_000;
const MEDIA_TIMEOUT_MS = 30_000;
const UI_TIMEOUT_MS = 10_000;
const GROWTH_INTERVAL_MS = 2_000;
const NAMES = ['Ada', 'Bob', 'Cy'];

const here = dirname(fileURLToPath(import.meta.url));
const artifacts = join(here, 'artifacts');
const base = (process.env.MANIFOLD_URL ?? '').replace(/\/+$/, '');
const tokens = (process.env.MANIFOLD_TOKENS ?? '').split(',').map((t) => t.trim()).filter(Boolean);
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

/** Everything the browsers said, printed when the test fails; tokens redacted. */
const browserLog = [];
/** @param {string} line */
const logBrowser = (line) => browserLog.push(redact(line));

/**
 * One participant: its page and what the test learned about it.
 * @typedef {{name: string, page: import('playwright-core').Page, id: string}} Person
 */

/** What `finally` must clean up, whichever way the test ends. */
const state = {
  /** @type {import('playwright-core').BrowserContext | null} */ context: null,
  /** @type {Person[]} */ people: [],
  /** @type {string | null} */ userDataDir: null,
};

const started = Date.now();
/** @param {string} text */
function step(text) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${text}`);
}

async function main() {
  if (!base) {
    console.log('MANIFOLD_URL is not set; e.g. MANIFOLD_URL=http://127.0.0.1:18080 node room.test.mjs');
    return 2;
  }
  return runTest(run, {
    timeoutMs: OVERALL_TIMEOUT_MS,
    onFailure: async () => {
      await bounded(failureScreenshots(), 15_000);
      await bounded(printMediaState(), 10_000);
      await printServerStats();
      printBrowserLog(browserLog);
    },
    cleanup: () => closeBrowser(state),
  });
}

async function run() {
  await checkServer();
  const room = `room-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  step(`server ${base}, room ${room}, browser ${executablePath}`);

  await mkdir(artifacts, { recursive: true });
  state.userDataDir = await mkdtemp(join(tmpdir(), 'manifold-chromium-'));
  state.context = await chromium.launchPersistentContext(state.userDataDir, {
    executablePath,
    headless: true,
    args: chromiumArgs(),
    viewport: { width: 1280, height: 800 },
  });

  // 1. Join through the form, one after the other.
  for (const [index, name] of NAMES.entries()) {
    const page = await openPage(name, `${base}/`);
    /** @type {Person} */
    const person = { name, page, id: '' };
    state.people.push(person);
    await joinThroughForm(page, name, room, index);
    person.id = await page.evaluate(() => /** @type {any} */ (window).manifoldApp.room.localParticipant.id);
    step(`${name} joined as ${person.id}`);
  }
  const [ada, bob, cy] = state.people;

  // Room metadata set through the admin API (dev mode: no token) reaches the SDK.
  step('an administrator sets the room metadata; the SDK emits roomUpdated');
  await ada.page.evaluate(() => {
    const app = /** @type {any} */ (window).manifoldApp;
    app.room.addEventListener('roomUpdated', (/** @type {any} */ e) => { app.roomUpdatedTopic = e.detail.metadata?.topic; });
  });
  const patched = await fetch(`${base}/admin/rooms/${room}`, {
    method: 'PATCH',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ metadata: { topic: 'from-admin' } }),
    signal: AbortSignal.timeout(5_000),
  });
  if (patched.status !== 200) throw new TestFailure(`PATCH /admin/rooms/${room} answered ${patched.status}`);
  await waitUntil('roomUpdated on the page', () => ada.page.evaluate(() => {
    const app = /** @type {any} */ (window).manifoldApp;
    return app.roomUpdatedTopic === 'from-admin' && app.room.metadata?.topic === 'from-admin';
  }), UI_TIMEOUT_MS);

  step('waiting for every page to show three tiles');
  for (const person of state.people) await waitForTiles(person, 3);
  step('every page shows three tiles');

  // 2. Media: each page decodes both others' cameras and receives their microphones.
  step('waiting for each page to decode the other two cameras and receive their microphones');
  for (const person of state.people) {
    const others = state.people.filter((p) => p !== person);
    const wanted = others.flatMap((other) => [
      { participant: other, source: 'camera', metric: 'framesDecoded' },
      { participant: other, source: 'microphone', metric: 'packetsReceived' },
    ]);
    await waitForMedia(person, wanted, MEDIA_TIMEOUT_MS);
  }
  step('checking that video and audio keep flowing');
  for (const person of state.people) {
    const others = state.people.filter((p) => p !== person);
    await checkGrowing(person, others.flatMap((other) => [
      { participant: other, source: 'camera', metric: 'framesDecoded' },
      { participant: other, source: 'microphone', metric: 'packetsReceived' },
    ]));
  }

  // 3. Mute with the UI.
  for (const watcher of [bob, cy]) {
    if (await muteBadgeVisible(watcher, ada)) {
      throw new TestFailure(`${watcher.name} shows ${ada.name} muted before ${ada.name} muted anything`);
    }
  }
  step(`${ada.name} clicks the microphone button`);
  await ada.page.getByTestId('toggle-mic').click();
  for (const watcher of [bob, cy]) {
    await waitUntil(`${watcher.name} to show ${ada.name}'s mute badge`, () => muteBadgeVisible(watcher, ada), UI_TIMEOUT_MS);
    step(`${watcher.name} sees ${ada.name} muted`);
  }
  const pressed = await ada.page.getByTestId('toggle-mic').getAttribute('aria-pressed');
  if (pressed !== 'false') throw new TestFailure(`${ada.name}'s microphone button says aria-pressed=${pressed} after muting`);

  // 4. Screen share with the UI.
  step(`${bob.name} clicks the screen-share button`);
  await shareScreen(bob);
  for (const watcher of [ada, cy]) {
    await waitUntil(
      `${watcher.name} to show ${bob.name}'s screen tile`,
      () => watcher.page.locator(`[data-testid="screen-tile"][data-participant="${bob.id}"]`).isVisible(),
      UI_TIMEOUT_MS,
    );
    await waitForMedia(watcher, [{ participant: bob, source: 'screen', metric: 'framesDecoded' }], MEDIA_TIMEOUT_MS);
    step(`${watcher.name} decodes ${bob.name}'s screen`);
  }

  // 5. Chat through the UI.
  const hello = `Hello from ${cy.name} ${Math.random().toString(36).slice(2, 7)}`;
  step(`${cy.name} sends "${hello}"`);
  await sendChat(cy, hello);
  for (const reader of [ada, bob]) {
    await waitUntil(`${reader.name} to show "${hello}" in the chat`, () => chatShows(reader, hello), UI_TIMEOUT_MS);
    step(`${reader.name} got it`);
  }
  const secret = `Psst ${bob.name}, only you ${Math.random().toString(36).slice(2, 7)}`;
  step(`${ada.name} sends a private message to ${bob.name}`);
  await ada.page.getByTestId('chat-to').selectOption(bob.id);
  await sendChat(ada, secret);
  await waitUntil(`${bob.name} to show the private message`, () => chatShows(bob, secret, { private: true }), UI_TIMEOUT_MS);
  step(`${bob.name} got it, marked private`);
  await ada.page.getByTestId('chat-to').selectOption('');
  await sendChat(bob, `Thanks ${ada.name}!`);
  await waitUntil(`${ada.name} to show ${bob.name}'s reply`, () => chatShows(ada, `Thanks ${ada.name}!`), UI_TIMEOUT_MS);
  await sleep(1_000);
  if (await chatShows(cy, secret)) throw new TestFailure(`${cy.name} was shown a private message meant for ${bob.name}`);
  step(`${cy.name} did not get it`);

  const screenshot = join(artifacts, 'room.png');
  await sleep(500);
  await ada.page.screenshot({ path: screenshot });
  step(`screenshot with all three present: ${screenshot}`);

  // 6. Leave with the UI.
  step(`${cy.name} clicks leave`);
  await cy.page.getByTestId('leave').click();
  await waitUntil(`${cy.name}'s page to show it left`, () => cy.page.getByTestId('left-screen').isVisible(), UI_TIMEOUT_MS);
  for (const person of [ada, bob]) await waitForTiles(person, 2);
  step(`${ada.name} and ${bob.name} are down to two tiles`);

  const noisy = browserLog.filter((line) => /\] (error|uncaught)/.test(line));
  if (noisy.length) console.log(`browser errors:\n${noisy.map((line) => `  ${line}`).join('\n')}`);
  console.log('\nPASS: three participants saw and heard each other, mute, screen share, chat and leave all worked');
}

/**
 * Fills the join form and waits until the page is in the room.
 * @param {import('playwright-core').Page} page
 * @param {string} name
 * @param {string} room
 * @param {number} index
 */
async function joinThroughForm(page, name, room, index) {
  await page.getByTestId('join-room').fill(room);
  await page.getByTestId('join-name').fill(name);
  // The mode line tells whether the server mints dev tokens; wait until it knows.
  await waitUntil(`${name}'s join page to detect the server mode`, async () =>
    !/checking/i.test((await page.getByTestId('join-mode').textContent()) ?? ''), UI_TIMEOUT_MS);
  if (await page.getByTestId('join-token').isVisible()) {
    const token = tokens[index];
    if (!token) {
      throw new TestFailure('the server is not in dev mode: set MANIFOLD_TOKENS to three comma-separated tokens');
    }
    await page.getByTestId('join-token').fill(token);
  }
  await page.getByTestId('join-submit').click();
  await waitUntil(`${name} to be connected to the room`, async () => {
    const error = page.getByTestId('join-error');
    if (await error.isVisible()) throw new TestFailure(`${name}'s join form says: ${await error.textContent()}`);
    return page.evaluate(() => {
      const room = /** @type {any} */ (window).manifoldApp?.room;
      return room?.connectionState === 'connected' && !document.getElementById('room-screen')?.hidden;
    });
  }, JOIN_TIMEOUT_MS);
}

/**
 * @param {Person} person
 * @param {number} count
 */
async function waitForTiles(person, count) {
  const tiles = person.page.locator('[data-testid="tile"]');
  await waitUntil(`${person.name} to show ${count} tiles`, async () => (await tiles.count()) === count, UI_TIMEOUT_MS, async () => `it shows ${await tiles.count()}`);
}

/**
 * @param {Person} watcher
 * @param {Person} subject
 */
function muteBadgeVisible(watcher, subject) {
  return watcher.page.locator(`[data-testid="tile"][data-participant="${subject.id}"] [data-testid="muted"]`).isVisible();
}

/**
 * Clicks the screen-share button. Chromium's fake UI picks the entire screen; if that
 * fails (no display to capture), shares an animated canvas through the app's test hook.
 * @param {Person} person
 */
async function shareScreen(person) {
  await person.page.getByTestId('toggle-screen').click();
  // Published, or given up (the button is idle again without a share, after an error toast).
  let outcome = 'pending';
  await waitUntil(`${person.name}'s screen share to be published or refused`, async () => {
    outcome = await person.page.evaluate(() => {
      const app = /** @type {any} */ (window).manifoldApp;
      if (app.view?.screen?.trackId) return 'published';
      const busy = document.querySelector('[data-testid="toggle-screen"]')?.getAttribute('aria-busy') === 'true';
      return busy || app.view?.screen ? 'pending' : 'refused';
    });
    return outcome !== 'pending';
  }, 20_000);
  if (outcome === 'published') {
    step(`${person.name} shares the screen (getDisplayMedia)`);
    return;
  }
  step('getDisplayMedia did not deliver a screen here; sharing a canvas through manifoldApp.publishScreenTrack instead');
  const ok = await person.page.evaluate(async () => {
    const canvas = document.createElement('canvas');
    canvas.width = 1280;
    canvas.height = 720;
    const context = /** @type {CanvasRenderingContext2D} */ (canvas.getContext('2d'));
    let frame = 0;
    setInterval(() => {
      frame++;
      context.fillStyle = `hsl(${frame % 360} 60% 30%)`;
      context.fillRect(0, 0, canvas.width, canvas.height);
      context.fillStyle = '#fff';
      context.font = '64px sans-serif';
      context.fillText(`shared canvas, frame ${frame}`, 80, 360);
    }, 66);
    const track = canvas.captureStream(15).getVideoTracks()[0];
    const local = await /** @type {any} */ (window).manifoldApp.publishScreenTrack(track);
    return Boolean(local?.trackId);
  });
  if (!ok) throw new TestFailure(`${person.name} could not publish a screen share, even a canvas`);
}

/**
 * @param {Person} person
 * @param {string} text
 */
async function sendChat(person, text) {
  const input = person.page.getByTestId('chat-input');
  await input.fill(text);
  await input.press('Enter');
  const error = person.page.getByTestId('chat-error');
  await sleep(200);
  if (await error.isVisible()) throw new TestFailure(`${person.name}'s chat says: ${await error.textContent()}`);
}

/**
 * Whether the person's chat panel shows a message with `text`.
 * @param {Person} person
 * @param {string} text
 * @param {{private?: boolean}} [options]
 */
async function chatShows(person, text, options = {}) {
  const selector = options.private ? '[data-testid="chat-message"][data-private="true"]' : '[data-testid="chat-message"]';
  const messages = await person.page.locator(selector).allTextContents();
  return messages.some((message) => message.includes(text));
}

/**
 * The counters of every remote track a page knows, from its own peer connection's
 * inbound-rtp stats, matched to tracks by mid (and cross-checked by track id).
 * @param {Person} person
 */
function readMedia(person) {
  return person.page.evaluate(async () => {
    const room = /** @type {any} */ (window).manifoldApp?.room;
    const pc = room?.peerConnection;
    if (!room || !pc) return null;
    const report = await pc.getStats();
    /** @type {Map<string, any>} */
    const byMid = new Map();
    /** @type {Map<string, any>} */
    const byTrack = new Map();
    report.forEach((/** @type {any} */ stat) => {
      if (stat.type !== 'inbound-rtp') return;
      if (stat.mid !== undefined) byMid.set(String(stat.mid), stat);
      if (stat.trackIdentifier) byTrack.set(stat.trackIdentifier, stat);
    });
    const tracks = [];
    for (const participant of room.participants.values()) {
      for (const track of participant.tracks.values()) {
        const stat = (track.mid !== null ? byMid.get(track.mid) : undefined)
          ?? (track.mediaStreamTrack ? byTrack.get(track.mediaStreamTrack.id) : undefined);
        tracks.push({
          participant: participant.id,
          trackId: track.id,
          kind: track.kind,
          source: track.source,
          subscribed: track.subscribed,
          mid: track.mid,
          framesDecoded: stat?.framesDecoded ?? 0,
          packetsReceived: stat?.packetsReceived ?? 0,
          // The receiver behind the mid must be the track the SDK reported.
          mismatch: Boolean(stat?.trackIdentifier && track.mediaStreamTrack && stat.trackIdentifier !== track.mediaStreamTrack.id),
        });
      }
    }
    return { state: room.connectionState, ice: pc.iceConnectionState, tracks };
  });
}

/**
 * @typedef {{participant: Person, source: string, metric: 'framesDecoded' | 'packetsReceived'}} Want
 */

/**
 * @param {any} media
 * @param {Want} want
 */
function valueOf(media, want) {
  const track = media?.tracks.find((/** @type {any} */ t) => t.participant === want.participant.id && t.source === want.source);
  return track ? { value: track[want.metric], track } : null;
}

/**
 * Waits until every wanted counter is above zero.
 * @param {Person} person
 * @param {Want[]} wanted
 * @param {number} timeoutMs
 */
async function waitForMedia(person, wanted, timeoutMs) {
  let media = null;
  await waitUntil(`${person.name} to get media`, async () => {
    media = await readMedia(person);
    for (const want of wanted) {
      const found = valueOf(media, want);
      if (found?.track.mismatch) {
        throw new TestFailure(`${person.name}: mid ${found.track.mid} carries a different track than the SDK reported for ${want.participant.name}'s ${want.source}`);
      }
    }
    return wanted.every((want) => (valueOf(media, want)?.value ?? 0) > 0);
  }, timeoutMs, async () => describeWanted(media, wanted));
  step(`${person.name}: ${describeWanted(media, wanted)}`);
}

/**
 * Fails unless every wanted counter grows over GROWTH_INTERVAL_MS.
 * @param {Person} person
 * @param {Want[]} wanted
 */
async function checkGrowing(person, wanted) {
  const before = await readMedia(person);
  await sleep(GROWTH_INTERVAL_MS);
  const after = await readMedia(person);
  const stalled = wanted.filter((want) => !((valueOf(after, want)?.value ?? 0) > (valueOf(before, want)?.value ?? 0)));
  if (stalled.length) {
    throw new TestFailure(`${person.name}: stopped growing in ${GROWTH_INTERVAL_MS / 1000} s: ` + stalled.map((want) =>
      `${want.participant.name}'s ${want.source} ${want.metric} ${valueOf(before, want)?.value ?? 0} → ${valueOf(after, want)?.value ?? 0}`).join(', '));
  }
  step(`${person.name}: still growing: ${describeWanted(after, wanted)}`);
}

/**
 * @param {any} media
 * @param {Want[]} wanted
 */
function describeWanted(media, wanted) {
  if (!media) return 'no room or peer connection yet';
  return `ice=${media.ice} ` + wanted.map((want) => {
    const found = valueOf(media, want);
    const label = `${want.participant.name}.${want.source}`;
    if (!found) return `${label}: not announced`;
    if (!found.track.subscribed) return `${label}: not subscribed`;
    return `${label}(mid ${found.track.mid}) ${want.metric}=${found.value}`;
  }).join(', ');
}

/**
 * Polls `predicate` every 250 ms until it returns true; fails after `timeoutMs` with
 * `detail()` appended. A TestFailure thrown by the predicate fails at once.
 * @param {string} what
 * @param {() => Promise<boolean>} predicate
 * @param {number} timeoutMs
 * @param {() => Promise<string>} [detail]
 */
async function waitUntil(what, predicate, timeoutMs, detail) {
  const deadline = Date.now() + timeoutMs;
  let lastError = null;
  for (;;) {
    try {
      if (await predicate()) return;
      lastError = null;
    } catch (error) {
      if (error instanceof TestFailure) throw error;
      lastError = error;
    }
    if (Date.now() > deadline) {
      const extra = detail ? await detail().catch((error) => String(error)) : '';
      const why = lastError ? ` (last error: ${lastError.message ?? lastError})` : '';
      throw new TestFailure(`timed out after ${timeoutMs / 1000} s waiting for ${what}${extra ? `: ${extra}` : ''}${why}`);
    }
    await sleep(250);
  }
}

/**
 * @param {string} name
 * @param {string} url
 */
async function openPage(name, url) {
  const page = await /** @type {import('playwright-core').BrowserContext} */ (state.context).newPage();
  page.on('console', (message) => logBrowser(`[${name}] ${message.type()}: ${message.text()}`));
  page.on('pageerror', (error) => logBrowser(`[${name}] uncaught: ${error.message}`));
  page.on('requestfailed', (request) =>
    logBrowser(`[${name}] request failed: ${request.method()} ${request.url()}: ${request.failure()?.errorText}`),
  );
  page.on('response', (response) => {
    // A 404 from /dev/token only means the server is not in dev mode.
    if (response.status() >= 400 && !response.url().includes('/dev/token')) {
      logBrowser(`[${name}] HTTP ${response.status()} for ${response.request().method()} ${response.url()}`);
    }
  });
  page.on('websocket', (socket) => {
    socket.on('close', () => logBrowser(`[${name}] websocket closed: ${socket.url()}`));
  });
  step(`${name} opens ${redact(url)}`);
  await page.goto(url, { waitUntil: 'load' });
  return page;
}

function chromiumArgs() {
  const args = [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--use-fake-device-for-media-stream',
    '--use-fake-ui-for-media-stream',
    '--allow-loopback-in-peer-connection',
    // getDisplayMedia with the fake UI: pick the whole screen without asking.
    '--auto-select-desktop-capture-source=Entire screen',
    '--enable-usermedia-screen-capturing',
    // Three pages share one browser; keep the hidden ones running at full speed.
    '--disable-background-timer-throttling',
    '--disable-renderer-backgrounding',
    '--disable-backgrounding-occluded-windows',
    '--autoplay-policy=no-user-gesture-required',
  ];
  // getUserMedia needs a secure context; loopback already is one, other hosts are not.
  const { hostname, origin } = new URL(base);
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(hostname)) {
    args.push(`--unsafely-treat-insecure-origin-as-secure=${origin}`);
  }
  return args;
}

/** Fails fast, with the reason, when nothing serves the app. */
async function checkServer() {
  let response;
  try {
    response = await fetch(`${base}/`, { signal: AbortSignal.timeout(5_000) });
  } catch (error) {
    throw new TestFailure(`cannot reach ${base}: ${error?.cause?.message ?? error.message}`);
  }
  if (!response.ok) throw new TestFailure(`GET ${base}/ answered ${response.status}`);
  const body = await response.text();
  if (!body.includes('data-testid="join-room"')) {
    throw new TestFailure(`GET ${base}/ is not the room app (no join form); is the server built with the current web/?`);
  }
}

async function printMediaState() {
  for (const person of state.people) {
    if (person.page.isClosed()) continue;
    try {
      const media = await readMedia(person);
      console.log(`${person.name} (${person.id}): ${media ? `state=${media.state} ice=${media.ice}` : 'not in a room'}`);
      for (const track of media?.tracks ?? []) {
        const owner = state.people.find((p) => p.id === track.participant)?.name ?? track.participant;
        console.log(`  ${owner}.${track.source} ${track.trackId} subscribed=${track.subscribed} mid=${track.mid} ` +
          `framesDecoded=${track.framesDecoded} packetsReceived=${track.packetsReceived}`);
      }
    } catch (error) {
      console.log(`${person.name}: ${error.message}`);
    }
  }
}

async function printServerStats() {
  try {
    const response = await fetch(`${base}/stats`, { signal: AbortSignal.timeout(3_000) });
    const body = (await response.text()).replace(/\s+/g, ' ').trim();
    console.log(`server /stats (${response.status}): ${body.length > 400 ? `${body.slice(0, 400)}…` : body}`);
  } catch (error) {
    console.log(`server /stats: ${error?.cause?.message ?? error.message}`);
  }
}

async function failureScreenshots() {
  await mkdir(artifacts, { recursive: true });
  for (const { name, page } of state.people) {
    if (page.isClosed()) continue;
    const path = join(artifacts, `room-failed-${name.toLowerCase()}.png`);
    try {
      await page.screenshot({ path, timeout: 5_000 });
      console.log(`screenshot (failed): ${path}`);
    } catch (error) {
      console.log(`screenshot ${path} not taken: ${error.message}`);
    }
  }
}

/**
 * Keeps tokens out of logs.
 * @param {string} text
 */
function redact(text) {
  let hidden = text.replace(/([?&](access_)?token=)[^&\s]*/g, '$1…');
  for (const token of tokens) hidden = hidden.split(token).join('…');
  return hidden;
}

process.exit(await main());
