// The one way the dashboard talks to the controller: the REST API under /api/v1, as the CLI uses it.
// Every request goes through `request`, so credentials are added in one place: when a token is stored
// in localStorage (key "scaleout.token") it is sent as `Authorization: Bearer <token>`.

import { h } from "./dom.js";

const TOKEN_KEY = "scaleout.token";
const API_PREFIX = "/api/v1/";

export class ApiError extends Error {
  constructor(message, status = 0, body = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.body = body;
  }
}

export function getToken() {
  try {
    return (localStorage.getItem(TOKEN_KEY) || "").trim() || null;
  } catch {
    return null; // storage disabled: behave as without a token
  }
}

export function setToken(token) {
  const clean = (token || "").trim().replace(/^bearer\s+/i, "");
  if (clean) localStorage.setItem(TOKEN_KEY, clean);
  else localStorage.removeItem(TOKEN_KEY);
}

function authHeaders(extra) {
  const headers = new Headers(extra || {});
  const token = getToken();
  if (token && !headers.has("Authorization")) headers.set("Authorization", `Bearer ${token}`);
  return headers;
}

export function apiUrl(path, params) {
  const url = new URL(path.startsWith("/") ? path : API_PREFIX + path, window.location.origin);
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, String(value));
  }
  return url;
}

function messageOf(status, statusText, body) {
  if (body && typeof body === "object" && typeof body.message === "string") return body.message;
  if (typeof body === "string" && body.trim()) return body.trim().slice(0, 300);
  return `${status} ${statusText || "error"}`;
}

// One HTTP exchange. `json` sends a JSON body, `body` anything fetch takes (FormData, Blob).
// Statuses in `allow` come back as results instead of errors. Returns {status, data, headers}.
export async function request(method, path, { params, headers, json, body, allow = [] } = {}) {
  const init = { method, headers: authHeaders(headers) };
  if (json !== undefined) {
    init.headers.set("Content-Type", "application/json");
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  let response;
  try {
    response = await fetch(apiUrl(path, params), init);
  } catch (err) {
    throw new ApiError(`Cannot reach the controller at ${window.location.origin} (${err.message}). ` +
      "Is `scaleout server start` still running?");
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!response.ok && !allow.includes(response.status)) {
    let message = messageOf(response.status, response.statusText, data);
    if (response.status === 401 || response.status === 403) {
      message += " — set an API token with the “API token” button at the bottom of the page.";
    }
    throw new ApiError(message, response.status, data);
  }
  return { status: response.status, data, headers: response.headers };
}

async function dataOf(method, path, options) {
  return (await request(method, path, options)).data;
}

export const api = {
  get: (path, options) => dataOf("GET", path, options),
  post: (path, json, options = {}) => dataOf("POST", path, { ...options, json }),
  put: (path, json, options = {}) => dataOf("PUT", path, { ...options, json }),
  postForm: (path, formData, options = {}) => dataOf("POST", path, { ...options, body: formData }),

  // A collection with the API's list conventions: equality filters, X-Limit/X-Skip/X-Sort-*.
  list(resource, { filters, limit = 0, skip = 0, sortKey, order = "desc" } = {}) {
    const headers = { "X-Limit": String(limit), "X-Skip": String(skip), "X-Sort-Order": order };
    if (sortKey) headers["X-Sort-Key"] = sortKey;
    return dataOf("GET", `${resource}/`, { params: filters, headers });
  },

  count: (resource, filters) => dataOf("GET", `${resource}/count`, { params: filters }),
};

// Have the browser save what `href` points at as `fileName`.
function clickDownload(href, fileName) {
  const link = document.createElement("a");
  link.href = href;
  link.download = fileName || "";
  link.click();
}

// Download a file from the API. Plain navigation when no token is set (the browser streams it);
// with a token the bytes are fetched with the header and handed to the browser as a blob.
export async function download(path, fileName) {
  const url = apiUrl(path);
  if (!getToken()) {
    clickDownload(url.toString(), fileName);
    return;
  }
  const response = await fetch(url, { headers: authHeaders() });
  if (!response.ok) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      // not JSON
    }
    throw new ApiError(messageOf(response.status, response.statusText, body), response.status, body);
  }
  const blobUrl = URL.createObjectURL(await response.blob());
  clickDownload(blobUrl, fileName);
  setTimeout(() => URL.revokeObjectURL(blobUrl), 10000);
}

// A "download" link to an API path (`path` relative to /api/v1/): its href works in a new tab or
// copied, a click downloads through `download` so a stored token is sent; failures go to `onError`.
export function downloadLink(path, fileName, onError, attrs = {}) {
  return h("a", {
    ...attrs,
    href: API_PREFIX + path,
    onclick: (e) => {
      e.preventDefault();
      download(path, fileName).catch(onError);
    },
  }, "download");
}

// Ask the user, then stop the session (running training tasks are aborted). null when they said no,
// else the request under way: it resolves to the server's message.
export function stopSession(session) {
  if (!window.confirm(`Stop session ${session.name}? Running training tasks are aborted.`)) return null;
  return api.post(`sessions/${session.session_id}/stop`, {}).then((reply) => reply.message || "Session stopped");
}
