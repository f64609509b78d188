// Models: the model trail as a lineage view (each model under its parent; a straight line while a
// model has one child, an indented branch where several sessions started from the same model), with
// each model's session and round, size, time and a download link. Plus a seed model upload.

import { api, downloadLink } from "./api.js";
import { emptyState, errorSlot, fmtBytes, fmtTime, h, section, shortId, update } from "./dom.js";
import { every, POLL_MS } from "./poll.js";
import { handleUploadForm } from "./upload.js";

const MAX_MODELS = 1000;

// Roots first; children in time order. Returns {roots, children: Map id -> [model]}.
export function lineage(models) {
  const ids = new Set(models.map((m) => m.model_id));
  const children = new Map();
  const roots = [];
  for (const m of models) {
    if (m.parent_model && ids.has(m.parent_model)) {
      if (!children.has(m.parent_model)) children.set(m.parent_model, []);
      children.get(m.parent_model).push(m);
    } else {
      roots.push(m);
    }
  }
  const byTime = (a, b) => String(a.committed_at).localeCompare(String(b.committed_at));
  roots.sort(byTime);
  for (const list of children.values()) list.sort(byTime);
  return { roots, children };
}

function modelNode(model, info) {
  const { roundOf, sessionName, latestId, missingParent } = info;
  const round = roundOf.get(model.round_id);
  const origin = model.session_id
    ? [h("a", { href: `/sessions/${model.session_id}` }, sessionName.get(model.session_id) || shortId(model.session_id)),
      round ? ` · round ${round.round_number}` : ""]
    : [h("span", { class: "badge muted" }, "seed"), model.name ? ` ${model.name}` : ""];
  const link = downloadLink(`models/${model.model_id}/download`, `${model.model_id}.zip`, (err) => info.errors.show(err),
    { class: "download" });
  return h("li", { class: ["node", model.model_id === latestId ? "latest" : null], id: `model-${model.model_id}`,
    dataset: { modelId: model.model_id, parent: model.parent_model || "", round: round ? round.round_number : "" } },
  h("span", { class: "dot" }),
  h("div", { class: "node-body" },
    h("div", {}, shortId(model.model_id), " ", model.model_id === latestId ? h("span", { class: "badge ok" }, "latest") : null,
      " ", h("span", { class: "origin" }, origin)),
    h("div", { class: "muted" }, `${fmtBytes(model.size)} · ${model.helper_type || "—"} · ${fmtTime(model.committed_at)} · `, link),
    missingParent ? h("div", { class: "muted" }, "parent ", shortId(model.parent_model), " (not listed)") : null));
}

// A chain continues in the same list; a fork opens an indented branch per child.
function renderTrail(start, tree, info) {
  const list = h("ol", { class: "trail" });
  let node = start;
  while (node) {
    list.append(modelNode(node, { ...info, missingParent: node === start && node.parent_model && !info.ids.has(node.parent_model) }));
    const kids = tree.children.get(node.model_id) || [];
    if (kids.length === 1) {
      node = kids[0];
    } else {
      if (kids.length > 1) {
        list.append(h("li", { class: "fork" }, h("div", { class: "branches" },
          kids.map((kid) => h("div", { class: "branch" }, renderTrail(kid, tree, info))))));
      }
      node = null;
    }
  }
  return list;
}

function seedForm(onUploaded) {
  const file = h("input", { type: "file", accept: ".npz,.bin,.zip", "data-testid": "seed-file" });
  const status = h("div", { class: "form-status", "aria-live": "polite" });
  const submit = h("button", { type: "submit" }, "Upload seed model");
  const form = h("form", { class: "form inline", novalidate: true },
    h("label", {}, h("span", {}, "Seed model file (e.g. the seed.npz written by ",
      h("code", {}, "scaleout run build -p client"), ")"), file),
    h("div", { class: "buttons" }, submit), status);
  handleUploadForm(form, {
    file, status, submit, onUploaded,
    check: (chosen) => (chosen ? null : "Choose a seed model file first (e.g. seed.npz)."),
    register: async (chosen, token) => {
      const body = new FormData();
      body.set("file_token", token);
      body.set("name", chosen.name);
      const reply = await api.postForm("models/", body);
      return h("p", { class: "ok-text" }, `Seed model ${reply.model_id} stored.`);
    },
  });
  return form;
}

export async function mount(root) {
  const errors = errorSlot();
  const trail = h("div", { "data-testid": "model-trail" });
  let poller = null;
  root.append(h("h1", {}, "Models"), errors.el,
    h("section", { class: "card" }, h("h2", {}, "Model trail"), trail),
    section("Upload a seed model", seedForm(() => poller.now())));
  let seenCount = -1;

  async function refresh() {
    const count = await api.count("models");
    if (count === seenCount) return;
    const [models, rounds, sessions] = await Promise.all([
      api.list("models", { limit: MAX_MODELS, sortKey: "committed_at" }),
      api.list("rounds", { limit: MAX_MODELS, sortKey: "committed_at" }),
      api.list("sessions", { limit: MAX_MODELS, sortKey: "committed_at" }),
    ]);
    errors.clear();
    seenCount = count;
    if (!models.result.length) {
      update(trail, emptyState(["No models yet: upload a seed model below or with ",
        { code: "scaleout model set-active --file seed.npz" }, "; every training round then adds one."]));
      return;
    }
    const tree = lineage(models.result);
    const info = {
      roundOf: new Map(rounds.result.map((r) => [r.round_id, r])),
      sessionName: new Map(sessions.result.map((s) => [s.session_id, s.name])),
      latestId: models.result[0].model_id,
      ids: new Set(models.result.map((m) => m.model_id)),
      errors,
    };
    update(trail,
      h("p", { class: "muted" }, `${models.count} model(s)${models.count > models.result.length
        ? `, the newest ${models.result.length} shown` : ""}. Oldest at the top; `,
      h("a", { href: `#model-${info.latestId}` }, "jump to the latest"), "."),
      tree.roots.map((r) => renderTrail(r, tree, info)));
  }

  poller = every(POLL_MS, refresh, { onError: (err) => errors.show(err) });
}
