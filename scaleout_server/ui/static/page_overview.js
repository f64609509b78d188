// Overview: clients online/offline, combiners, the running session with its current round and
// progress, the latest model and the active compute package, and the most recent sessions.

import { api } from "./api.js";
import {
  badge, clientStartHint, emptyState, errorSlot, fmtAgo, fmtBytes, fmtSeconds, fmtTime, h, progress, section, shortId,
  table, update,
} from "./dom.js";
import { every, POLL_MS } from "./poll.js";
import { isFinalSession, roundDuration, sessionProgress } from "./rounds.js";

const SHOWN_CLIENTS = 8;

function clientsCard(online, total, onlineList, origin) {
  const offline = Math.max(0, total - online);
  const numbers = h("div", { class: "stats" },
    h("div", { class: "stat", "data-testid": "clients-online" }, h("b", {}, String(online)), "online"),
    h("div", { class: "stat muted", "data-testid": "clients-offline" }, h("b", {}, String(offline)), "offline"));
  let body;
  if (total === 0) {
    body = emptyState(["No clients connected yet: start one from your project folder with ",
      { code: clientStartHint(origin) }, "."]);
  } else if (online === 0) {
    body = emptyState(["No client is online right now. Start one with ", { code: clientStartHint(origin) }, "."]);
  } else {
    body = h("ul", { class: "plain" }, onlineList.map((c) => h("li", {}, badge(c.status), " ", h("b", {}, c.name),
      h("span", { class: "muted" }, ` · seen ${fmtAgo(c.last_seen)}`))),
    online > onlineList.length ? h("li", { class: "muted" }, `… and ${online - onlineList.length} more`) : null);
  }
  return section("Clients", numbers, body, h("p", {}, h("a", { href: "/clients" }, "All clients →")));
}

function trainingCard(session, rounds, lastSession) {
  if (!session) {
    const last = lastSession
      ? h("p", {}, "Last session: ", h("a", { href: `/sessions/${lastSession.session_id}` }, lastSession.name), " ",
        badge(lastSession.status), h("span", { class: "muted" }, ` · ${fmtTime(lastSession.finished_at || lastSession.committed_at)}`))
      : null;
    return section("Training",
      h("p", { "data-testid": "no-running-session" }, "No session is running."),
      last,
      emptyState(["Start one on the ", h("a", { href: "/actions" }, "Actions"), " page or with ",
        { code: "scaleout session start --rounds 3" }, "."]));
  }
  const { done, total } = sessionProgress(session, rounds);
  const current = rounds[rounds.length - 1];
  return section("Training",
    h("p", { "data-testid": "running-session" }, h("a", { href: `/sessions/${session.session_id}` }, h("b", {}, session.name)),
      " ", badge(session.status)),
    h("p", { class: "big", "data-testid": "current-round" },
      current ? `Round ${current.round_number} of ${total}` : `Starting (0 of ${total} rounds)`,
      current ? [" ", badge(current.status), h("span", { class: "muted" }, ` · ${fmtSeconds(roundDuration(current))}`)] : null),
    progress(done, total),
    h("p", { class: "muted" }, `${done} of ${total} rounds done · aggregator ${session.session_config?.aggregator || "—"}`));
}

function modelCard(model, origin) {
  if (!model) {
    return section("Latest model", emptyState(["No model yet: upload a seed model on the ",
      h("a", { href: "/models" }, "Models"), " page or with ", { code: "scaleout model set-active --file seed.npz" }, "."]));
  }
  return section("Latest model",
    h("p", { class: "big", "data-testid": "latest-model" }, shortId(model.model_id)),
    h("dl", { class: "facts" },
      h("dt", {}, "created"), h("dd", {}, fmtTime(model.committed_at)),
      h("dt", {}, "from"), h("dd", {}, model.session_id
        ? [h("a", { href: `/sessions/${model.session_id}` }, origin.session?.name || shortId(model.session_id)),
          origin.round ? `, round ${origin.round.round_number}` : ""]
        : "seed (uploaded)"),
      h("dt", {}, "size"), h("dd", {}, fmtBytes(model.size))),
    h("p", {}, h("a", { href: "/models" }, "Model trail →")));
}

