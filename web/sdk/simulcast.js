/**
 * Simulcast of published video: how many layers a publication asks the server for
 * (`layers` in `publish`), what each layer is (its RID, downscale and bitrate cap), putting
 * those on the sender once the server's offer has given it one encoding per RID, and
 * turning layers on and off as the server's `dynacast` asks. Which sender carries which
 * publication is the negotiation's; the WHIP publisher takes its encodings from here too.
 *
 * @module manifold/simulcast
 */

/** @typedef {import('./tracks.js').LocalTrack} LocalTrack */
/** @typedef {import('./tracks.js').TrackSource} TrackSource */

/**
 * How a publication wants simulcast: `true` (as many layers as the capture's size
 * allows), `false` (one layer), or a number of layers, 1 to 3.
 * @typedef {boolean | 1 | 2 | 3} SimulcastOption
 */

/**
 * One layer: its RID, how much smaller than the capture it is, and its bitrate cap (bit/s).
 * @typedef {{rid: string, scaleResolutionDownBy: number, maxBitrate: number}} LayerEncoding
 */

/**
 * The layers of a simulcast publication, lowest first as the server lists them. Two
 * layers are for captures too small for three (360 to 539 pixels, e.g. 640×480), so their
 * low layer is half size rather than a quarter.
 * @type {Readonly<Record<2 | 3, readonly LayerEncoding[]>>}
 */
export const LAYER_ENCODINGS = Object.freeze({
  3: Object.freeze([
    { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
    { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
    { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
  ]),
  2: Object.freeze([
    { rid: 'q', scaleResolutionDownBy: 2, maxBitrate: 200_000 },
    { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
  ]),
});

/** The shorter side of a capture from which it gets three layers, and two. */
const THREE_LAYERS_FROM = 540;
const TWO_LAYERS_FROM = 360;

/**
 * How many layers to publish `track` with. Audio and screen shares always get one; camera
 * video by default, and any video with `true`, as many as its size allows (the shorter
 * side: 540 px or more → 3, 360 or more → 2, less → 1); other video by default one.
 *
 * @param {MediaStreamTrack} track
 * @param {TrackSource} source
 * @param {SimulcastOption | undefined} option
 * @returns {1 | 2 | 3}
 */
export function layerCount(track, source, option) {
  if (track.kind !== 'video' || source === 'screen' || source === 'screen_audio') return 1;
  if (option === false) return 1;
  if (option === 1 || option === 2 || option === 3) return option;
  if (option === undefined && source !== 'camera') return 1;
  const { width, height } = track.getSettings?.() ?? {};
  const side = Math.min(width || Infinity, height || Infinity);
  if (!Number.isFinite(side)) return 1;
  return side >= THREE_LAYERS_FROM ? 3 : side >= TWO_LAYERS_FROM ? 2 : 1;
}

/**
 * The RIDs of `layers` layers, lowest first; none for one layer.
 * @param {number} layers
 * @returns {string[]}
 */
export function layerRids(layers) {
  return (LAYER_ENCODINGS[/** @type {2 | 3} */ (layers)] ?? []).map((layer) => layer.rid);
}

/**
 * `sendEncodings` for `addTransceiver`, when the client offers simulcast itself (WHIP).
 * @param {2 | 3} layers
 * @returns {RTCRtpEncodingParameters[]}
 */
export function sendEncodings(layers) {
  return LAYER_ENCODINGS[layers].map((layer) => ({ ...layer }));
}

/**
 * Puts the publication's layers on its sender: each encoding the browser created from the
 * server's RIDs gets its downscale and bitrate cap, and is active if its RID is in
 * `local.activeLayers`. Sets `local.rids` to the RIDs the browser encodes, lowest first;
 * none if it made no simulcast encodings (then one layer is sent, and that is no error).
 * Call it between applying the server's offer and creating the answer, and again
 * whenever `activeLayers` changes. A browser refusing the parameters is only logged.
 *
 * @param {RTCRtpSender} sender
 * @param {LocalTrack} local
 * @returns {Promise<void>}
 */
export async function applyLayers(sender, local) {
  const layers = LAYER_ENCODINGS[/** @type {2 | 3} */ (local.layers)];
  const parameters = sender.getParameters();
  const encodings = parameters.encodings ?? [];
  if (!layers || encodings.length < 2 || !encodings.every((encoding) => encoding.rid)) {
    local.rids = [];
    local.activeLayers = [];
    return;
  }
  local.rids = encodings.map((encoding) => /** @type {string} */ (encoding.rid));
  local.activeLayers = local.activeLayers.filter((rid) => local.rids.includes(rid));
  let changed = false;
  for (const encoding of encodings) {
    const layer = layers.find((candidate) => candidate.rid === encoding.rid);
    const wanted = {
      active: local.activeLayers.includes(/** @type {string} */ (encoding.rid)),
      scaleResolutionDownBy: layer?.scaleResolutionDownBy ?? encoding.scaleResolutionDownBy ?? 1,
      maxBitrate: layer?.maxBitrate ?? encoding.maxBitrate,
    };
    for (const [key, value] of Object.entries(wanted)) {
      if (value === undefined || /** @type {any} */ (encoding)[key] === value) continue;
      /** @type {any} */ (encoding)[key] = value;
      changed = true;
    }
  }
  if (!changed) return;
  try {
    await sender.setParameters(parameters);
  } catch (error) {
    console.warn('manifold: the browser refused the simulcast parameters', error);
  }
}
