/**
 * The room screen: connects a Room's events to the stage, the chat panel and the
 * control bar, and asks for each camera received the quality its tile's menu says
 * (`auto` by default: what the tile's size needs).
 * @module app/room-view
 */

import { errorText } from '../sdk/manifold.js';
import { ChatPanel } from './chat.js';
import { icon } from './icons.js';
import { Stage } from './stage.js';
import { $, copyText, h, toast } from './util.js';

/** @typedef {import('../sdk/manifold.js').Room} Room */
/** @typedef {import('../sdk/manifold.js').LocalTrack} LocalTrack */
/** @typedef {import('../sdk/manifold.js').RemoteTrack} RemoteTrack */
/** @typedef {import('../sdk/manifold.js').RemoteParticipant} RemoteParticipant */
/** @typedef {import('../sdk/manifold.js').ConnectionState} ConnectionState */
/** @typedef {import('../sdk/manifold.js').VideoQuality} VideoQuality */

/**
 * @typedef {object} InitialMedia
 * @property {MediaStreamTrack | null} camera A live camera track to publish, if on.
 * @property {MediaStreamTrack | null} microphone A live microphone track to publish, if on.
 */

const STATE_TEXT = {
  connecting: 'Connecting…',
  connected: 'Connected',
  reconnecting: 'Reconnecting…',
  disconnected: 'Disconnected',
};

export class RoomView {
  /** @type {Room} */
  room;
  /** @type {LocalTrack | null} */
  camera = null;
  /** @type {LocalTrack | null} */
  microphone = null;
  /** @type {LocalTrack | null} */
  screen = null;

  #stage;
  #chat;
  /** @type {(() => void)[]} */
  #cleanup = [];
  /** @type {Map<string, HTMLAudioElement>} track id → element */
  #audio = new Map();
  /** @type {Set<string>} buttons with an operation in flight */
  #busy = new Set();
  /** @type {Map<string, VideoQuality>} participant id → quality of their camera, if not auto */
  #qualities = new Map();
  /** @type {(reason: string, message: string) => void} */
  #onExit;

