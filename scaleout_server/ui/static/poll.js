// Live updates by polling: a page registers a refresh function that runs now and then every few
// seconds (never two at once, paused while the tab is hidden). Each outcome is announced on `live`,
// which drives the "updated … ago" indicator in the header.

export const POLL_MS = 2000;

export const live = new EventTarget();

function announce(type, detail) {
  live.dispatchEvent(new CustomEvent(type, { detail }));
}

// Run `refresh()` now and every `ms` after it finished. Returns {now(), stop()}: `now()` refreshes
// at once (after an action), `stop()` ends the loop.
export function every(ms, refresh, { onError } = {}) {
  let timer = null;
  let running = false;
  let again = false;
  let stopped = false;

  async function tick() {
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    clearTimeout(timer);
    if (document.hidden) {
      timer = null; // resumed by the visibilitychange listener
      return;
    }
    running = true;
    try {
      await refresh();
      announce("ok", { at: Date.now() });
    } catch (err) {
      announce("error", { error: err });
      if (onError) onError(err);
      else console.error(err);
    } finally {
      running = false;
    }
    if (stopped) return;
    if (again) {
      again = false;
      tick();
    } else {
      timer = setTimeout(tick, ms);
    }
  }

  function onVisibility() {
    if (!document.hidden && timer === null && !running) tick();
  }

  document.addEventListener("visibilitychange", onVisibility);
  tick();
  return {
    now: tick,
    stop() {
      stopped = true;
      clearTimeout(timer);
      document.removeEventListener("visibilitychange", onVisibility);
    },
  };
}
