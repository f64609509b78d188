// One session: its configuration and progress, a per-round table (state, clients asked/answered,
// durations, aggregator, the mean of each validation metric) and charts of the validation metrics
// per round (each client and the mean) and of the training metrics clients logged with log_metric.
// Everything refreshes in place while the session runs.

import { api, stopSession } from "./api.js";
import { colorFor, lineChart, MEAN_COLOR } from "./chart.js";
import {
  badge, emptyState, errorBox, errorSlot, fmtNumber, fmtSeconds, fmtTime, h, progress, section, shortId, table, update,
} from "./dom.js";
import { every, POLL_MS } from "./poll.js";
import {
  aggregationSeconds, isFinalSession, roundCounts, roundDuration, roundMetricMeans, sessionProgress, trainingSeries,
  validatedCell, validationSeries,
} from "./rounds.js";

const TAIL_OVERLAP = 200;

// Keep `state.records` (a Map by id) in step with a growing collection without refetching it all on
// every refresh: fetch the tail from a little before what we hold, merge by id, and start over when
// the merged total differs from the server's count (a record landed earlier in the order, or some
// were deleted).
async function syncTail(resource, filters, idKey, state, count) {
  if (count === state.count) return;
  const order = { sortKey: "committed_at", order: "asc" };
  const tail = await api.list(resource, { filters, skip: Math.max(0, state.records.size - TAIL_OVERLAP), ...order });
  for (const r of tail.result) state.records.set(r[idKey], r);
  if (state.records.size !== tail.count) {
    const all = await api.list(resource, { filters, ...order });
    state.records = new Map(all.result.map((r) => [r[idKey], r]));
  }
  state.count = tail.count;
}

function configFacts(session) {
  const c = session.session_config || {};
  const fact = (label, value, testid) => [h("dt", {}, label), h("dd", { "data-testid": testid }, value)];
  return h("dl", { class: "facts wide" },
    fact("id", shortId(session.session_id)),
    fact("aggregator", `${c.aggregator ?? "—"}${c.aggregator_kwargs && Object.keys(c.aggregator_kwargs).length
      ? ` ${JSON.stringify(c.aggregator_kwargs)}` : ""}`, "aggregator"),
    fact("rounds", String(c.rounds ?? "—")),
    fact("round timeout", c.round_timeout !== undefined ? `${c.round_timeout} s` : "—"),
    fact("clients", `min ${c.clients_required ?? "—"}, requested ${c.requested_clients ?? "—"}`),
    fact("round buffer", c.buffer_size === -1 ? "all requested clients" : String(c.buffer_size ?? "—")),
    fact("validate", c.validate === false ? "no" : "yes"),
    fact("helper", c.helper_type ?? "—"),
    fact("seed model", shortId(session.seed_model_id)),
    fact("created", fmtTime(session.committed_at)),
    fact("started", fmtTime(session.started_at)),
    fact("finished", fmtTime(session.finished_at)),
  );
}

