// Sessions: every training session, newest first, each linking to its page.

import { api } from "./api.js";
import { badge, errorSlot, fmtSeconds, fmtTime, h, parseTime, section, shortId, table, update } from "./dom.js";
import { every, POLL_MS } from "./poll.js";

const PAGE_SIZE = 100;

function sessionSeconds(s, now = Date.now()) {
  const start = parseTime(s.started_at);
  if (!start) return null;
  const end = parseTime(s.finished_at);
  if (end) return (end - start) / 1000;
  return String(s.status).toLowerCase() === "running" ? (now - start) / 1000 : null;
}

export async function mount(root) {
  const errors = errorSlot();
  const body = h("div");
  root.append(h("h1", {}, "Sessions"), errors.el, body);

  async function refresh() {
    const sessions = await api.list("sessions", { limit: PAGE_SIZE, sortKey: "committed_at" });
    errors.clear();
    const more = sessions.count > sessions.result.length
      ? h("p", { class: "muted" }, `Showing the newest ${sessions.result.length} of ${sessions.count} sessions.`) : null;
    update(body, section(null, table([
      { label: "Name", cell: (s) => h("a", { href: `/sessions/${s.session_id}` }, s.name) },
      { label: "Id", cell: (s) => shortId(s.session_id) },
      { label: "Status", key: "status", cell: (s) => badge(s.status) },
      { label: "Rounds", cell: (s) => String(s.session_config?.rounds ?? "—"), class: "num" },
      { label: "Aggregator", cell: (s) => s.session_config?.aggregator },
      { label: "Created", cell: (s) => fmtTime(s.committed_at) },
      { label: "Started", cell: (s) => fmtTime(s.started_at) },
      { label: "Duration", cell: (s) => fmtSeconds(sessionSeconds(s)), class: "num" },
      { label: "Error", cell: (s) => (s.error ? h("span", { class: "bad-text" }, s.error) : "") },
    ], sessions.result, {
      testid: "sessions",
      rowAttrs: (s) => ({ dataset: { sessionId: s.session_id } }),
      empty: ["No sessions yet: start one on the ", h("a", { href: "/actions" }, "Actions"), " page or with ",
        { code: "scaleout session start --rounds 3" }, "."],
    }), more));
  }

  every(POLL_MS, refresh, { onError: (err) => errors.show(err) });
}
