#!/usr/bin/env node
/**
 * End to end through a running Manifold server and its room app (web/index.html): video
 * quality and speakers. Ada publishes the fake camera (1280×720, so three simulcast
 * layers) and the fake microphone, fed a tone; Bob and Cy join before her, without
 * media, and watch. The test checks, from each page's own peer connection, SDK state and
 * DOM, that
 *
 *   a. Ada's camera goes out in three layers (`q`, `h`, `f`), and when Bob picks "low" in
 *      the quality menu of Ada's tile and Cy picks "high", Bob decodes about a quarter of
 *      the full width and Cy the full width; each gets the matching `stream_state`;
 *   b. dynacast: when both pick "low", Ada's browser stops sending the `f` layer (its
 *      `outbound-rtp` bytesSent stays put for 3 s while `q` grows) and her LocalTrack's
 *      `activeLayers` drops it; when Cy picks "high" again, `f` grows again;
 *   c. Ada's microphone makes her one of the `activeSpeakers` on Bob's page, and Bob's
 *      tile of Ada is marked speaking.
 *
 * The fake microphone plays a generated WAV file (`--use-file-for-fake-audio-capture`): a
 * continuous tone whose pitch changes every quarter second. Chromium's own fake audio, a
 * ~20 ms beep every 500 ms, is too short for the server's speaking hysteresis (about
 * 200 ms of sound to count as speaking), and is seldom or never reported as a speaker.
 *
 *   MANIFOLD_URL=http://127.0.0.1:18080 node quality.test.mjs
 *
 * On a dev-mode server no token is needed; otherwise set MANIFOLD_TOKENS to three
 * comma-separated tokens (one identity each). Uses Debian's /usr/bin/chromium (CHROMIUM
 * overrides it); never downloads a browser. Exit code 0 means pass.
 */

import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';
import { TestFailure, bounded, closeBrowser, printBrowserLog, runTest } from './harness.mjs';

const OVERALL_TIMEOUT_MS = 240_000;
const JOIN_TIMEOUT_MS = 20_000;
const MEDIA_TIMEOUT_MS = 30_000;
const QUALITY_TIMEOUT_MS = 30_000;
const DYNACAST_TIMEOUT_MS = 30_000;
const SPEAKER_TIMEOUT_MS = 30_000;
const UI_TIMEOUT_MS = 10_000;
/** How long the paused layer's byte counter must stand still, with the low layer growing. */
const STILL_MS = 3_000;
const SAMPLE_MS = 1_000;
const NAMES = ['Ada', 'Bob', 'Cy'];
/** Signaling messages worth keeping for the failure report. */
const LOGGED_TYPES = new Set(['publish', 'published', 'set_video_quality', 'stream_state', 'dynacast', 'speakers_changed', 'error']);

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
 * One participant: its page, what the test learned about it, and the quality-related
 * signaling its socket carried (`>` sent, `<` received).
 * @typedef {{name: string, page: import('playwright-core').Page, id: string,
 *   signals: {at: number, direction: '>' | '<', type: string, text: string}[]}} Person
 */

/** What `finally` must clean up, whichever way the test ends. */
const state = {
  /** @type {import('playwright-core').BrowserContext | null} */ context: null,
  /** @type {Person[]} */ people: [],
  /** @type {string | null} */ userDataDir: null,
  /** Ada's camera mid, once known, for the SDP excerpt. @type {string | null} */ cameraMid: null,
};

