// Small DOM helpers and formatters shared by the pages: building elements without HTML strings
// (so record values are never interpreted as markup), tables, badges, empty states, errors.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

function applyAttrs(el, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "dataset") {
      for (const [key, v] of Object.entries(value)) {
        if (v !== null && v !== undefined) el.dataset[key] = String(v);
      }
    } else if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "class") {
      el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
}

// h("a", {href: "/x", class: "btn"}, "text", child...) -> element
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  applyAttrs(el, attrs);
  append(el, children);
  return el;
}

export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  applyAttrs(el, attrs);
  append(el, children);
  return el;
}

// -- formatting -------------------------------------------------------------------------------------
export function parseTime(value) {
  if (!value) return null;
  const t = new Date(value);
  return Number.isNaN(t.getTime()) ? null : t;
}

export function fmtTime(value) {
  const t = parseTime(value);
  if (!t) return "—";
  const pad = (n) => String(n).padStart(2, "0");
  return `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())} ` +
    `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`;
}

export function fmtAgo(value, now = Date.now()) {
  const t = parseTime(value);
  if (!t) return "never";
  const s = Math.round((now - t.getTime()) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function fmtSeconds(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "—";
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function fmtBytes(n) {
  if (typeof n !== "number" || !Number.isFinite(n)) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

export function fmtNumber(value, digits = 4) {
  if (typeof value !== "number" || !Number.isFinite(value)) return value === null || value === undefined ? "—" : String(value);
  if (Number.isInteger(value)) return String(value);
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) return value.toExponential(3);
  return value.toFixed(digits);
}

// A number with at most 6 significant digits and no trailing zeros (telemetry, attributes).
export function fmtCompact(value) {
  return typeof value === "number" && Number.isFinite(value) ? String(Number(value.toPrecision(6))) : fmtValue(value);
}

export function fmtValue(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "number") return fmtCompact(value);
  if (typeof value === "string") return value;
  return JSON.stringify(value);
}

// A shortened id that shows (and copies) the whole id.
export function shortId(id, { href } = {}) {
  if (!id) return "—";
  const text = String(id).length > 10 ? `${String(id).slice(0, 8)}…` : String(id);
  return href ? h("a", { href, title: id, class: "id" }, text) : h("span", { title: id, class: "id" }, text);
}

// -- building blocks ---------------------------------------------------------------------------------
const STATUS_CLASS = {
  online: "ok", finished: "ok", completed: "ok", active: "ok", idle: "muted",
  running: "busy", validating: "busy", pending: "busy", created: "muted", new: "muted",
  offline: "muted", stopped: "warn", interrupted: "warn", timeout: "warn",
  failed: "bad", error: "bad",
};

export function badge(status) {
  const label = status === null || status === undefined || status === "" ? "—" : String(status);
  return h("span", { class: ["badge", STATUS_CLASS[label.toLowerCase()] || "muted"], dataset: { status: label } }, label);
}

// columns: [{label, cell: row => node|string, class?}]; rows: records.
export function table(columns, rows, { empty, rowAttrs, caption, testid } = {}) {
  if (!rows.length && empty) return emptyState(empty);
  return h("div", { class: "table-wrap" },
    h("table", { "data-testid": testid },
      caption ? h("caption", {}, caption) : null,
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.class }, c.label)))),
      h("tbody", {}, rows.map((row, i) => h("tr", rowAttrs ? rowAttrs(row, i) : {},
        columns.map((c) => h("td", { class: c.class, "data-col": c.key || null }, cellValue(c.cell(row, i)))))))));
}

function cellValue(value) {
  if (value === null || value === undefined || value === "") return "—";
  return value;
}

// An empty state: what is missing and, in <code>, the command that fixes it. `message` may be a
// string or [text, {code: "..."}, text...].
export function emptyState(message) {
  const parts = Array.isArray(message) ? message : [message];
  return h("p", { class: "empty" }, parts.map((p) => (p && typeof p === "object" && p.code ? h("code", {}, p.code) : p)));
}

export function errorBox(message) {
  return h("div", { class: "error", role: "alert" }, message);
}

export function section(title, ...children) {
  return h("section", { class: "card" }, title ? h("h2", {}, title) : null, ...children);
}

// Key/value pairs as small chips (client attributes, telemetry).
export function chips(obj) {
  const entries = Object.entries(obj || {});
  if (!entries.length) return "—";
  return h("span", { class: "chips" }, entries.map(([k, v]) => h("span", { class: "chip", title: `${k}: ${fmtValue(v)}` },
    h("b", {}, k), " ", fmtValue(v))));
}

// Replace the children of `el` only when the new content differs, so a periodic refresh does not
// reset scroll, selection or an open <details>.
export function update(el, ...children) {
  const next = document.createElement("div");
  append(next, children);
  if (next.innerHTML !== el.innerHTML) el.replaceChildren(...next.childNodes);
}

// A place for a page's current error: `show(err)` puts the message there, `clear()` removes it.
export function errorSlot() {
  const el = h("div", { class: "error-slot", "aria-live": "polite" });
  return {
    el,
    show(err) {
      update(el, errorBox(err && err.message ? err.message : String(err)));
    },
    clear() {
      if (el.firstChild) el.replaceChildren();
    },
  };
}

// A progress bar: `done` of `total` (with the numbers as data attributes).
export function progress(done, total) {
  const share = total > 0 ? Math.min(1, done / total) : 0;
  return h("div", { class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": total,
    "aria-valuenow": done, dataset: { done, total } }, h("span", { style: `width:${(share * 100).toFixed(1)}%` }));
}

export function clientStartHint(origin) {
  return `scaleout client start --api-url ${origin} -n site-1`;
}