function packageCard(pkg) {
  if (!pkg) {
    return section("Compute package", emptyState(["No compute package is active. Clients started with ",
      { code: "--local-package" }, " do not need one; others wait for it. Upload one on the ",
      h("a", { href: "/packages" }, "Packages"), " page or with ",
      { code: "scaleout package set-active --file package.tgz -n v1" }, "."]));
  }
  return section("Compute package",
    h("p", { class: "big", "data-testid": "active-package" }, pkg.name),
    h("dl", { class: "facts" },
      h("dt", {}, "file"), h("dd", {}, pkg.file_name),
      h("dt", {}, "checksum"), h("dd", {}, shortId(pkg.checksum)),
      h("dt", {}, "uploaded"), h("dd", {}, fmtTime(pkg.committed_at))));
}

function combinersCard(combiners, origin) {
  return section("Combiners", table([
    { label: "Name", cell: (c) => h("span", { title: `clients dial ${c.public_hostname || c.host}:${c.port}` }, c.name) },
    { label: "Status", cell: (c) => badge(c.status) },
    { label: "Clients", cell: (c) => String(c.load ?? 0), class: "num" },
    { label: "Last seen", cell: (c) => fmtAgo(c.last_seen) },
  ], combiners, {
    testid: "combiners",
    empty: ["No combiner has registered. ", { code: "scaleout server start" }, " runs one; a separate one joins with ",
      { code: `scaleout combiner start --controller ${origin}` }, "."],
  }));
}

function sessionsCard(sessions) {
  return section("Recent sessions", table([
    { label: "Name", cell: (s) => h("a", { href: `/sessions/${s.session_id}` }, s.name) },
    { label: "Status", cell: (s) => badge(s.status) },
    { label: "Rounds", cell: (s) => String(s.session_config?.rounds ?? "—"), class: "num" },
    { label: "Created", cell: (s) => fmtTime(s.committed_at), class: "nowrap" },
  ], sessions, { empty: "No sessions yet." }), h("p", {}, h("a", { href: "/sessions" }, "All sessions →")));
}

export async function mount(root, ctx) {
  const errors = errorSlot();
  const grid = h("div", { class: "grid" });
  root.append(h("h1", {}, "Overview"), errors.el, grid);

  let modelOrigin = null; // {modelId, session, round} of the latest model: they never change for one model

  async function refresh() {
    const [status, total, online, combiners, latest, pkg, recent] = await Promise.all([
      api.get("/get_controller_status"),
      api.count("clients"),
      api.list("clients", { filters: { status: "online" }, limit: SHOWN_CLIENTS, sortKey: "last_seen" }),
      api.list("combiners", { sortKey: "name", order: "asc" }),
      api.list("models", { limit: 1, sortKey: "committed_at" }),
      api.list("packages", { filters: { active: "true" }, limit: 1 }).then((b) => b.result[0] || null),
      api.list("sessions", { limit: 5, sortKey: "committed_at" }),
    ]);
    const model = latest.result[0];
    if (model && modelOrigin?.modelId !== model.model_id) {
      const [modelSession, modelRound] = await Promise.all([
        model.session_id ? api.get(`sessions/${model.session_id}`).catch(() => null) : null,
        model.round_id ? api.get(`rounds/${model.round_id}`).catch(() => null) : null,
      ]);
      const complete = (!model.session_id || modelSession) && (!model.round_id || modelRound);
      modelOrigin = { modelId: complete ? model.model_id : null, session: modelSession, round: modelRound };
    }
    let session = null;
    let rounds = [];
    if (status.state === "running" && status.session_id) {
      [session, rounds] = await Promise.all([
        api.get(`sessions/${status.session_id}`),
        api.list("rounds", { filters: { session_id: status.session_id }, sortKey: "round_number", order: "asc" })
          .then((b) => b.result),
      ]);
      if (isFinalSession(session)) session = null;
    }
    errors.clear();
    update(grid,
      clientsCard(online.count, total, online.result, ctx.origin),
      trainingCard(session, rounds, recent.result[0]),
      modelCard(model, modelOrigin),
      packageCard(pkg),
      combinersCard(combiners.result, ctx.origin),
      sessionsCard(recent.result));
  }

  every(POLL_MS, refresh, { onError: (err) => errors.show(err) });
}
