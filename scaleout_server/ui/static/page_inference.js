// Inference: the results clients sent for inference tasks (client.log_inference_result, or a predict
// callback's return value), newest first and filterable by model and inference run, plus staging a
// model on clients (POST /api/v1/models/{id}/stage) so their next inference needs no download.

import { api } from "./api.js";
import { errorSlot, fmtTime, fmtValue, h, section, shortId, table, update } from "./dom.js";
import { every, POLL_MS } from "./poll.js";

const LIMIT = 200;

function stageForm(models, onStaged) {
  const model = h("select", { name: "model_id", "data-testid": "stage-model" });
  const clients = h("input", { type: "text", name: "client_ids", placeholder: "default: every connected client",
    "data-testid": "stage-clients" });
  const status = h("div", { class: "form-status", "aria-live": "polite", "data-testid": "stage-status" });
  const form = h("form", { class: "form", "data-testid": "stage-form" },
    h("label", {}, h("span", {}, "Model"), model),
    h("label", {}, h("span", {}, "Client ids (comma-separated)"), clients),
    h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary" }, "Stage model")),
    status);
  models.then((list) => {
    model.replaceChildren(...list.map((m) => h("option", { value: m.model_id }, `${m.model_id.slice(0, 8)}… ${m.name || ""}`)));
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!model.value) {
      update(status, h("p", { class: "error" }, "No model to stage: upload one with `scaleout model set-active`."));
      return;
    }
    const ids = clients.value.split(",").map((s) => s.trim()).filter(Boolean);
    try {
      const reply = await api.post(`models/${encodeURIComponent(model.value)}/stage`, { client_ids: ids.length ? ids : null });
      update(status, h("p", { class: "ok-text", "data-testid": "stage-started" },
        `Staging on ${reply.client_ids.length} client(s): command ${reply.command_id}.`));
      onStaged();
    } catch (err) {
      update(status, h("p", { class: "error" }, err.message));
    }
  });
  return form;
}

export async function mount(root) {
  const errors = errorSlot();
  const list = h("div");
  const modelFilter = h("input", { type: "text", placeholder: "model id", "data-testid": "filter-model" });
  const runFilter = h("input", { type: "text", placeholder: "inference run (command) id", "data-testid": "filter-run" });
  let poller = null;
  const models = api.list("models", { sortKey: "committed_at", limit: 50 }).then((r) => r.result).catch(() => []);
  root.append(h("h1", {}, "Inference"), errors.el,
    h("section", { class: "card" }, h("h2", {}, "Inference results"),
      h("div", { class: "form" }, h("label", {}, h("span", {}, "Model"), modelFilter),
        h("label", {}, h("span", {}, "Inference run"), runFilter)), list),
    section("Stage a model on clients", stageForm(models, () => poller.now())));
  for (const input of [modelFilter, runFilter]) input.addEventListener("change", () => poller.now());

  async function refresh() {
    const filters = { model_id: modelFilter.value.trim(), prediction_id: runFilter.value.trim() };
    const results = await api.list("predictions", { filters, limit: LIMIT, sortKey: "committed_at" });
    errors.clear();
    update(list, h("p", { class: "muted" }, `${results.count} result(s)`), table([
      { label: "Time", key: "time", cell: (p) => fmtTime(p.timestamp) },
      { label: "Client", key: "client", cell: (p) => (p.sender && (p.sender.name || p.sender.client_id)) || "—" },
      { label: "Model", key: "model", cell: (p) => shortId(p.model_id) },
      { label: "Run", key: "run", cell: (p) => shortId(p.prediction_id) },
      { label: "Result", key: "data", cell: (p) => h("code", {}, fmtValue(p.data)) },
    ], results.result, {
      testid: "inference-results",
      rowAttrs: (p) => ({ dataset: { predictionId: p.prediction_id, modelId: p.model_id } }),
      empty: ["No inference results yet. Run inference with ",
        { code: "scaleout prediction start" }, " (clients log results with client.log_inference_result) and list them with ",
        { code: "scaleout inference list" }, "."],
    }));
  }

  poller = every(POLL_MS, refresh, { onError: (err) => errors.show(err) });
}
