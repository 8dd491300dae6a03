/**
 * A small typed event emitter on top of `EventTarget`: events are `CustomEvent`s whose
 * `detail` carries the payload, so both `addEventListener(name, e => e.detail)` and the
 * shorter `on(name, detail => ...)` work.
 *
 * @module manifold/events
 */

/**
 * @template {Record<string, any>} EventMap Event name → type of its `detail`.
 */
export class Emitter extends EventTarget {
  /** @type {Map<Function, Map<string, EventListener>>} */
  #wrapped = new Map();

  /**
   * Calls `listener(detail, event)` for every `name` event. Returns a function that
   * removes the listener again.
   *
   * @template {keyof EventMap & string} K
   * @param {K} name
   * @param {(detail: EventMap[K], event: CustomEvent<EventMap[K]>) => void} listener
   * @returns {() => void}
   */
  on(name, listener) {
    /** @type {EventListener} */
    const wrapper = (event) => {
      const custom = /** @type {CustomEvent<EventMap[K]>} */ (event);
      listener(custom.detail, custom);
    };
    let byName = this.#wrapped.get(listener);
    if (!byName) {
      byName = new Map();
      this.#wrapped.set(listener, byName);
    }
    // One registration per (name, listener), as with addEventListener.
    if (byName.has(name)) return () => this.off(name, listener);
    byName.set(name, wrapper);
    this.addEventListener(name, wrapper);
    return () => this.off(name, listener);
  }

  /**
   * Like `on`, but only for the next event.
   *
   * @template {keyof EventMap & string} K
   * @param {K} name
   * @param {(detail: EventMap[K], event: CustomEvent<EventMap[K]>) => void} listener
   * @returns {() => void}
   */
  once(name, listener) {
    const off = this.on(name, (detail, event) => {
      off();
      listener(detail, event);
    });
    return off;
  }

  /**
   * Removes a listener added with `on`.
   *
   * @template {keyof EventMap & string} K
   * @param {K} name
   * @param {(detail: EventMap[K], event: CustomEvent<EventMap[K]>) => void} listener
   */
  off(name, listener) {
    const byName = this.#wrapped.get(listener);
    const wrapper = byName?.get(name);
    if (!byName || !wrapper) return;
    this.removeEventListener(name, wrapper);
    byName.delete(name);
    if (byName.size === 0) this.#wrapped.delete(listener);
  }

  /**
   * Dispatches a `CustomEvent`. A listener that throws is reported by the browser as an
   * uncaught error but never interrupts the emitter.
   *
   * @protected
   * @template {keyof EventMap & string} K
   * @param {K} name
   * @param {EventMap[K]} detail
   */
  emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }
}