const started = Date.now();
/** @param {string} text */
function step(text) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${text}`);
}

async function main() {
  if (!base) {
    console.log('MANIFOLD_URL is not set; e.g. MANIFOLD_URL=http://127.0.0.1:18080 node quality.test.mjs');
    return 2;
  }
  return runTest(run, {
    timeoutMs: OVERALL_TIMEOUT_MS,
    onFailure: async () => {
      await bounded(failureScreenshots(), 15_000);
      await bounded(printState(), 15_000);
      await printServerStats();
      printBrowserLog(browserLog);
    },
    cleanup: () => closeBrowser(state),
  });
}

async function run() {
  await checkServer();
  const room = `quality-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  step(`server ${base}, room ${room}, browser ${executablePath}`);

  await mkdir(artifacts, { recursive: true });
  state.userDataDir = await mkdtemp(join(tmpdir(), 'manifold-chromium-'));
  const voice = join(state.userDataDir, 'voice.wav');
  await writeFile(voice, toneWav());
  state.context = await chromium.launchPersistentContext(state.userDataDir, {
    executablePath,
    headless: true,
    args: [...chromiumArgs(), `--use-file-for-fake-audio-capture=${voice}`],
    viewport: { width: 1280, height: 800 },
  });

  // Ada publishes her camera and microphone; Bob and Cy only watch. They join first: the
  // server reports speakers when the set changes, so only those present when Ada starts
  // to speak hear of it.
  for (const name of NAMES) {
    /** @type {Person} */
    const person = { name, page: await openPage(name, `${base}/`), id: '', signals: [] };
    recordSignaling(person);
    state.people.push(person);
  }
  const [ada, bob, cy] = state.people;
  for (const person of [bob, cy, ada]) {
    const media = person === ada;
    await joinThroughForm(person, room, state.people.indexOf(person), { media });
    person.id = await person.page.evaluate(() => /** @type {any} */ (window).manifoldApp.room.localParticipant.id);
    await installRecorder(person);
    step(`${person.name} joined as ${person.id}${media ? ' with camera and microphone' : ' without media'}`);
  }

  // Ada's camera: published, in three layers.
  /** @type {any} */
  let camera = null;
  await waitUntil(`${ada.name}'s camera and microphone to be published`, async () => {
    camera = await localCamera(ada);
    return Boolean(camera?.trackId && camera.micPublished);
  }, JOIN_TIMEOUT_MS, async () => JSON.stringify(camera));
  state.cameraMid = camera.mid;
  const capture = camera.settings;
  step(`${ada.name}'s camera ${camera.trackId} (mid ${camera.mid}): capture ${capture.width}x${capture.height} ` +
    `@${capture.frameRate} fps, layers asked ${camera.layers}, rids [${camera.rids}], active [${camera.activeLayers}]`);
  if (Math.min(capture.width, capture.height) < 540) {
    throw new TestFailure(`the fake camera delivers ${capture.width}x${capture.height}; three layers need at least 540 px on the shorter side`);
  }
  if (camera.layers !== 3) throw new TestFailure(`${ada.name}'s camera asked for ${camera.layers} layers, not 3`);
  if (camera.rids.join(',') !== 'q,h,f') {
    console.log(await sdpExcerpt(ada, camera.mid));
    throw new TestFailure(`${ada.name}'s browser encodes RIDs [${camera.rids}] after answering, not [q,h,f]: ` +
      'did the server offer the camera m-line as simulcast (a=rid, a=simulcast)?');
  }
  console.log(await sdpExcerpt(ada, camera.mid));
  const fullWidth = capture.width;
  const lowMax = Math.round((fullWidth / 4) * 1.1);

  // Three outbound streams; which of them flow is dynacast's business (below).
  await waitUntil(`${ada.name}'s browser to send three layers`, async () => {
    const layers = await outboundLayers(ada);
    return ['q', 'h', 'f'].every((rid) => layers.byRid[rid]) && layers.byRid.q.bytesSent > 0;
  }, MEDIA_TIMEOUT_MS, async () => describeLayers(await outboundLayers(ada)));
  step(`${ada.name} sends ${describeLayers(await outboundLayers(ada))}`);

  for (const viewer of [bob, cy]) {
    await waitUntil(`${viewer.name} to decode ${ada.name}'s camera`, async () =>
      ((await inboundVideo(viewer, ada))?.framesDecoded ?? 0) > 0, MEDIA_TIMEOUT_MS,
    async () => describeInbound(await inboundVideo(viewer, ada)));
    step(`${viewer.name} decodes ${ada.name}'s camera in "auto": ${describeInbound(await inboundVideo(viewer, ada))}`);
  }

  // a. Bob asks for low, Cy for high, through the menu on Ada's tile.
  await chooseQuality(bob, ada, 'low');
  await chooseQuality(cy, ada, 'high');
  /** @type {Record<string, any>} */
  let seen = {};
  await waitUntil(`${bob.name} to receive about a quarter of ${fullWidth} px (≤ ${lowMax}) and ${cy.name} the full width`, async () => {
    const layers = await outboundLayers(ada);
    const full = layers.byRid.f?.frameWidth || fullWidth;
    seen = { bob: await inboundVideo(bob, ada), cy: await inboundVideo(cy, ada), layers };
    return seen.bob?.frameWidth > 0 && seen.bob.frameWidth <= lowMax
      && seen.cy?.frameWidth >= full && seen.cy.frameWidth > fullWidth / 2;
  }, QUALITY_TIMEOUT_MS, async () =>
    `${bob.name}: ${describeInbound(seen.bob)}; ${cy.name}: ${describeInbound(seen.cy)}; ${ada.name}: ${describeLayers(seen.layers)}`);
  step(`${bob.name} (low) receives ${seen.bob.frameWidth}x${seen.bob.frameHeight}, ` +
    `${cy.name} (high) ${seen.cy.frameWidth}x${seen.cy.frameHeight}; ${ada.name}'s f layer is ${seen.layers.byRid.f?.frameWidth} px wide`);
  if ((seen.layers.byRid.f?.frameWidth ?? fullWidth) < fullWidth) {
    step(`note: ${ada.name}'s browser sends the f layer below the capture width (${seen.layers.byRid.f?.qualityLimitationReason ?? '?'}-limited)`);
  }
  for (const [viewer, quality] of /** @type {const} */ ([[bob, 'low'], [cy, 'high']])) {
    await waitUntil(`${viewer.name} to get stream_state active/${quality} for ${ada.name}'s camera`, async () => {
      const inbound = await inboundVideo(viewer, ada);
      return inbound?.streamState === 'active' && inbound.streamQuality === quality;
    }, UI_TIMEOUT_MS, async () => describeInbound(await inboundVideo(viewer, ada)));
    step(`${viewer.name}'s SDK says: stream active, ${quality}`);
  }

  // b. Dynacast: with both on low, nobody receives f; Ada's browser stops sending it.
  await chooseQuality(cy, ada, 'low');
  await waitForLayerStill(ada, 'f');
  const afterPause = await localCamera(ada);
  if (afterPause.activeLayers.includes('f')) {
    throw new TestFailure(`${ada.name}'s f layer stopped, but her LocalTrack's activeLayers still says [${afterPause.activeLayers}]`);
  }
  step(`${ada.name}'s LocalTrack.activeLayers: [${afterPause.activeLayers}]`);

  await chooseQuality(cy, ada, 'high');
  await waitForLayerGrowing(ada, 'f');
  await waitUntil(`${ada.name}'s activeLayers to include f again and ${cy.name} to receive the full width`, async () => {
    const local = await localCamera(ada);
    const layers = await outboundLayers(ada);
    seen = { local, cy: await inboundVideo(cy, ada), layers };
    return local.activeLayers.includes('f') && seen.cy?.frameWidth >= (layers.byRid.f?.frameWidth || fullWidth);
  }, QUALITY_TIMEOUT_MS, async () =>
    `activeLayers [${seen.local?.activeLayers}]; ${cy.name}: ${describeInbound(seen.cy)}; ${ada.name}: ${describeLayers(seen.layers)}`);
  step(`${ada.name} sends f again (activeLayers [${seen.local.activeLayers}]); ${cy.name} receives ${seen.cy.frameWidth}x${seen.cy.frameHeight}`);

  // c. Ada's voice makes her an active speaker on Bob's page, and his tile of her speaks.
  /** @type {any} */
  let speakers = null;
  await waitUntil(`${ada.name} to appear in ${bob.name}'s room.activeSpeakers`, async () => {
    speakers = await readSpeakers(bob);
    return speakers.now.includes(ada.id) || speakers.log.some((/** @type {any} */ entry) => entry.ids.includes(ada.id));
  }, SPEAKER_TIMEOUT_MS, async () => JSON.stringify(speakers));
  const heard = speakers.log.find((/** @type {any} */ entry) => entry.ids.includes(ada.id));
  step(`${bob.name}'s activeSpeakers: [${(heard?.ids ?? speakers.now).join(', ')}]` +
    (heard ? ` (levels ${heard.levels.map((/** @type {number} */ l) => l.toFixed(2)).join(', ')})` : ''));
  if (heard && !heard.dom.includes(ada.id)) {
    throw new TestFailure(`${bob.name}'s SDK says ${ada.name} speaks, but the tile marked speaking were [${heard.dom}]`);
  }
  step(`${bob.name}'s tile of ${ada.name} was marked data-speaking="true"`);

  const screenshot = join(artifacts, 'quality.png');
  await bob.page.screenshot({ path: screenshot });
  step(`screenshot of ${bob.name}'s page: ${screenshot}`);
  for (const person of state.people) {
    step(`${person.name}'s quality signaling: ${summarizeSignals(person)}`);
  }

  const noisy = browserLog.filter((line) => /\] (error|uncaught)/.test(line));
  if (noisy.length) console.log(`browser errors:\n${noisy.map((line) => `  ${line}`).join('\n')}`);
  console.log('\nPASS: simulcast layers per receiver, dynacast pausing and resuming a layer, and the active speaker all worked');
}

