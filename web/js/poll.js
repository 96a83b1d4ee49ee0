// A poller that runs only while it is started, the page is visible, and `when()` says so; one
// call at a time (a slow answer is not stacked up).

export function poller(fn, ms, { when = () => true } = {}) {
  let running = false;
  let timer = null;
  let busy = false;

  async function tick() {
    timer = null;
    if (!running) return;
    if (!busy && document.visibilityState === "visible" && when()) {
      busy = true;
      try {
        await fn();
      } catch (e) {
        console.warn("poll failed", e);
      } finally {
        busy = false;
      }
    }
    if (running && timer === null) timer = setTimeout(tick, ms);
  }

  return {
    start({ now = true } = {}) {
      if (running) return;
      running = true;
      if (now) tick();
      else timer = setTimeout(tick, ms);
    },
    stop() {
      running = false;
      clearTimeout(timer);
      timer = null;
    },
    get running() {
      return running;
    },
  };
}
