#!/usr/bin/env node
/**
 * A node's loss costs its room participants a reconnect, not the meeting. Two nodes of one
 * cluster (one Redis, one NATS; scripts/browser-test.sh starts them), two headless Chromium
 * pages in one room through the SDK: X on node A, Y on node B, each publishing a camera and
 * a microphone. Once each decodes the other's camera, node A is killed (SIGKILL, no
 * goodbye). The test checks that
 *
 *   1. X's SDK joins the room afresh on node B (`reconnected` with `failover`);
 *   2. both pages decode each other's camera again, and prints how long after the kill
 *      that took (no timing assertion; the target is 5 s);
 *   3. Y saw X leave at most once and come back at most once, and ends with exactly one X
 *      in its roster (no ghost of X's old session), and X none of its old self.
 *
 *   MANIFOLD_URL_A=http://127.0.0.1:18080 MANIFOLD_URL_B=http://127.0.0.1:18081 \
 *   MANIFOLD_PID_A=1234 MANIFOLD_KEY=<the nodes' auth.key> node failover.test.mjs
 *
 * Uses Debian's /usr/bin/chromium (CHROMIUM overrides it); never downloads a browser.
 * Exit code 0 means pass.
 */

import { createHmac } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  TestFailure, closeBrowser, launchBrowser, printBrowserLog, runTest, step, waitUntil,
} from './harness.mjs';

const OVERALL_TIMEOUT_MS = 120_000;
const MEDIA_TIMEOUT_MS = 30_000;
/** After the kill: X back, and both decoding again. */
const FAILOVER_TIMEOUT_MS = 30_000;
/** Y's roster loses X's old session once the cluster sees node A gone (3 heartbeats). */
const GHOST_TIMEOUT_MS = 30_000;
/** After the roster is clean, watch a little longer for a late ghost. */
const SETTLE_MS = 3_000;

const urlA = (process.env.MANIFOLD_URL_A ?? '').replace(/\/+$/, '');
const urlB = (process.env.MANIFOLD_URL_B ?? '').replace(/\/+$/, '');
const pidA = Number(process.env.MANIFOLD_PID_A ?? '');
const key = process.env.MANIFOLD_KEY ?? '';

/** What the pages said, printed when the test fails. @type {string[]} */
const browserLog = [];

/** @type {import('./harness.mjs').Browser} */
const browser = { context: null, userDataDir: null };

async function main() {
  if (!urlA || !urlB || !Number.isInteger(pidA) || pidA <= 0 || !key) {
    console.log('set MANIFOLD_URL_A, MANIFOLD_URL_B, MANIFOLD_PID_A and MANIFOLD_KEY (scripts/browser-test.sh does)');
    return 2;
  }
  return runTest(run, {
    timeoutMs: OVERALL_TIMEOUT_MS,
    onFailure: () => printBrowserLog(browserLog),
    cleanup: () => closeBrowser(browser),
  });
}

