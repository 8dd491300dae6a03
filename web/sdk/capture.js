/**
 * Capturing local media: getUserMedia and getDisplayMedia, their failures turned into
 * ManifoldErrors (`media`) whose message a user can read. The Room's publish helpers and
 * the WHIP page both capture through here.
 *
 * @module manifold/capture
 */

import { ManifoldError, errorText } from './errors.js';

/**
 * What a capture asks for, as the sentences about it name it.
 * @typedef {'camera' | 'microphone' | 'camera and microphone' | 'screen'} CaptureKind
 */

/**
 * Runs getDisplayMedia (`screen`) or getUserMedia (anything else) with `constraints`.
 * Rejects with a ManifoldError whose `cause` is the browser's exception.
 *
 * @param {CaptureKind} what
 * @param {MediaStreamConstraints | DisplayMediaStreamOptions} constraints
 * @returns {Promise<MediaStream>}
 */
export async function captureMedia(what, constraints) {
  const devices = globalThis.navigator?.mediaDevices;
  if (!devices) {
    throw new ManifoldError('This page cannot capture media: it needs HTTPS (or localhost).', { code: 'media' });
  }
  try {
    return what === 'screen'
      ? await devices.getDisplayMedia(constraints)
      : await devices.getUserMedia(/** @type {MediaStreamConstraints} */ (constraints));
  } catch (error) {
    throw captureError(error, what);
  }
}

/**
 * @param {unknown} error
 * @param {CaptureKind} what
 * @returns {ManifoldError}
 */
function captureError(error, what) {
  // DOMException, or OverconstrainedError, which is not one in every browser.
  const name = error instanceof Error || error instanceof DOMException ? error.name : '';
  const device = what === 'camera and microphone' ? 'camera or microphone' : what;
  const access = what === 'screen' ? 'Screen sharing' : `${device.charAt(0).toUpperCase()}${device.slice(1)} access`;
  const text = {
    NotAllowedError: what === 'screen' ? 'Screen sharing was cancelled or blocked.' : `${access} was denied.`,
    NotFoundError: `No ${device} was found.`,
    NotReadableError: `The ${device} is in use by another program.`,
    OverconstrainedError: `The ${device} does not support the requested settings.`,
  }[name] ?? `${access} failed: ${errorText(error)}`;
  return new ManifoldError(text, { code: 'media', cause: error });
}
