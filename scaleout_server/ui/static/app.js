// Entry module of every dashboard page: loads the page's module (page_<name>.js, named by
// <main data-page>), runs the "live" indicator and the API token control.

import { getToken, setToken } from "./api.js";
import { errorBox, fmtAgo, h } from "./dom.js";
import { live } from "./poll.js";

function liveIndicator() {
  const el = document.getElementById("live");
  if (!el) return;
  let lastOk = null;
  let failure = null;
  const render = () => {
    if (failure) {
      el.className = "live down";
      el.textContent = "controller unreachable — retrying";
      el.title = failure;
    } else if (lastOk) {
      el.className = "live up";
      el.textContent = `live · updated ${fmtAgo(lastOk)}`;
      el.title = "The page refreshes itself from the REST API every 2 seconds";
    }
  };
  live.addEventListener("ok", (e) => {
    lastOk = e.detail.at;
    failure = null;
    render();
  });
  live.addEventListener("error", (e) => {
    const err = e.detail.error;
    // Only a lost connection makes the whole page stale; an API answer (4xx) is the page's business.
    if (err && err.status === 0) failure = err.message;
    render();
  });
  setInterval(render, 1000);
}

function tokenControl() {
  const button = document.getElementById("token-button");
  if (!button) return;
  const label = () => {
    button.textContent = getToken() ? "API token: set (change)" : "API token";
  };
  label();
  button.addEventListener("click", () => {
    const entered = window.prompt(
      "API token sent as 'Authorization: Bearer <token>' with every request (stored in this browser). " +
      "Leave empty to remove it.", getToken() || "");
    if (entered === null) return;
    setToken(entered);
    label();
    window.location.reload();
  });
}

async function main() {
  liveIndicator();
  tokenControl();
  const root = document.getElementById("app");
  const page = root.dataset.page;
  const ctx = { params: { ...root.dataset }, origin: window.location.origin };
  try {
    const module = await import(`./page_${page}.js`);
    root.replaceChildren();
    await module.mount(root, ctx);
    root.dataset.ready = "true";
  } catch (err) {
    console.error(err);
    root.replaceChildren(h("h1", {}, "Something went wrong"), errorBox(`This page could not be shown: ${err.message}`));
  }
}

main();
