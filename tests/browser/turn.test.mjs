#!/usr/bin/env node
/**
 * TURN end to end through a real coturn: two Chromium pages join one room with the SDK's
 * `iceTransportPolicy: 'relay'`, so the only candidates they may use are the TURN relay
 * ones made with the credential the server put in `joined`'s `ice_servers`. One publishes
 * its fake camera, the other plays it. Passes when both peer connections' selected pairs
 * have a local candidate of type `relay` and the player decodes video that keeps growing.
 *
 *   MANIFOLD_URL=http://127.0.0.1:18080 node turn.test.mjs   # server with [turn] pointing at coturn
 *
 * The server must run without an auth key and with `[turn]` urls and static_auth_secret
 * shared with a coturn started with use-auth-secret; scripts/browser-test.sh starts both,
 * coturn on loopback with allow-loopback-peers (CI has network namespaces but no veth).
 */

import { setTimeout as sleep } from 'node:timers/promises';
import { TestFailure, closeBrowser, launchBrowser, printBrowserLog, runTest, step, waitUntil } from './harness.mjs';

const OVERALL_TIMEOUT_MS = 60_000;
const MEDIA_TIMEOUT_MS = 20_000;

const base = (process.env.MANIFOLD_URL ?? '').replace(/\/+$/, '');
const browserLog = [];
const browser = { context: null, userDataDir: null };

async function main() {
  if (!base) {
    console.log('MANIFOLD_URL is not set; e.g. MANIFOLD_URL=http://127.0.0.1:18080 node turn.test.mjs');
    return 2;
  }
  return runTest(run, {
    timeoutMs: OVERALL_TIMEOUT_MS,
    onFailure: async () => printBrowserLog(browserLog),
    cleanup: () => closeBrowser(browser),
  });
}

async function run() {
  const context = await launchBrowser(browser);
  const room = `turn-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  /** Joins `room` as `identity`, relay only; publishes the camera when `publish`. */
  const join = async (/** @type {string} */ identity, /** @type {boolean} */ publish) => {
    const page = await context.newPage();
    page.on('console', (m) => browserLog.push(`[${identity}] ${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => browserLog.push(`[${identity}] uncaught: ${e.message}`));
    // Any page of the server: the SDK is imported from its origin.
    await page.goto(`${base}/whip.html`, { waitUntil: 'load' });
    const iceServers = await page.evaluate(
      async ({ room, identity, publish }) => {
        const { Room } = await import('/sdk/manifold.js');
        const r = await Room.connect(location.origin, null, { room, identity, iceTransportPolicy: 'relay' });
        /** @type {any} */ (window).turnRoom = r;
        if (publish) await r.publishCamera(undefined, { simulcast: false });
        return r.peerConnection?.getConfiguration().iceServers ?? [];
      },
      { room, identity, publish },
    );
    if (!iceServers.length || !String(iceServers[0].urls).includes('turn:')) {
      throw new TestFailure(`joined gave ${identity} no TURN server: ${JSON.stringify(iceServers)}`);
    }
    return page;
  };

  step(`publishing to room ${room} through TURN only`);
  const publisher = await join('ada', true);
  await waitUntil(
    'the publisher to send video over a selected pair',
    async () => (await transport(publisher)).framesSent > 0,
    MEDIA_TIMEOUT_MS,
    async () => JSON.stringify(await transport(publisher)),
  );
  step(`publisher: ${JSON.stringify(await transport(publisher))}`);

  const player = await join('bob', false);
  await waitUntil(
    'the player to decode video',
    async () => (await transport(player)).framesDecoded > 0,
    MEDIA_TIMEOUT_MS,
    async () => JSON.stringify(await transport(player)),
  );
  const first = await transport(player);
  await sleep(2_000);
  const later = await transport(player);
  step(`player: ${JSON.stringify(later)}`);

  const problems = [];
  for (const [who, t] of [
    ['publisher', await transport(publisher)],
    ['player', later],
  ]) {
    if (t.localType !== 'relay') problems.push(`${who}'s selected local candidate is ${t.localType}, not relay`);
  }
  if (!(later.framesDecoded > first.framesDecoded)) {
    problems.push(`framesDecoded stopped growing (${first.framesDecoded} → ${later.framesDecoded})`);
  }
  if (problems.length) throw new TestFailure(problems.join('; '));
  console.log('\nPASS: relay-forced Chromium pages publish and play through coturn');
}

/**
 * The page's room peer connection: the selected pair's local candidate and media counters.
 * @param {import('playwright-core').Page} page
 */
async function transport(page) {
  return page.evaluate(async () => {
    const pc = /** @type {any} */ (window).turnRoom?.peerConnection;
    if (!pc) return { state: 'no peer connection', framesSent: 0, framesDecoded: 0 };
    const report = await pc.getStats();
    const all = [...report.values()];
    const t = all.find((s) => s.type === 'transport');
    const pair = t?.selectedCandidatePairId ? report.get(t.selectedCandidatePairId) : null;
    const local = pair ? report.get(pair.localCandidateId) : null;
    const sum = (/** @type {string} */ type, /** @type {string} */ key) =>
      all.filter((s) => s.type === type && s.kind === 'video').reduce((n, s) => n + (s[key] ?? 0), 0);
    return {
      state: pc.connectionState,
      localType: local?.candidateType ?? null,
      local: local ? `${local.protocol} ${local.address}:${local.port}` : null,
      framesSent: sum('outbound-rtp', 'framesSent'),
      framesDecoded: sum('inbound-rtp', 'framesDecoded'),
    };
  });
}

process.exit(await main());
