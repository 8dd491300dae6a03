#!/usr/bin/env node
/**
 * End to end through a running Manifold server: headless Chromium publishes its fake
 * camera and microphone to a fresh room from whip.html, plays the room from whep.html,
 * and passes when the player decodes video and receives audio, both still growing.
 *
 *   MANIFOLD_URL=http://127.0.0.1:18080 node whip-whep.test.mjs
 *
 * MANIFOLD_TOKEN, if set, is passed to both pages; MANIFOLD_WHIP_SIMULCAST=1 makes the
 * publisher offer its video in three simulcast layers (`whip.html?simulcast=1`). Uses
 * Debian's /usr/bin/chromium (CHROMIUM overrides it); never downloads a browser. Exit
 * code 0 means pass.
 */

import { mkdir, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';
import { TestFailure, bounded, closeBrowser, printBrowserLog, runTest } from './harness.mjs';

const OVERALL_TIMEOUT_MS = 90_000;
const PUBLISH_TIMEOUT_MS = 25_000;
const FIRST_FRAME_TIMEOUT_MS = 20_000;
const PLAY_ATTEMPTS = 3;
const SAMPLES = 5;
const SAMPLE_INTERVAL_MS = 2_000;

const here = dirname(fileURLToPath(import.meta.url));
const artifacts = join(here, 'artifacts');
const base = (process.env.MANIFOLD_URL ?? '').replace(/\/+$/, '');
const token = process.env.MANIFOLD_TOKEN ?? '';
const simulcast = process.env.MANIFOLD_WHIP_SIMULCAST === '1';
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

/** Everything the browser said, printed when the test fails; tokens redacted. */
const browserLog = [];
/** @param {string} line */
const logBrowser = (line) => browserLog.push(redact(line));

/** What `finally` must clean up, whichever way the test ends. */
const state = {
  /** @type {import('playwright-core').BrowserContext | null} */ context: null,
  /** @type {import('playwright-core').Page | null} */ publisher: null,
  /** @type {import('playwright-core').Page | null} */ player: null,
  /** @type {string | null} */ userDataDir: null,
};

async function main() {
  if (!base) {
    console.log('MANIFOLD_URL is not set; e.g. MANIFOLD_URL=http://127.0.0.1:18080 node whip-whep.test.mjs');
    return 2;
  }
  return runTest(run, {
    timeoutMs: OVERALL_TIMEOUT_MS,
    onFailure: async () => {
      await bounded(screenshots('failed'), 10_000);
      await printServerStats();
      printBrowserLog(browserLog);
    },
    cleanup: () => closeBrowser(state),
  });
}

async function run() {
  await checkServer();
  const room = `browser-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  const query = (/** @type {Record<string, string>} */ extra) => {
    const params = new URLSearchParams({ room, autostart: '1', ...extra });
    if (token) params.set('token', token);
    return params;
  };
  console.log(`server ${base}, room ${room}, browser ${executablePath}${simulcast ? ', simulcast publisher' : ''}`);

  await mkdir(artifacts, { recursive: true });
  state.userDataDir = await mkdtemp(join(tmpdir(), 'manifold-chromium-'));
  state.context = await chromium.launchPersistentContext(state.userDataDir, {
    executablePath,
    headless: true,
    args: chromiumArgs(),
    viewport: { width: 1100, height: 900 },
  });

  state.publisher = await openPage('whip', `${base}/whip.html?${query(simulcast ? { simulcast: '1' } : {})}`);
  const published = await waitForStats(
    state.publisher,
    'publisher',
    (s) => s.framesSent > 0 && s.audioPacketsSent > 0,
    'framesSent > 0 and audioPacketsSent > 0',
    PUBLISH_TIMEOUT_MS,
  );
  console.log(`publisher is sending: ${describe(published)}`);

  // The publisher may be connected a moment before the room knows its tracks, so an early
  // "no publisher" from WHEP is retried; every refusal is printed, and the last one fails.
  for (let attempt = 1; ; attempt++) {
    if (attempt === 1) state.player = await openPage('whep', `${base}/whep.html?${query({})}`);
    else await state.player?.reload();
    try {
      const first = await waitForStats(
        /** @type {import('playwright-core').Page} */ (state.player),
        'player',
        (s) => s.framesDecoded > 0 && s.audioPacketsReceived > 0,
        'framesDecoded > 0 and audioPacketsReceived > 0',
        FIRST_FRAME_TIMEOUT_MS,
      );
      console.log(`player got media: ${describe(first)}`);
      break;
    } catch (error) {
      if (!(error instanceof PlayerRefused) || attempt >= PLAY_ATTEMPTS) throw error;
      console.log(`attempt ${attempt}: ${error.message}; retrying`);
      await sleep(1_500);
    }
  }

  const player = /** @type {import('playwright-core').Page} */ (state.player);
  const samples = [];
  const start = Date.now();
  for (let i = 0; i < SAMPLES; i++) {
    if (i > 0) await sleep(SAMPLE_INTERVAL_MS);
    const { status, stats } = await read(player);
    if (!stats) throw new TestFailure(`player has no peer connection any more; status "${status?.text}"`);
    samples.push(stats);
    console.log(`  sample ${i + 1} at +${((Date.now() - start) / 1000).toFixed(1)} s: ${describe(stats)}`);
  }
  console.log(`publisher at the end: ${describe((await read(state.publisher)).stats)}`);
  await screenshots('passed');
  await printServerStats();

  const last = samples[samples.length - 1];
  const before = samples[samples.length - 2];
  const problems = [];
  if (!(last.framesDecoded > 0)) problems.push('no video frames decoded');
  if (!(last.audioPacketsReceived > 0)) problems.push('no audio packets received');
  if (!(last.framesDecoded > before.framesDecoded)) {
    problems.push(`framesDecoded stopped growing (${before.framesDecoded} → ${last.framesDecoded} in ${SAMPLE_INTERVAL_MS / 1000} s)`);
  }
  if (!(last.audioPacketsReceived > before.audioPacketsReceived)) {
    problems.push(`audio packetsReceived stopped growing (${before.audioPacketsReceived} → ${last.audioPacketsReceived} in ${SAMPLE_INTERVAL_MS / 1000} s)`);
  }
  if (problems.length) throw new TestFailure(problems.join('; '));
  const noisy = browserLog.filter((line) => /\] (error|warning|uncaught|request failed)/.test(line));
  if (noisy.length) console.log(`browser errors and warnings:\n${noisy.map((line) => `  ${line}`).join('\n')}`);
  console.log('\nPASS: the player decodes video and receives audio from the publisher');
}

/** The player page showed an error, which may be a race worth one more try. */
class PlayerRefused extends TestFailure {}

/**
 * Polls `window.manifold` until `predicate` holds for its stats. Fails at once if the
 * page's status line turns to an error, and with the last numbers on timeout.
 *
 * @param {import('playwright-core').Page} page
 * @param {'publisher' | 'player'} role
 * @param {(stats: any) => boolean} predicate
 * @param {string} goal
 * @param {number} timeoutMs
 */
async function waitForStats(page, role, predicate, goal, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { status, stats } = await read(page);
    if (stats && predicate(stats)) return stats;
    if (status?.kind === 'error') {
      const message = `${role} page says: ${status.text}`;
      throw role === 'player' ? new PlayerRefused(message) : new TestFailure(message);
    }
    if (Date.now() > deadline) {
      throw new TestFailure(
        `${role}: no ${goal} after ${timeoutMs / 1000} s; status "${status?.text ?? 'page not loaded'}"; ` +
          `stats: ${stats ? describe(stats) : 'none'}`,
      );
    }
    await sleep(500);
  }
}

/**
 * @param {import('playwright-core').Page | null} page
 * @returns {Promise<{status: {kind: string, text: string} | null, stats: any}>}
 */
async function read(page) {
  if (!page) return { status: null, stats: null };
  return page.evaluate(async () => {
    const manifold = /** @type {any} */ (window).manifold;
    if (!manifold) return { status: null, stats: null };
    return { status: manifold.status ?? null, stats: await manifold.stats() };
  });
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
    if (response.status() >= 400) {
      logBrowser(`[${name}] HTTP ${response.status()} for ${response.request().method()} ${response.url()}`);
    }
  });
  console.log(`opening ${redact(url)}`);
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
  ];
  // getUserMedia needs a secure context; loopback already is one, other hosts are not.
  const { hostname, origin } = new URL(base);
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(hostname)) {
    args.push(`--unsafely-treat-insecure-origin-as-secure=${origin}`);
  }
  return args;
}

/** Fails fast, with the reason, when nothing serves the pages. */
async function checkServer() {
  let response;
  try {
    response = await fetch(`${base}/whep.html`, { signal: AbortSignal.timeout(5_000) });
  } catch (error) {
    throw new TestFailure(`cannot reach ${base}: ${error?.cause?.message ?? error.message}`);
  }
  if (!response.ok) throw new TestFailure(`GET ${base}/whep.html answered ${response.status}`);
}

async function printServerStats() {
  try {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const response = await fetch(`${base}/stats`, { headers, signal: AbortSignal.timeout(3_000) });
    const body = (await response.text()).replace(/\s+/g, ' ').trim();
    console.log(`server /stats (${response.status}): ${body.length > 400 ? `${body.slice(0, 400)}…` : body}`);
  } catch (error) {
    console.log(`server /stats: ${error?.cause?.message ?? error.message}`);
  }
}

/** @param {'passed' | 'failed'} outcome */
async function screenshots(outcome) {
  await mkdir(artifacts, { recursive: true });
  for (const [page, file] of [
    [state.player, 'whip-whep.png'],
    [state.publisher, 'whip-publisher.png'],
  ]) {
    if (!page || page.isClosed()) continue;
    const path = join(artifacts, /** @type {string} */ (file));
    try {
      await /** @type {import('playwright-core').Page} */ (page).screenshot({ path, timeout: 5_000 });
      console.log(`screenshot (${outcome}): ${path}`);
    } catch (error) {
      console.log(`screenshot ${file} not taken: ${error.message}`);
    }
  }
}

/**
 * Keeps the token out of logs, including URLs that carry it as `?token=`.
 * @param {string} text
 */
function redact(text) {
  const hidden = text.replace(/([?&]token=)[^&\s]*/g, '$1…');
  return token ? hidden.split(token).join('…') : hidden;
}

/** @param {any} s A StatsSummary from web/sdk/stats.js (`statsSummary`). */
function describe(s) {
  if (!s) return 'none';
  const codecs = [s.videoCodec, s.audioCodec].filter(Boolean).join('+') || 'no codec yet';
  return [
    `state=${s.connectionState}`,
    `framesSent=${s.framesSent}`,
    `framesDecoded=${s.framesDecoded}`,
    `audioPacketsSent=${s.audioPacketsSent}`,
    `audioPacketsReceived=${s.audioPacketsReceived}`,
    `videoPacketsReceived=${s.videoPacketsReceived}`,
    `bytesSent=${s.bytesSent}`,
    `bytesReceived=${s.bytesReceived}`,
    `lost=${s.audioPacketsLost + s.videoPacketsLost}`,
    `frame=${s.frameWidth}x${s.frameHeight}`,
    codecs,
  ].join(' ');
}

process.exit(await main());