async function run() {
  const room = `failover-${Date.now().toString(36)}`;
  step(`node A ${urlA} (pid ${pidA}), node B ${urlB}, room ${room}`);
  await launchBrowser(browser);
  const x = await joinAt(urlA, 'xena', room);
  const y = await joinAt(urlB, 'yuri', room);
  const xId = await x.evaluate(() => /** @type {any} */ (window).failover.room.localParticipant.id);
  const yId = await y.evaluate(() => /** @type {any} */ (window).failover.room.localParticipant.id);
  step(`xena joined node A as ${xId}, yuri joined node B as ${yId}`);

  await waitUntil('each page to decode the other\'s camera', async () =>
    (await decoded(x, yId)) > 0 && (await decoded(y, xId)) > 0, MEDIA_TIMEOUT_MS);
  step('each page decodes the other\'s camera');

  const killedAt = Date.now();
  await y.evaluate((at) => { /** @type {any} */ (window).failover.killedAt = at; }, killedAt);
  process.kill(pidA, 'SIGKILL');
  step(`node A killed (SIGKILL)`);

  /** @type {{x: number | null, y: number | null, rejoined: number | null}} */
  const after = { x: null, y: null, rejoined: null };
  let xNewId = '';
  await waitUntil('xena back on node B and both decoding again', async () => {
    const status = await x.evaluate(() => {
      const f = /** @type {any} */ (window).failover;
      return { id: f.room.localParticipant.id, state: f.room.connectionState, events: f.events };
    });
    if (status.state === 'disconnected') {
      throw new TestFailure(`xena's room ended: ${JSON.stringify(status.events.slice(-5))}`);
    }
    const back = status.events.find((/** @type {any} */ e) => e.type === 'reconnected' && e.failover);
    if (back && after.rejoined === null) after.rejoined = back.at - killedAt;
    if (!back) return false;
    xNewId = status.id;
    if (after.x === null && (await decoded(x, yId)) > 0) after.x = Date.now() - killedAt;
    if (after.y === null && (await decoded(y, xNewId)) > 0) after.y = Date.now() - killedAt;
    return after.x !== null && after.y !== null;
  }, FAILOVER_TIMEOUT_MS, async () => JSON.stringify(after));
  const back = await x.evaluate(() => /** @type {any} */ (window).failover.events.find((e) => e.type === 'reconnected'));
  if (!back.url.startsWith(urlB.replace(/^http/, 'ws'))) {
    throw new TestFailure(`xena reconnected through ${back.url}, not node B (${urlB})`);
  }
  step(`xena rejoined through node B as ${xNewId} ${after.rejoined} ms after the kill`);
  step(`media resumed: xena decodes yuri again after ${after.x} ms, yuri decodes xena again after ${after.y} ms`);
  console.log(`FAILOVER media resumed ${Math.max(after.x ?? 0, after.y ?? 0)} ms after SIGKILL (target 5000 ms)`);

  // Y's roster: X's old session leaves (once the cluster notices A is gone), the new one
  // stays; nobody comes and goes more than once.
  await waitUntil('yuri\'s roster to hold exactly one xena', async () => {
    const ids = await rosterIds(y, 'xena');
    return ids.length === 1 && ids[0] === xNewId;
  }, GHOST_TIMEOUT_MS, async () => JSON.stringify(await rosterIds(y, 'xena')));
  const ghostGone = Date.now() - killedAt;
  await sleep(SETTLE_MS);
  const ids = await rosterIds(y, 'xena');
  if (ids.length !== 1 || ids[0] !== xNewId) throw new TestFailure(`yuri's roster has xena as ${JSON.stringify(ids)} after settling`);
  const seen = await y.evaluate((at) => /** @type {any} */ (window).failover.events
    .filter((e) => e.at >= at && e.identity === 'xena'), killedAt);
  const lefts = seen.filter((/** @type {any} */ e) => e.type === 'participantLeft');
  const joins = seen.filter((/** @type {any} */ e) => e.type === 'participantJoined');
  step(`yuri saw, since the kill: ${seen.map((/** @type {any} */ e) => `${e.type} ${e.id} (${e.reason ?? ''}) at +${e.at - killedAt} ms`).join('; ')}`);
  if (lefts.length > 1 || joins.length > 1) {
    throw new TestFailure(`yuri saw xena leave ${lefts.length} times and join ${joins.length} times`);
  }
  if (lefts.length !== 1 || lefts[0].id !== xId) throw new TestFailure(`yuri did not see xena's old session (${xId}) leave`);
  step(`xena's old session left yuri's roster ${ghostGone} ms after the kill`);
  const selfGhosts = await x.evaluate((old) => [...(/** @type {any} */ (window).failover.room.participants.keys())].filter((id) => id === old), xId);
  if (selfGhosts.length) throw new TestFailure('xena shows her own old session as someone else');
  // And media still flows both ways.
  const before = [await decoded(x, yId), await decoded(y, xNewId)];
  await sleep(2_000);
  const later = [await decoded(x, yId), await decoded(y, xNewId)];
  if (!(later[0] > before[0] && later[1] > before[1])) {
    throw new TestFailure(`video stalled after the failover: ${JSON.stringify({ before, later })}`);
  }
  console.log('\nPASS: xena survived her node\'s death on another node; both see each other again, no ghost left');
}