function roundsTable(rounds, means) {
  const metricKeys = [];
  for (const m of means.values()) for (const k of Object.keys(m)) if (!metricKeys.includes(k)) metricKeys.push(k);
  const columns = [
    { label: "Round", key: "round", cell: (r) => String(r.round_number), class: "num" },
    { label: "State", key: "state", cell: (r) => badge(r.status) },
    { label: "Asked", key: "asked", cell: (r) => fmtCount(roundCounts(r).asked), class: "num" },
    { label: "Answered", key: "answered", cell: (r) => answeredCell(roundCounts(r)), class: "num" },
    { label: "Duration", key: "duration", cell: (r) => fmtSeconds(roundDuration(r)), class: "num" },
    { label: "Training", key: "training", cell: (r) => fmtSeconds(r.round_data?.time_training), class: "num" },
    { label: "Aggregation", key: "aggregation", cell: (r) => fmtSeconds(aggregationSeconds(r)), class: "num" },
    { label: "Validation", key: "validation", cell: (r) => fmtSeconds(r.round_data?.time_validation), class: "num" },
    { label: "Validated", key: "validated", cell: (r) => validatedCell(r), class: "num" },
    { label: "Aggregator", key: "aggregator", cell: (r) => r.round_config?.aggregator },
    { label: "New model", key: "model", cell: (r) => shortId(r.new_model_id) },
    ...metricKeys.map((k) => ({ label: h("span", { title: `${k}: mean over the clients' validations` }, `${k} (mean)`),
      key: `metric-${k}`, class: "num",
      cell: (r) => fmtNumber(means.get(r.round_id)?.[k]) })),
    { label: "Error", key: "error", cell: (r) => (r.error ? h("span", { class: "bad-text" }, r.error) : "") },
  ];
  return table(columns, rounds, {
    testid: "rounds",
    rowAttrs: (r) => ({ dataset: { round: r.round_number, roundId: r.round_id, status: r.status } }),
    empty: "No round has started yet.",
  });
}

function fmtCount(n) {
  return n === null || n === undefined ? "—" : String(n);
}

function answeredCell({ answered, expected }) {
  if (answered === null && expected === null) return "—";
  return expected === null ? fmtCount(answered) : `${fmtCount(answered)} / ${expected}`;
}

function colorMap(names) {
  return new Map([...names].sort().map((name, i) => [name, colorFor(i)]));
}

function validationCharts(series) {
  const colors = colorMap(new Set(series.flatMap((m) => m.clients.map((c) => c.label))));
  return series.map((metric) => lineChart({
    title: metric.key,
    metric: metric.key,
    testid: "validation-chart",
    xLabel: "round",
    yLabel: metric.key,
    integerX: true,
    series: [
      ...metric.clients.map((c) => ({ name: c.label, label: c.label, color: colors.get(c.label), points: c.points })),
      { name: "mean", label: "mean of clients", color: MEAN_COLOR, dashed: true, width: 2.5, points: metric.mean },
    ],
    describe: (s, p) => `${s.label}: ${metric.key} = ${p.y} in round ${p.x}`,
  }));
}

function trainingCharts(series) {
  const colors = colorMap(new Set(series.flatMap((m) => m.clients.map((c) => c.label))));
  return series.map((metric) => lineChart({
    title: metric.key,
    metric: metric.key,
    testid: "training-chart",
    xLabel: metric.markers.length ? "step (rounds one after another)" : "step",
    yLabel: metric.key,
    markers: metric.markers,
    series: metric.clients.map((c) => ({ name: c.label, label: c.label, color: colors.get(c.label), points: c.points })),
    describe: (s, p) => `${s.label}: ${metric.key} = ${p.y} at step ${p.data.step}${p.data.round !== "" ? ` of round ${p.data.round}` : ""}`,
  }));
}