  /**
   * @param {Room} room
   * @param {{onExit: (reason: string, message: string) => void}} options
   */
  constructor(room, { onExit }) {
    this.room = room;
    this.#onExit = onExit;
    this.#stage = new Stage($('#stage'), {
      onQuality: (participantId, quality) => this.#chooseQuality(participantId, /** @type {VideoQuality} */ (quality)),
    });
    this.#chat = new ChatPanel($('#chat-panel'), {
      send: (text, to) => this.#sendChat(text, to),
      onUnread: (count) => {
        const button = $('#toggle-chat');
        button.dataset.unread = count ? String(Math.min(count, 99)) : '';
      },
    });
    this.#wireControls();
    this.#wireRoom();
    this.#renderInitial();
  }

  /**
   * Publishes what the join screen had on.
   * @param {InitialMedia} media
   */
  async publishInitial({ camera, microphone }) {
    const jobs = [];
    if (microphone) {
      jobs.push(this.#guard('mic', async () => {
        this.microphone = await this.room.publishTrack(microphone, { source: 'microphone', name: microphone.label });
      }));
    }
    if (camera) {
      jobs.push(this.#guard('camera', async () => {
        this.camera = await this.room.publishTrack(camera, { source: 'camera', name: camera.label });
      }));
    }
    // Show the camera before the server confirms it: it is ours already.
    if (camera) this.#stage.setVideo(this.room.localParticipant.id, camera);
    await Promise.all(jobs);
    this.#renderLocal();
  }

  /** Unhooks everything and empties the screen (the Room itself is left by the caller). */
  destroy() {
    for (const off of this.#cleanup) off();
    this.#cleanup = [];
    this.#stage.clear();
    this.#chat.clear();
    for (const audio of this.#audio.values()) {
      audio.srcObject = null;
      audio.remove();
    }
    this.#audio.clear();
  }

  async toggleMicrophone() {
    await this.#guard('mic', async () => {
      if (!this.microphone) {
        this.microphone = await this.room.publishMicrophone();
      } else {
        await this.room.setMuted(this.microphone, !this.microphone.muted);
      }
    });
  }

  async toggleCamera() {
    await this.#guard('camera', async () => {
      if (!this.camera) {
        const camera = await this.room.publishCamera();
        this.camera = camera;
        this.#stage.setVideo(this.room.localParticipant.id, camera.mediaStreamTrack);
      } else {
        const camera = this.camera;
        this.camera = null;
        this.#stage.setVideo(this.room.localParticipant.id, null);
        await this.room.unpublish(camera);
      }
    });
  }

  async toggleScreen() {
    await this.#guard('screen', async () => {
      if (!this.screen) {
        this.#showScreen(await this.room.publishScreen());
      } else {
        const screen = this.screen;
        this.screen = null;
        this.#stage.removeScreen(`local:${screen.cid}`);
        await this.room.unpublish(screen);
      }
    });
  }

  /**
   * Shares `track` as the screen, as if picked in the browser's dialog. For tests and for
   * browsers where getDisplayMedia cannot run (headless).
   * @param {MediaStreamTrack} track
   * @returns {Promise<LocalTrack | null>}
   */
  async publishScreenTrack(track) {
    await this.#guard('screen', async () => {
      if (this.screen) await this.room.unpublish(this.screen);
      this.#showScreen(await this.room.publishTrack(track, { source: 'screen', name: track.label }));
    });
    return this.screen;
  }

  async leave() {
    await this.room.leave();
  }

  // ---------------------------------------------------------------------------------

  /**
   * The quality menu on a participant's tile changed.
   * @param {string} participantId
   * @param {VideoQuality} quality
   */
  #chooseQuality(participantId, quality) {
    if (quality === 'auto') this.#qualities.delete(participantId);
    else this.#qualities.set(participantId, quality);
    // The video on the tile: the camera, or another video that is not a screen share.
    const participant = this.room.participants.get(participantId);
    const videos = [...participant?.tracks.values() ?? []].filter((t) => t.kind === 'video' && t.source !== 'screen' && t.subscribed);
    const shown = videos.find((t) => t.source === 'camera') ?? videos[0];
    if (shown) this.#askQuality(participantId, shown, { explicit: true });
  }

  /**
   * Asks for a participant's camera in the quality its tile's menu says.
   * @param {string} participantId
   * @param {RemoteTrack} track
   * @param {{explicit?: boolean}} [options] `explicit`: chosen by the user, so a refusal is shown.
   */
  #askQuality(participantId, track, { explicit = false } = {}) {
    const quality = this.#qualities.get(participantId) ?? 'auto';
    const element = this.#stage.videoElement(participantId);
    const options = quality === 'auto' && element ? { element } : undefined;
    this.room.setVideoQuality(track.id, quality === 'auto' && !element ? 'high' : quality, options).catch((error) => {
      console.warn('manifold: video quality', quality, errorText(error));
      if (explicit) toast(`Could not change the video quality: ${errorText(error)}`, { kind: 'error' });
    });
  }

  /** @param {LocalTrack} screen */
  #showScreen(screen) {
    this.screen = screen;
    this.#stage.addScreen(`local:${screen.cid}`, this.room.localParticipant, screen.mediaStreamTrack, { local: true });
    this.#renderLocal();
  }

  /**
   * Runs one control's operation, with its button disabled meanwhile and failures
   * shown as a toast.
   * @param {'mic' | 'camera' | 'screen'} control
   * @param {() => Promise<void>} operation
   */
  async #guard(control, operation) {
    if (this.#busy.has(control)) return;
    this.#busy.add(control);
    this.#renderLocal();
    try {
      await operation();
    } catch (error) {
      // Cancelling the screen picker is not worth a red toast.
      const cancelled = control === 'screen' && /cancelled/i.test(errorText(error));
      toast(errorText(error), { kind: cancelled ? 'info' : 'error' });
    } finally {
      this.#busy.delete(control);
      this.#renderLocal();
    }
  }

  /**
   * @param {string} text
   * @param {string | null} to
   */
  async #sendChat(text, to) {
    try {
      await this.room.sendChat(text, { to });
    } catch (error) {
      const requestId = /** @type {any} */ (error)?.requestId;
      if (typeof requestId === 'number') this.#chat.markFailed(requestId, errorText(error));
      throw error;
    }
  }

  #wireControls() {
    /**
     * @param {string} selector
     * @param {() => void} handler
     */
    const click = (selector, handler) => {
      const element = $(selector);
      element.addEventListener('click', handler);
      this.#cleanup.push(() => element.removeEventListener('click', handler));
    };
    click('#toggle-mic', () => this.toggleMicrophone());
    click('#toggle-camera', () => this.toggleCamera());
    click('#toggle-screen', () => this.toggleScreen());
    click('#toggle-chat', () => this.#setChatOpen(!this.#chat.open));
    click('#chat-close', () => this.#setChatOpen(false));
    click('#copy-link', async () => {
      const link = `${location.origin}/?room=${encodeURIComponent(this.room.name)}`;
      const ok = await copyText(link);
      toast(ok ? 'Join link copied' : `Copy this link: ${link}`, { kind: ok ? 'success' : 'info', ms: ok ? 2500 : 8000 });
    });
    click('#leave', () => this.leave());
    $('#chat-close').innerHTML = icon('close', { size: 18 });
    $('#toggle-chat').innerHTML = `${icon('chat')}<span class="control-label">Chat</span>`;
    $('#copy-link').innerHTML = `${icon('link')}<span class="control-label">Invite</span>`;
    $('#toggle-chat').title = 'Show or hide the chat';
    $('#copy-link').title = 'Copy the join link';
    $('#leave').innerHTML = `${icon('leave', { size: 18 })}<span>Leave</span>`;
    $('#leave').title = 'Leave the room';
    // Small screens start with the chat hidden.
    this.#setChatOpen(window.matchMedia('(min-width: 900px)').matches);

    const onKey = (/** @type {KeyboardEvent} */ event) => {
      if (!(event.ctrlKey || event.metaKey) || event.altKey || event.shiftKey) return;
      if (event.key === 'd') {
        event.preventDefault();
        this.toggleMicrophone();
      } else if (event.key === 'e') {
        event.preventDefault();
        this.toggleCamera();
      }
    };
    window.addEventListener('keydown', onKey);
    this.#cleanup.push(() => window.removeEventListener('keydown', onKey));
  }

  /** @param {boolean} open */
  #setChatOpen(open) {
    this.#chat.open = open;
    $('#room-screen').dataset.chat = open ? 'open' : 'closed';
    const button = $('#toggle-chat');
    button.setAttribute('aria-pressed', String(open));
    button.dataset.active = String(open);
    if (open) this.#chat.focus();
    // The stage changed size.
    requestAnimationFrame(() => this.#stage.layout());
  }

  #wireRoom() {
    const room = this.room;
    /** @type {(() => void)[]} */
    const offs = [
      room.on('participantJoined', ({ participant }) => {
        this.#stage.upsertParticipant(participant, { quality: this.#qualities.get(participant.id) });
        this.#refreshMic(participant);
        this.#refreshPeople();
        this.#chat.notice(`${participant.name} joined`);
        toast(`${participant.name} joined`);
      }),
      room.on('participantLeft', ({ participant, reason }) => {
        this.#stage.removeParticipant(participant.id);
        this.#qualities.delete(participant.id);
        this.#refreshPeople();
        const why = reason === 'timeout' ? ' (connection lost)' : '';
        this.#chat.notice(`${participant.name} left${why}`);
        toast(`${participant.name} left${why}`);
      }),
      room.on('participantUpdated', ({ participant }) => {
        if (participant.isLocal) this.#stage.upsertParticipant(participant, { local: true });
        else this.#stage.upsertParticipant(participant);
        this.#refreshPeople();
      }),
      room.on('trackPublished', ({ participant }) => this.#refreshMic(participant)),
      room.on('trackUnpublished', ({ participant }) => this.#refreshMic(participant)),
      room.on('trackMuted', ({ participant, track, muted }) => {
        if (participant.isLocal) {
          this.#renderLocal();
          return;
        }
        const remote = /** @type {RemoteParticipant} */ (participant);
        if (track.source === 'microphone') this.#refreshMic(remote);
        else if (track.kind === 'video' && track.source !== 'screen' && remote.trackBySource('camera') === track) {
          this.#stage.setVideoMuted(remote.id, muted);
        }
      }),
      room.on('trackSubscribed', ({ participant, track, mediaStreamTrack }) => {
        if (!participant) return;
        if (track.kind === 'audio') {
          this.#playAudio(track.id, mediaStreamTrack);
        } else if (track.source === 'screen') {
          this.#stage.addScreen(track.id, participant, mediaStreamTrack);
        } else {
          this.#stage.setVideo(participant.id, mediaStreamTrack);
          this.#stage.setVideoMuted(participant.id, track.muted);
          this.#stage.setPaused({ participantId: participant.id }, track.streamState === 'paused');
          this.#askQuality(participant.id, track);
        }
      }),
      room.on('trackUnsubscribed', ({ participant, track, mediaStreamTrack }) => {
        if (track.kind === 'audio') {
          this.#stopAudio(track.id);
        } else if (track.source === 'screen') {
          this.#stage.removeScreen(track.id);
        } else if (participant) {
          this.#stage.setPaused({ participantId: participant.id }, false);
          // Only if it is still the one shown (a newer camera may have taken its place).
          const tile = document.querySelector(`[data-testid="tile"][data-participant="${participant.id}"] video`);
          const shown = /** @type {HTMLVideoElement | null} */ (tile)?.srcObject;
          if (!(shown instanceof MediaStream) || shown.getTracks().includes(/** @type {MediaStreamTrack} */ (mediaStreamTrack))) {
            this.#stage.setVideo(participant.id, null);
          }
        }
      }),
      room.on('localTrackUnpublished', ({ track }) => {
        // Ended outside our buttons: "Stop sharing" in the browser, a device unplugged.
        if (track === this.screen) {
          this.screen = null;
          this.#stage.removeScreen(`local:${track.cid}`);
        } else if (track === this.camera) {
          this.camera = null;
          this.#stage.setVideo(this.room.localParticipant.id, null);
        } else if (track === this.microphone) {
          this.microphone = null;
        }
        this.#renderLocal();
      }),
      room.on('streamStateChanged', ({ participant, track, state }) => {
        const paused = state === 'paused';
        if (track.source === 'screen') this.#stage.setPaused({ screen: track.id }, paused);
        else if (participant) this.#stage.setPaused({ participantId: participant.id }, paused);
      }),
      room.on('activeSpeakersChanged', ({ activeSpeakers }) => this.#stage.setSpeaking(activeSpeakers)),
      room.on('chat', (message) => this.#chat.add(message, room.localParticipant.id)),
      room.on('connectionStateChanged', ({ state }) => this.#renderState(state)),
      room.on('reconnecting', ({ cause }) => {
        this.#showBanner(cause === 'media' ? 'Media connection interrupted. Reconnecting…' : 'Connection lost. Reconnecting…');
      }),
      room.on('reconnected', ({ failover, url, previousId }) => {
        this.#showBanner('');
        if (!failover) {
          toast('Reconnected', { kind: 'success', ms: 2000 });
          return;
        }
        // Joined afresh on another server: our tile has a new participant id.
        const me = room.localParticipant;
        if (previousId) this.#stage.removeParticipant(previousId);
        this.#stage.upsertParticipant(me, { local: true });
        if (this.camera) this.#stage.setVideo(me.id, this.camera.mediaStreamTrack);
        this.#renderLocal();
        toast(`Our server went away; reconnected through ${new URL(url).host}`, { kind: 'success', ms: 4000 });
      }),
      room.on('disconnected', ({ reason, message }) => {
        this.#showBanner('');
        this.#onExit(reason, message);
      }),
      room.on('error', ({ error }) => {
        console.warn('manifold:', error.code, error.message);
        // A chat message refused after it was shown as sent.
        if (typeof error.requestId === 'number' && this.#chat.markFailed(error.requestId, error.message)) return;
        toast(error.message, { kind: 'error' });
      }),
    ];
    this.#cleanup.push(...offs);
  }

  #renderInitial() {
    const me = this.room.localParticipant;
    this.#stage.upsertParticipant(me, { local: true });
    for (const participant of this.room.participants.values()) {
      this.#stage.upsertParticipant(participant);
      this.#refreshMic(participant);
      for (const track of participant.tracks.values()) {
        if (track.subscribed && track.mediaStreamTrack) {
          if (track.kind === 'audio') this.#playAudio(track.id, track.mediaStreamTrack);
          else if (track.source === 'screen') this.#stage.addScreen(track.id, participant, track.mediaStreamTrack);
          else {
            this.#stage.setVideo(participant.id, track.mediaStreamTrack);
            this.#askQuality(participant.id, track);
          }
        }
      }
    }
    $('#room-name').textContent = this.room.name;
    $('#room-meta').hidden = false;
    this.#renderState(this.room.connectionState);
    this.#refreshPeople();
    this.#renderLocal();
    this.#stage.setSpeaking(this.room.activeSpeakers);
  }

  /** Updates the control bar and the local tile from our own tracks. */
  #renderLocal() {
    const micOn = Boolean(this.microphone && !this.microphone.muted);
    const cameraOn = Boolean(this.camera);
    const sharing = Boolean(this.screen);
    setControl($('#toggle-mic'), {
      on: micOn,
      busy: this.#busy.has('mic'),
      html: `${icon(micOn ? 'mic' : 'micOff')}<span class="control-label">${micOn ? 'Mute' : 'Unmute'}</span>`,
      title: micOn ? 'Mute microphone (Ctrl+D)' : 'Unmute microphone (Ctrl+D)',
    });
    setControl($('#toggle-camera'), {
      on: cameraOn,
      busy: this.#busy.has('camera'),
      html: `${icon(cameraOn ? 'camera' : 'cameraOff')}<span class="control-label">${cameraOn ? 'Stop video' : 'Start video'}</span>`,
      title: cameraOn ? 'Turn camera off (Ctrl+E)' : 'Turn camera on (Ctrl+E)',
    });
    const canShare = typeof navigator.mediaDevices?.getDisplayMedia === 'function';
    setControl($('#toggle-screen'), {
      on: sharing,
      busy: this.#busy.has('screen'),
      html: `${icon(sharing ? 'screenOff' : 'screen')}<span class="control-label">${sharing ? 'Stop sharing' : 'Share screen'}</span>`,
      title: canShare ? (sharing ? 'Stop sharing your screen' : 'Share your screen') : 'This browser cannot share its screen',
      offIsNormal: true,
    });
    if (!canShare && !sharing) /** @type {HTMLButtonElement} */ ($('#toggle-screen')).disabled = true;
    this.#stage.setMicMuted(this.room.localParticipant.id, !micOn);
  }

  /** @param {ConnectionState} state */
  #renderState(state) {
    const pill = $('#connection-state');
    pill.dataset.state = state;
    $('.state-text', pill).textContent = STATE_TEXT[state];
  }

  /** @param {string} text */
  #showBanner(text) {
    const banner = $('#banner');
    banner.textContent = text;
    banner.hidden = !text;
  }

  /** @param {RemoteParticipant} participant */
  #refreshMic(participant) {
    const mic = participant.trackBySource('microphone');
    this.#stage.setMicMuted(participant.id, !mic || mic.muted);
  }

  #refreshPeople() {
    const count = this.room.participants.size + 1;
    $('#people-count').innerHTML = `${icon('users', { size: 18 })}<span>${count} ${count === 1 ? 'person' : 'people'}</span>`;
    this.#chat.setRecipients([...this.room.participants.values()].map((p) => ({ id: p.id, name: p.name })));
  }

  /**
   * @param {string} trackId
   * @param {MediaStreamTrack} track
   */
  #playAudio(trackId, track) {
    this.#stopAudio(trackId);
    const audio = /** @type {HTMLAudioElement} */ (h('audio', { autoplay: true, 'data-track': trackId }));
    audio.srcObject = new MediaStream([track]);
    $('#audio-sink').append(audio);
    this.#audio.set(trackId, audio);
    audio.play().catch(() => {
      // Autoplay refused (no click on this page yet): play on the next interaction.
      this.#showBanner('Click anywhere to hear the others.');
      const resume = () => {
        for (const element of this.#audio.values()) element.play().catch(() => {});
        this.#showBanner('');
      };
      document.addEventListener('click', resume, { once: true });
    });
  }

  /** @param {string} trackId */
  #stopAudio(trackId) {
    const audio = this.#audio.get(trackId);
    if (!audio) return;
    audio.srcObject = null;
    audio.remove();
    this.#audio.delete(trackId);
  }
}

/** The markup each control button shows, to skip needless re-renders. */
/** @type {WeakMap<HTMLElement, string>} */
const rendered = new WeakMap();

/**
 * @param {HTMLElement} button
 * @param {{on: boolean, busy: boolean, html: string, title: string, offIsNormal?: boolean}} state
 *   `offIsNormal`: off is not a warning state (screen sharing is usually off).
 */
function setControl(button, { on, busy, html, title, offIsNormal = false }) {
  if (rendered.get(button) !== html) {
    button.innerHTML = html;
    rendered.set(button, html);
  }
  button.title = title;
  button.setAttribute('aria-pressed', String(on));
  button.dataset.active = String(on);
  button.dataset.warn = String(!on && !offIsNormal);
  button.setAttribute('aria-busy', String(busy));
  /** @type {HTMLButtonElement} */ (button).disabled = busy;
}