/**
 * A page on `base` that joined `room` as `who` through the SDK, publishing camera and
 * microphone; its events are recorded in `window.failover.events`.
 * @param {string} base
 * @param {string} who
 * @param {string} room
 */
async function joinAt(base, who, room) {
  const page = await /** @type {import('playwright-core').BrowserContext} */ (browser.context).newPage();
  page.on('console', (message) => browserLog.push(`${who} [${message.type()}] ${message.text()}`));
  page.on('pageerror', (error) => browserLog.push(`${who} [uncaught] ${error.message}`));
  // Any document of the node will do: the SDK is imported from it.
  await page.goto(`${base}/sdk/manifold.js`);
  await page.evaluate(async ({ token, room }) => {
    const { Room } = await import('/sdk/manifold.js');
    /** @type {any[]} */
    const events = [];
    const r = await Room.connect(location.origin, token, { room, reconnectGraceMs: 10_000 });
    const at = () => Date.now();
    r.on('participantJoined', ({ participant }) => events.push({ type: 'participantJoined', id: participant.id, identity: participant.identity, at: at() }));
    r.on('participantLeft', ({ participant, reason }) => events.push({ type: 'participantLeft', id: participant.id, identity: participant.identity, reason, at: at() }));
    r.on('reconnecting', ({ cause }) => events.push({ type: 'reconnecting', cause, at: at() }));
    r.on('reconnected', (detail) => events.push({ type: 'reconnected', ...detail, at: at() }));
    r.on('disconnected', ({ reason, message }) => events.push({ type: 'disconnected', reason, message, at: at() }));
    /** @type {any} */ (window).failover = { room: r, events };
    await r.publishCamera({ width: 640, height: 360, frameRate: 15 }, { simulcast: false });
    await r.publishMicrophone();
  }, { token: token(who, room), room });
  return page;
}

/**
 * Frames the page decoded of `participant`'s camera, on its current peer connection.
 * @param {import('playwright-core').Page} page
 * @param {string} participant
 */
function decoded(page, participant) {
  return page.evaluate(async (id) => {
    const room = /** @type {any} */ (window).failover.room;
    const track = [...(room.participants.get(id)?.tracks.values() ?? [])].find((t) => t.source === 'camera');
    const pc = room.peerConnection;
    if (!track?.subscribed || track.mid === null || !pc) return 0;
    let frames = 0;
    (await pc.getStats()).forEach((/** @type {any} */ s) => {
      if (s.type === 'inbound-rtp' && String(s.mid) === track.mid) frames = s.framesDecoded ?? 0;
    });
    return frames;
  }, participant);
}

/**
 * The participant ids `page` shows for `identity`.
 * @param {import('playwright-core').Page} page
 * @param {string} identity
 */
function rosterIds(page, identity) {
  return page.evaluate((who) => [...(/** @type {any} */ (window).failover.room.participants.values())]
    .filter((p) => p.identity === who).map((p) => p.id), identity);
}

/**
 * An HS256 token for `sub` in `room` that may publish and subscribe, valid ten minutes.
 * @param {string} sub
 * @param {string} room
 */
function token(sub, room) {
  const now = Math.floor(Date.now() / 1000);
  const part = (/** @type {object} */ value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ sub, room, grants: { publish: true, subscribe: true }, iat: now, exp: now + 600 })}`;
  return `${body}.${createHmac('sha256', key).update(body).digest('base64url')}`;
}

process.exitCode = await main();