export async function mount(root, ctx) {
  const sessionId = ctx.params.sessionId;
  const errors = errorSlot();
  const title = h("h1", {}, "Session");
  const summary = h("div", { class: "card", "data-testid": "session-summary" });
  const actions = h("div", { class: "actions-row" });
  const roundsBox = h("div");
  const validationBox = h("div", { class: "charts", "data-testid": "validation-charts" });
  const roundSelect = h("select", { "aria-label": "Round", "data-testid": "training-round" },
    h("option", { value: "" }, "all rounds"));
  const trainingBox = h("div", { class: "charts", "data-testid": "training-charts" });
  root.append(
    h("p", { class: "crumbs" }, h("a", { href: "/sessions" }, "Sessions"), " / ", shortId(sessionId)),
    title, errors.el, summary, actions,
    h("section", { class: "card" }, h("h2", {}, "Rounds"), roundsBox),
    h("section", { class: "card" }, h("h2", {}, "Validation metrics per round"), validationBox),
    h("section", { class: "card" }, h("div", { class: "card-head" }, h("h2", {}, "Training metrics (log_metric)"),
      h("label", {}, "Show ", roundSelect)), trainingBox),
  );

  const validationState = { records: new Map(), count: -1 };
  const metricState = { records: new Map(), count: -1 };
  let validations = [];
  let metrics = [];
  let session = null;
  let rounds = [];
  let stopping = false;

  function renderActions() {
    if (!session || isFinalSession(session) || String(session.status).toLowerCase() === "created") {
      update(actions);
      return;
    }
    const button = h("button", { type: "button", class: "danger", "data-testid": "stop-session", disabled: stopping },
      stopping ? "Stopping…" : "Stop session");
    button.addEventListener("click", async () => {
      const stopped = stopSession(session);
      if (!stopped) return;
      stopping = true;
      renderActions();
      try {
        const message = await stopped;
        errors.clear();
        actions.replaceChildren(h("p", { class: "ok-text" }, message));
      } catch (err) {
        errors.show(err);
      } finally {
        stopping = false;
        poller.now();
      }
    });
    actions.replaceChildren(button);
  }

  function renderRoundOptions() {
    const wanted = ["", ...rounds.map((r) => String(r.round_number))];
    const have = [...roundSelect.options].map((o) => o.value);
    if (wanted.join(",") === have.join(",")) return;
    const value = roundSelect.value;
    roundSelect.replaceChildren(...wanted.map((v) => h("option", { value: v }, v ? `round ${v}` : "all rounds")));
    roundSelect.value = wanted.includes(value) ? value : "";
  }

  function renderTraining() {
    const only = roundSelect.value ? Number(roundSelect.value) : null;
    const series = trainingSeries(metrics, rounds, only);
    update(trainingBox, series.length ? trainingCharts(series) : emptyState(
      ["No training metrics yet. A client's train callback reports them with ", { code: "client.log_metric({\"loss\": 0.3})" },
        "; they appear here while the round runs."]));
  }
  roundSelect.addEventListener("change", renderTraining);

  async function refresh() {
    const [s, r, nValidations, nMetrics] = await Promise.all([
      api.get(`sessions/${sessionId}`),
      api.list("rounds", { filters: { session_id: sessionId }, sortKey: "round_number", order: "asc" }),
      api.count("validations", { session_id: sessionId }),
      api.count("metrics", { session_id: sessionId }),
    ]);
    session = s;
    rounds = r.result;
    await Promise.all([
      syncTail("validations", { session_id: sessionId }, "validation_id", validationState, nValidations),
      syncTail("metrics", { session_id: sessionId }, "metric_id", metricState, nMetrics),
    ]);
    validations = [...validationState.records.values()];
    metrics = [...metricState.records.values()];
    errors.clear();
    document.title = `${session.name} · Sessions · Scaleout Edge`;
    update(title, session.name, " ", badge(session.status));
    const { done, total } = sessionProgress(session, rounds);
    update(summary,
      h("p", { class: "big", "data-testid": "session-progress" }, `${done} of ${total} rounds done`),
      progress(done, total),
      session.error ? errorBox(`Session error: ${session.error}`) : null,
      configFacts(session));
    renderActions();
    update(roundsBox, roundsTable(rounds, roundMetricMeans(rounds, validations)));
    const vSeries = validationSeries(rounds, validations);
    update(validationBox, vSeries.length ? validationCharts(vSeries) : emptyState(
      session.session_config?.validate === false
        ? "Validation is off for this session (validate: false)."
        : ["No validations yet: after each round the clients' validate callback scores the new model ",
          "and the values appear here."]));
    renderRoundOptions();
    renderTraining();
  }

  const poller = every(POLL_MS, refresh, {
    onError: (err) => {
      if (err.status === 404) {
        poller.stop();
        errors.show(new Error(`${err.message}. See the list of sessions.`));
        return;
      }
      errors.show(err);
    },
  });
}