/**
 * Fills the join form (turning camera and microphone off first unless `media`) and waits
 * until the page is in the room.
 * @param {Person} person
 * @param {string} room
 * @param {number} index
 * @param {{media: boolean}} options
 */
async function joinThroughForm({ name, page }, room, index, { media }) {
  await page.getByTestId('join-room').fill(room);
  await page.getByTestId('join-name').fill(name);
  await waitUntil(`${name}'s join page to detect the server mode`, async () =>
    !/checking/i.test((await page.getByTestId('join-mode').textContent()) ?? ''), UI_TIMEOUT_MS);
  if (await page.getByTestId('join-token').isVisible()) {
    const token = tokens[index];
    if (!token) throw new TestFailure('the server is not in dev mode: set MANIFOLD_TOKENS to three comma-separated tokens');
    await page.getByTestId('join-token').fill(token);
  }
  for (const button of ['join-camera', 'join-mic']) {
    const wanted = String(media);
    await waitUntil(`${name}'s ${button} to be ${media ? 'on' : 'off'}`, async () => {
      const on = await page.getByTestId(button).getAttribute('data-on');
      if (on === wanted) return true;
      await page.getByTestId(button).click();
      await sleep(300);
      return false;
    }, UI_TIMEOUT_MS);
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
 * Records, in the page, every `streamStateChanged` and `activeSpeakersChanged` the SDK
 * emits, with which tiles the app marked speaking right then (the app's own listener,
 * added when it entered the room, has run by the time this one runs).
 * @param {Person} person
 */
async function installRecorder(person) {
  await person.page.evaluate(() => {
    const room = /** @type {any} */ (window).manifoldApp.room;
    const log = { streamStates: /** @type {any[]} */ ([]), speakers: /** @type {any[]} */ ([]) };
    /** @type {any} */ (window).qualityTestLog = log;
    room.on('streamStateChanged', (/** @type {any} */ { track, state, quality }) => {
      log.streamStates.push({ at: Date.now(), track: track.id, state, quality });
    });
    room.on('activeSpeakersChanged', (/** @type {any} */ { speakers }) => {
      log.speakers.push({
        at: Date.now(),
        ids: [...room.activeSpeakers],
        levels: speakers.map((/** @type {any} */ s) => s.level),
        dom: [...document.querySelectorAll('[data-testid="tile"][data-speaking="true"]')]
          .map((tile) => /** @type {HTMLElement} */ (tile).dataset.participant),
      });
    });
  });
}

/**
 * Keeps the quality-related messages of the person's room socket, one line each.
 * @param {Person} person
 */
function recordSignaling(person) {
  person.page.on('websocket', (socket) => {
    if (!socket.url().includes('/rtc')) return;
    /**
     * @param {string} direction
     * @param {string | Buffer} payload
     */
    const keep = (direction, payload) => {
      let message;
      try {
        message = JSON.parse(String(payload));
      } catch {
        return;
      }
      const type = String(message?.type);
      const offered = type === 'offer' || type === 'answer';
      if (!LOGGED_TYPES.has(type) && !offered) return;
      const text = offered
        ? `${type} ${message.offer_id ?? ''} (${(message.sdp ?? '').match(/a=simulcast:[^\r\n]*/g)?.join(' ') ?? 'no simulcast'})`
        : JSON.stringify({ ...message, v: undefined });
      person.signals.push({ at: Date.now(), direction: /** @type {'>' | '<'} */ (direction), type, text });
    };
    socket.on('framesent', ({ payload }) => keep('>', payload));
    socket.on('framereceived', ({ payload }) => keep('<', payload));
  });
}

/** @param {Person} person */
function summarizeSignals(person) {
  /** @type {Record<string, number>} */
  const counts = {};
  for (const { direction, type } of person.signals) counts[`${direction}${type}`] = (counts[`${direction}${type}`] ?? 0) + 1;
  return Object.entries(counts).map(([key, count]) => `${key}×${count}`).join(' ') || 'none';
}

/**
 * Picks a quality in the menu on `subject`'s tile on `viewer`'s page, and checks that the
 * SDK took it.
 * @param {Person} viewer
 * @param {Person} subject
 * @param {'low' | 'medium' | 'high' | 'auto'} quality
 */
async function chooseQuality(viewer, subject, quality) {
  step(`${viewer.name} picks "${quality}" for ${subject.name}'s camera`);
  const menu = viewer.page.locator(`[data-testid="tile"][data-participant="${subject.id}"] [data-testid="quality"]`);
  await menu.selectOption(quality, { timeout: UI_TIMEOUT_MS });
  await waitUntil(`${viewer.name}'s SDK to take "${quality}"`, async () =>
    (await inboundVideo(viewer, subject))?.videoQuality === quality, UI_TIMEOUT_MS);
}

/**
 * Ada's camera LocalTrack, as the app holds it.
 * @param {Person} person
 */
function localCamera(person) {
  return person.page.evaluate(() => {
    const view = /** @type {any} */ (window).manifoldApp?.view;
    const camera = view?.camera;
    if (!camera) return null;
    const { width, height, frameRate } = camera.mediaStreamTrack.getSettings();
    return {
      trackId: camera.trackId,
      mid: camera.mid,
      state: camera.state,
      layers: camera.layers,
      rids: [...camera.rids],
      activeLayers: [...camera.activeLayers],
      settings: { width, height, frameRate: Math.round(frameRate ?? 0) },
      micPublished: Boolean(view.microphone?.trackId),
    };
  });
}

/**
 * The person's sent camera layers, from its own peer connection's outbound-rtp stats.
 * @param {Person} person
 * @returns {Promise<{byRid: Record<string, any>, activeLayers: string[]}>}
 */
function outboundLayers(person) {
  return person.page.evaluate(async () => {
    const room = /** @type {any} */ (window).manifoldApp?.room;
    const camera = /** @type {any} */ (window).manifoldApp?.view?.camera;
    /** @type {Record<string, any>} */
    const byRid = {};
    if (!room?.peerConnection || !camera?.mid) return { byRid, activeLayers: [] };
    const report = await room.peerConnection.getStats();
    /** @type {Map<string, any>} */
    const byId = new Map();
    report.forEach((/** @type {any} */ stat) => byId.set(stat.id, stat));
    report.forEach((/** @type {any} */ stat) => {
      if (stat.type !== 'outbound-rtp' || stat.kind !== 'video') return;
      const mid = stat.mid ?? byId.get(stat.transceiverId)?.mid;
      if (String(mid) !== String(camera.mid)) return;
      byRid[stat.rid ?? '-'] = {
        bytesSent: stat.bytesSent ?? 0,
        framesSent: stat.framesSent ?? 0,
        frameWidth: stat.frameWidth ?? 0,
        frameHeight: stat.frameHeight ?? 0,
        active: stat.active,
        qualityLimitationReason: stat.qualityLimitationReason,
      };
    });
    return { byRid, activeLayers: [...camera.activeLayers] };
  });
}

/**
 * What `viewer` receives of `subject`'s camera: inbound-rtp of its m-line, and the SDK's
 * RemoteTrack fields.
 * @param {Person} viewer
 * @param {Person} subject
 */
function inboundVideo(viewer, subject) {
  return viewer.page.evaluate(async (subjectId) => {
    const room = /** @type {any} */ (window).manifoldApp?.room;
    const track = room?.participants.get(subjectId)?.trackBySource('camera');
    if (!room?.peerConnection || !track) return null;
    let stat = null;
    if (track.mid !== null) {
      const report = await room.peerConnection.getStats();
      report.forEach((/** @type {any} */ s) => {
        if (s.type === 'inbound-rtp' && String(s.mid) === String(track.mid)) stat = s;
      });
    }
    const s = /** @type {any} */ (stat);
    return {
      mid: track.mid,
      subscribed: track.subscribed,
      videoQuality: track.videoQuality,
      streamState: track.streamState,
      streamQuality: track.streamQuality,
      framesDecoded: s?.framesDecoded ?? 0,
      bytesReceived: s?.bytesReceived ?? 0,
      frameWidth: s?.frameWidth ?? 0,
      frameHeight: s?.frameHeight ?? 0,
    };
  }, subject.id);
}

/**
 * Waits until the layer's bytesSent stands still for STILL_MS while `q` grows.
 * @param {Person} person
 * @param {string} rid
 */
async function waitForLayerStill(person, rid) {
  /** @type {{at: number, layers: any}[]} */
  const samples = [];
  await waitUntil(`${person.name}'s ${rid} layer to stop growing for ${STILL_MS / 1000} s while q grows`, async () => {
    samples.push({ at: Date.now(), layers: await outboundLayers(person) });
    const now = samples[samples.length - 1];
    const then = [...samples].reverse().find((sample) => now.at - sample.at >= STILL_MS);
    if (!then) return false;
    const bytes = (/** @type {any} */ sample, /** @type {string} */ r) => sample.layers.byRid[r]?.bytesSent ?? 0;
    return bytes(now, rid) === bytes(then, rid) && bytes(now, 'q') > bytes(then, 'q');
  }, DYNACAST_TIMEOUT_MS, async () => describeSamples(samples), SAMPLE_MS);
  const last = samples[samples.length - 1];
  step(`${person.name}'s ${rid} layer stands still: ${describeLayers(last.layers)}`);
}

/**
 * Waits until the layer's bytesSent grows again.
 * @param {Person} person
 * @param {string} rid
 */
async function waitForLayerGrowing(person, rid) {
  /** @type {{at: number, layers: any}[]} */
  const samples = [];
  await waitUntil(`${person.name}'s ${rid} layer to grow again`, async () => {
    samples.push({ at: Date.now(), layers: await outboundLayers(person) });
    if (samples.length < 2) return false;
    const [then, now] = samples.slice(-2);
    return (now.layers.byRid[rid]?.bytesSent ?? 0) > (then.layers.byRid[rid]?.bytesSent ?? 0);
  }, DYNACAST_TIMEOUT_MS, async () => describeSamples(samples), SAMPLE_MS);
  step(`${person.name}'s ${rid} layer grows again: ${describeLayers(samples[samples.length - 1].layers)}`);
}

/**
 * Bob's current active speakers, and every change the SDK reported.
 * @param {Person} person
 */
function readSpeakers(person) {
  return person.page.evaluate(() => {
    const room = /** @type {any} */ (window).manifoldApp?.room;
    const log = /** @type {any} */ (window).qualityTestLog;
    return { now: room ? [...room.activeSpeakers] : [], log: log?.speakers ?? [] };
  });
}

/**
 * The camera m-section of the server's last offer and of our answer: the lines that make
 * simulcast.
 * @param {Person} person
 * @param {string} mid
 */
async function sdpExcerpt(person, mid) {
  const { offer, answer } = await person.page.evaluate(() => {
    const pc = /** @type {any} */ (window).manifoldApp?.room?.peerConnection;
    return { offer: pc?.remoteDescription?.sdp ?? '', answer: pc?.localDescription?.sdp ?? '' };
  });
  const section = (/** @type {string} */ sdp) => {
    const sections = sdp.split(/\r?\n(?=m=)/);
    const found = sections.find((s) => s.split(/\r?\n/).includes(`a=mid:${mid}`)) ?? '';
    return found.split(/\r?\n/)
      .filter((line) => /^(m=|a=(mid|rid|simulcast|sendonly|recvonly|inactive|extmap:\d+ .*(rtp-stream-id|repaired|sdes:mid|audio-level)))/.test(line))
      .map((line) => `    ${line}`).join('\n') || '    (no such m-line)';
  };
  return `  ${person.name}'s camera m-line (mid ${mid}) in the server's offer:\n${section(offer)}\n  and in the answer:\n${section(answer)}`;
}

/** @param {{byRid: Record<string, any>, activeLayers: string[]} | undefined} layers */
function describeLayers(layers) {
  if (!layers) return 'no stats';
  const rids = Object.keys(layers.byRid).sort((a, b) => 'qhf-'.indexOf(a) - 'qhf-'.indexOf(b));
  return rids.map((rid) => {
    const l = layers.byRid[rid];
    return `${rid}: ${l.bytesSent} B ${l.frameWidth}x${l.frameHeight} active=${l.active}` +
      (l.qualityLimitationReason && l.qualityLimitationReason !== 'none' ? ` (${l.qualityLimitationReason}-limited)` : '');
  }).join(', ') + ` [SDK activeLayers ${layers.activeLayers.join(',')}]`;
}

/** @param {{at: number, layers: any}[]} samples */
function describeSamples(samples) {
  return samples.slice(-5).map((sample) => `\n    +${((sample.at - started) / 1000).toFixed(1)} s ${describeLayers(sample.layers)}`).join('');
}

/** @param {any} inbound */
function describeInbound(inbound) {
  if (!inbound) return 'not announced or no peer connection';
  return `mid ${inbound.mid} subscribed=${inbound.subscribed} ${inbound.frameWidth}x${inbound.frameHeight} ` +
    `framesDecoded=${inbound.framesDecoded} asked=${inbound.videoQuality} ` +
    `stream_state=${inbound.streamState ?? 'none'}/${inbound.streamQuality ?? '-'}`;
}

/**
 * Six seconds of 48 kHz mono 16-bit WAV, looped by Chromium as the fake microphone: a
 * tone at half scale, its pitch moving every 250 ms (so noise suppression does not learn
 * it away) and never silent.
 * @returns {Buffer}
 */
function toneWav() {
  const rate = 48_000;
  const samples = rate * 6;
  const wav = Buffer.alloc(44 + samples * 2);
  wav.write('RIFF', 0);
  wav.writeUInt32LE(36 + samples * 2, 4);
  wav.write('WAVEfmt ', 8);
  wav.writeUInt32LE(16, 16); // fmt chunk size
  wav.writeUInt16LE(1, 20); // PCM
  wav.writeUInt16LE(1, 22); // mono
  wav.writeUInt32LE(rate, 24);
  wav.writeUInt32LE(rate * 2, 28); // bytes per second
  wav.writeUInt16LE(2, 32); // bytes per frame
  wav.writeUInt16LE(16, 34); // bits per sample
  wav.write('data', 36);
  wav.writeUInt32LE(samples * 2, 40);
  const pitches = [330, 440, 550, 392, 494, 659, 370, 587];
  let phase = 0;
  for (let i = 0; i < samples; i++) {
    const t = i / rate;
    phase += (2 * Math.PI * pitches[Math.floor(t / 0.25) % pitches.length]) / rate;
    wav.writeInt16LE(Math.round(Math.sin(phase) * 0.5 * 32767), 44 + i * 2);
  }
  return wav;
}

/**
 * Polls `predicate` every `intervalMs` until it returns true; fails after `timeoutMs`
 * with `detail()` appended. A TestFailure thrown by the predicate fails at once.
 * @param {string} what
 * @param {() => Promise<boolean>} predicate
 * @param {number} timeoutMs
 * @param {() => Promise<string>} [detail]
 * @param {number} [intervalMs]
 */
async function waitUntil(what, predicate, timeoutMs, detail, intervalMs = 250) {
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
    await sleep(intervalMs);
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
    if (response.status() >= 400 && !response.url().includes('/dev/token')) {
      logBrowser(`[${name}] HTTP ${response.status()} for ${response.request().method()} ${response.url()}`);
    }
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
    // Three pages share one browser; keep the hidden ones running at full speed.
    '--disable-background-timer-throttling',
    '--disable-renderer-backgrounding',
    '--disable-backgrounding-occluded-windows',
    '--autoplay-policy=no-user-gesture-required',
  ];
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
  if (!(await response.text()).includes('data-testid="join-room"')) {
    throw new TestFailure(`GET ${base}/ is not the room app (no join form); is the server built with the current web/?`);
  }
}

/** On failure: what each page knows, the camera's SDP, and the signaling it carried. */
async function printState() {
  const [ada] = state.people;
  for (const person of state.people) {
    if (person.page.isClosed()) continue;
    try {
      if (person === ada) {
        console.log(`${person.name} (${person.id}): camera ${JSON.stringify(await localCamera(person))}`);
        console.log(`  sends ${describeLayers(await outboundLayers(person))}`);
        if (state.cameraMid) console.log(await sdpExcerpt(person, state.cameraMid));
      } else if (ada) {
        console.log(`${person.name} (${person.id}): ${ada.name}'s camera ${describeInbound(await inboundVideo(person, ada))}`);
        const speakers = await readSpeakers(person);
        console.log(`  activeSpeakers now [${speakers.now}], ${speakers.log.length} changes: ` +
          JSON.stringify(speakers.log.slice(-5)));
      }
      const streamStates = await person.page.evaluate(() => /** @type {any} */ (window).qualityTestLog?.streamStates ?? []);
      if (streamStates.length) console.log(`  streamStateChanged: ${JSON.stringify(streamStates.slice(-6))}`);
    } catch (error) {
      console.log(`${person.name}: ${error.message}`);
    }
    console.log(`  signaling (last 25 of ${person.signals.length}):`);
    console.log(person.signals.slice(-25).map(({ at, direction, text }) =>
      `    ${((at - started) / 1000).toFixed(1)} s ${direction} ${text}`).join('\n') || '    (none)');
  }
}

async function printServerStats() {
  try {
    const response = await fetch(`${base}/stats`, { signal: AbortSignal.timeout(3_000) });
    const body = (await response.text()).replace(/\s+/g, ' ').trim();
    console.log(`server /stats (${response.status}): ${body.length > 600 ? `${body.slice(0, 600)}…` : body}`);
  } catch (error) {
    console.log(`server /stats: ${error?.cause?.message ?? error.message}`);
  }
}

async function failureScreenshots() {
  await mkdir(artifacts, { recursive: true });
  for (const { name, page } of state.people) {
    if (page.isClosed()) continue;
    const path = join(artifacts, `quality-failed-${name.toLowerCase()}.png`);
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
