// Actions: start a session (the fields of `scaleout session start`, checked here first and then by
// the server, whose message is shown as is), stop the running session, and run a custom command on
// chosen clients with each client's result.

import { api, stopSession } from "./api.js";
import { badge, clientStartHint, emptyState, errorBox, errorSlot, fmtTime, h, section, shortId, table, update } from "./dom.js";
import { every, POLL_MS } from "./poll.js";

const COMMAND_POLL_MS = 1000;

// The fields of `scaleout session start`, with the CLI's flags and defaults.
const START_FIELDS = [
  { name: "name", label: "Name", flag: "-n", placeholder: "default: session-<id>" },
  { name: "aggregator", label: "Aggregator", flag: "-a", value: "fedavg" },
  { name: "aggregator_kwargs", label: "Aggregator kwargs (JSON object)", flag: "-ak", kind: "textarea", placeholder: "{}" },
  { name: "model_id", label: "Initial model", flag: "-m", kind: "select" },
  { name: "rounds", label: "Rounds", flag: "-r", value: "5", numeric: true },
  { name: "round_timeout", label: "Round timeout (seconds)", flag: "-rt", value: "180", numeric: true },
  { name: "round_buffer_size", label: "Round buffer size (-1: all requested clients)", flag: "-rb", value: "-1", numeric: true },
  { name: "min_clients", label: "Minimum clients", flag: "-mc", value: "1", numeric: true },
  { name: "requested_clients", label: "Requested clients", flag: "-rc", value: "8", numeric: true },
  { name: "helper", label: "Helper", flag: "-hp", placeholder: "default: the active helper" },
  { name: "validate", label: "Validate the model after each round", flag: "-v", kind: "checkbox", value: true },
  { name: "delete_models", label: "Delete client updates after aggregation", flag: "-d", kind: "checkbox", value: true },
];

function parseIntField(raw, label, { min, allowMinusOne = false } = {}) {
  const text = String(raw ?? "").trim();
  const range = allowMinusOne ? `-1 or a whole number ≥ ${min}` : `a whole number ≥ ${min}`;
  if (!/^-?\d+$/.test(text)) return { error: `${label} must be ${range}, got “${text}”.` };
  const value = Number(text);
  if (value < min && !(allowMinusOne && value === -1)) return { error: `${label} must be ${range}, got ${value}.` };
  return { value };
}

export function parseJsonObject(raw, label) {
  const text = String(raw ?? "").trim();
  if (!text) return { value: {} };
  try {
    const value = JSON.parse(text);
    if (value && typeof value === "object" && !Array.isArray(value)) return { value };
    return { error: `${label} must be a JSON object such as {"key": 1}, not ${Array.isArray(value) ? "a list" : typeof value}.` };
  } catch (err) {
    return { error: `${label} is not valid JSON: ${err.message}` };
  }
}

// Form values -> {body, rounds, roundTimeout} for POST sessions/, or {errors: {field: message}}.
export function sessionRequest(values) {
  const errors = {};
  const take = (field, result) => {
    if (result.error) errors[field] = result.error;
    return result.value;
  };
  const rounds = take("rounds", parseIntField(values.rounds, "Rounds", { min: 1 }));
  const roundTimeout = take("round_timeout", parseIntField(values.round_timeout, "Round timeout", { min: 1 }));
  const buffer = take("round_buffer_size", parseIntField(values.round_buffer_size, "Round buffer size", { min: 1, allowMinusOne: true }));
  const minClients = take("min_clients", parseIntField(values.min_clients, "Minimum clients", { min: 1 }));
  const requested = take("requested_clients", parseIntField(values.requested_clients, "Requested clients", { min: 1 }));
  const kwargs = take("aggregator_kwargs", parseJsonObject(values.aggregator_kwargs, "Aggregator kwargs"));
  const aggregator = String(values.aggregator || "").trim();
  if (!aggregator) errors.aggregator = "Aggregator is required (fedavg unless you installed another).";
  if (Object.keys(errors).length) return { errors };
  const modelId = values.model_id || null;
  return {
    rounds,
    roundTimeout,
    body: {
      name: String(values.name || "").trim() || null,
      seed_model_id: modelId,
      session_config: {
        aggregator,
        aggregator_kwargs: kwargs,
        rounds,
        round_timeout: roundTimeout,
        buffer_size: buffer,
        model_id: modelId,
        delete_models_storage: Boolean(values.delete_models),
        clients_required: minClients,
        requested_clients: requested,
        validate: Boolean(values.validate),
        helper_type: String(values.helper || "").trim() || null,
        server_functions: null,
      },
    },
  };
}

function field(spec) {
  const id = `start-${spec.name}`;
  let input;
  if (spec.kind === "select") {
    input = h("select", { id, name: spec.name }, h("option", { value: "" }, "the newest model"));
  } else if (spec.kind === "textarea") {
    input = h("textarea", { id, name: spec.name, rows: 2, placeholder: spec.placeholder });
  } else if (spec.kind === "checkbox") {
    input = h("input", { id, name: spec.name, type: "checkbox", checked: spec.value });
  } else {
    input = h("input", { id, name: spec.name, type: "text", value: spec.value ?? null, placeholder: spec.placeholder,
      inputmode: spec.numeric ? "numeric" : null });
  }
  const problem = h("span", { class: "field-error", id: `${id}-error` });
  const wrapper = spec.kind === "checkbox"
    ? h("label", { class: "check", dataset: { field: spec.name } }, input, " ", spec.label, " ", h("code", { class: "flag" }, spec.flag), problem)
    : h("label", { dataset: { field: spec.name } }, h("span", {}, spec.label, " ", h("code", { class: "flag" }, spec.flag)), input, problem);
  return { input, problem, wrapper };
}

function startForm(onStarted) {
  const fields = Object.fromEntries(START_FIELDS.map((spec) => [spec.name, field(spec)]));
  const status = h("div", { class: "form-status", "aria-live": "polite", "data-testid": "start-status" });
  const submit = h("button", { type: "submit", class: "primary", "data-testid": "start-session" }, "Start session");
  const form = h("form", { class: "form grid-form", "data-testid": "start-form", novalidate: true },
    Object.values(fields).map((f) => f.wrapper), h("div", { class: "buttons" }, submit), status);

  const values = () => Object.fromEntries(Object.entries(fields).map(([name, f]) =>
    [name, f.input.type === "checkbox" ? f.input.checked : f.input.value]));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const f of Object.values(fields)) {
      f.problem.textContent = "";
      f.input.removeAttribute("aria-invalid");
    }
    const request = sessionRequest(values());
    if (request.errors) {
      for (const [name, message] of Object.entries(request.errors)) {
        fields[name].problem.textContent = message;
        fields[name].input.setAttribute("aria-invalid", "true");
      }
      update(status, errorBox(`Fix the highlighted field(s): ${Object.values(request.errors).join(" ")}`));
      return;
    }
    submit.disabled = true;
    status.replaceChildren(h("p", {}, "Creating the session…"));
    let created = null;
    try {
      created = await api.post("sessions/", request.body);
      const started = await api.post("sessions/start", {
        session_id: created.session_id, rounds: request.rounds, round_timeout: request.roundTimeout,
      });
      status.replaceChildren(h("p", { class: "ok-text", "data-testid": "session-started", dataset: { sessionId: created.session_id } },
        `Session ${created.name} ${String(started.status || "started").toLowerCase()}: ${request.rounds} round(s), `,
        `aggregator ${request.body.session_config.aggregator}. `,
        h("a", { href: `/sessions/${created.session_id}`, "data-testid": "session-link" }, "Follow it on its page →")));
      onStarted();
    } catch (err) {
      const prefix = created ? `Session ${created.name} was created but could not start: ` : "The server refused the session: ";
      update(status, errorBox(prefix + err.message));
    } finally {
      submit.disabled = false;
    }
  });

  return {
    form,
    setModels(models) {
      const select = fields.model_id.input;
      const wanted = ["", ...models.map((m) => m.model_id)];
      if ([...select.options].map((o) => o.value).join(",") === wanted.join(",")) return;
      const value = select.value;
      select.replaceChildren(h("option", { value: "" }, "the newest model"), ...models.map((m) => h("option", { value: m.model_id },
        `${m.model_id.slice(0, 8)}… · ${m.session_id ? "trained" : "seed"} · ${fmtTime(m.committed_at)}`)));
      select.value = wanted.includes(value) ? value : "";
    },
    setHelper(helper) {
      fields.helper.input.placeholder = `default: ${helper} (the active helper)`;
    },
  };
}

function runningCard(session, onStop) {
  if (!session) {
    return [h("p", { "data-testid": "no-running-session" }, "No session is running.")];
  }
  const button = h("button", { type: "button", class: "danger", "data-testid": "stop-running" }, "Stop session");
  button.addEventListener("click", () => onStop(session, button));
  return [h("p", { "data-testid": "running-session", dataset: { sessionId: session.session_id } },
    h("a", { href: `/sessions/${session.session_id}` }, h("b", {}, session.name)), " ", badge(session.status), " "), button];
}

function commandResults(command, clientsById) {
  const results = new Map((command.results || []).map((r) => [r.client_id, r]));
  const targets = command.client_ids?.length ? command.client_ids : [...results.keys()];
  const rows = targets.map((id) => ({ id, result: results.get(id) || null }));
  for (const [id, result] of results) if (!targets.includes(id)) rows.push({ id, result });
  return h("div", { "data-testid": "command-result", dataset: { commandId: command.command_id, status: command.status } },
    h("p", {}, h("b", {}, command.command_type), " ", badge(command.status), " ",
      h("span", { class: "muted" }, `sent ${fmtTime(command.committed_at)} to ${targets.length} client(s) · id `),
      shortId(command.command_id)),
    Object.keys(command.parameters || {}).length ? h("p", { class: "muted" }, "parameters ", h("code", {}, JSON.stringify(command.parameters))) : null,
    table([
      { label: "Client", key: "client", cell: (r) => h("b", {}, r.result?.client_name || clientsById.get(r.id)?.name || shortId(r.id)) },
      { label: "Id", key: "id", cell: (r) => shortId(r.id) },
      { label: "Status", key: "status", cell: (r) => (r.result ? badge(r.result.status)
        : (command.status === "Running" ? h("span", { class: "muted" }, "waiting…") : badge("no answer"))) },
      { label: "Result", key: "response", cell: (r) => (r.result
        ? h("pre", { class: "json" }, JSON.stringify(r.result.response ?? r.result.error ?? r.result.message ?? null, null, 1)) : "") },
    ], rows, { testid: "command-results", rowAttrs: (r) => ({ dataset: { clientId: r.id, status: r.result?.status || "" } }) }));
}

function commandForm(onSent) {
  const name = h("input", { type: "text", name: "command", placeholder: "e.g. echo", "data-testid": "command-name" });
  const params = h("textarea", { name: "params", rows: 2, placeholder: "{}", "data-testid": "command-params" });
  const timeout = h("input", { type: "text", name: "timeout", value: "60", inputmode: "numeric" });
  const clientsBox = h("div", { class: "client-picks", "data-testid": "command-clients" });
  const status = h("div", { class: "form-status", "aria-live": "polite", "data-testid": "command-status" });
  const submit = h("button", { type: "submit", class: "primary", "data-testid": "run-command" }, "Run command");
  const selected = new Set();
  let online = [];
  const form = h("form", { class: "form", "data-testid": "command-form", novalidate: true },
    h("label", {}, h("span", {}, "Command (the name given to ", h("code", {}, "client.set_custom_callback"), ")"), name),
    h("label", {}, h("span", {}, "Parameters (JSON object passed to the callback)"), params),
    h("label", {}, h("span", {}, "Timeout (seconds)"), timeout),
    h("fieldset", {}, h("legend", {}, "Clients (none ticked: every online client)"), clientsBox),
    h("div", { class: "buttons" }, submit), status);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const command = name.value.trim();
    const problems = [];
    if (!command) problems.push("Command is required: the name a client registered with set_custom_callback.");
    else if (/\s/.test(command)) problems.push(`Command “${command}” must be one word (no spaces).`);
    const parsed = parseJsonObject(params.value, "Parameters");
    if (parsed.error) problems.push(parsed.error);
    const seconds = Number(timeout.value.trim());
    if (!timeout.value.trim() || !Number.isFinite(seconds) || seconds < 1) {
      problems.push(`Timeout must be a number of seconds ≥ 1, got “${timeout.value.trim()}”.`);
    }
    if (problems.length) {
      update(status, errorBox(problems.join(" ")));
      return;
    }
    submit.disabled = true;
    try {
      const reply = await api.post("control/run_command", {
        command_type: command, parameters: parsed.value, client_ids: selected.size ? [...selected] : null,
        timeout: seconds, synchronous: false,
      });
      status.replaceChildren(h("p", { class: "ok-text" }, `Sent to ${reply.client_ids.length} client(s); results below.`));
      onSent(reply);
    } catch (err) {
      update(status, errorBox(`The command was not sent: ${err.message}`));
    } finally {
      submit.disabled = false;
    }
  });

  return {
    form,
    setClients(clients, origin) {
      online = clients;
      for (const id of [...selected]) if (!online.some((c) => c.client_id === id)) selected.delete(id);
      if (!online.length) {
        update(clientsBox, emptyState(["No client is online: start one with ", { code: clientStartHint(origin) }, "."]));
        return;
      }
      update(clientsBox, online.map((c) => h("label", { class: "check pick" },
        h("input", { type: "checkbox", value: c.client_id, checked: selected.has(c.client_id), dataset: { name: c.name },
          onchange: (e) => (e.target.checked ? selected.add(c.client_id) : selected.delete(c.client_id)) }),
        " ", c.name, " ", h("span", { class: "muted" }, shortId(c.client_id)))));
    },
  };
}

export async function mount(root, ctx) {
  const errors = errorSlot();
  const running = h("div", { class: "running" });
  const stopStatus = h("div", { class: "form-status", "aria-live": "polite", "data-testid": "stop-status" });
  const resultBox = h("div", { "data-testid": "command-output" }, h("p", { class: "muted" }, "Results of the command you run appear here."));
  const recentBox = h("div");
  let poller = null;
  let shownCommand = null;
  let clientsById = new Map();
  let commandTimer = null;

  const start = startForm(() => poller.now());
  async function stop(session, button) {
    const stopped = stopSession(session);
    if (!stopped) return;
    button.disabled = true;
    button.textContent = "Stopping…";
    try {
      const message = await stopped;
      errors.clear();
      stopStatus.replaceChildren(h("p", { class: "ok-text", "data-testid": "stopped" }, message));
    } catch (err) {
      update(stopStatus, errorBox(`The session was not stopped: ${err.message}`));
    }
    button.disabled = false;
    poller.now();
  }

  async function followCommand() {
    clearTimeout(commandTimer);
    if (!shownCommand) return;
    try {
      const command = await api.get(`commands/${shownCommand}`);
      update(resultBox, commandResults(command, clientsById));
      if (command.status === "Running") commandTimer = setTimeout(followCommand, COMMAND_POLL_MS);
      else if (poller) poller.now(); // the recent commands list shows the new status at once
    } catch (err) {
      update(resultBox, errorBox(err.message));
    }
  }
  function show(commandId) {
    shownCommand = commandId;
    followCommand();
  }

  const command = commandForm((reply) => {
    show(reply.command_id);
    poller.now();
  });

  root.append(h("h1", {}, "Actions"), errors.el,
    h("div", { class: "grid two" },
      h("div", {},
        section("Running session", running, stopStatus),
        section("Start a session", h("p", { class: "muted" }, "The options of ", h("code", {}, "scaleout session start"),
          "; the flag of each is shown next to it."), start.form)),
      h("div", {},
        section("Run a custom command", command.form),
        h("section", { class: "card" }, h("h2", {}, "Result"), resultBox),
        h("section", { class: "card" }, h("h2", {}, "Recent commands"), recentBox))));

  async function refresh() {
    const [status, models, helper, clients, recent] = await Promise.all([
      api.get("/get_controller_status"),
      api.list("models", { limit: 50, sortKey: "committed_at" }),
      api.get("helpers/active"),
      api.list("clients", { filters: { status: "online" }, sortKey: "name", order: "asc" }),
      api.list("commands", { limit: 10, sortKey: "committed_at" }),
    ]);
    const session = status.state === "running" && status.session_id ? await api.get(`sessions/${status.session_id}`) : null;
    errors.clear();
    clientsById = new Map(clients.result.map((c) => [c.client_id, c]));
    if (!running.querySelector("button[disabled]")) update(running, runningCard(session, stop));
    start.setModels(models.result);
    start.setHelper(helper);
    command.setClients(clients.result, ctx.origin);
    update(recentBox, table([
      { label: "Command", cell: (c) => c.command_type },
      { label: "Status", cell: (c) => badge(c.status) },
      { label: "Clients", cell: (c) => String((c.client_ids || []).length), class: "num" },
      { label: "Sent", cell: (c) => fmtTime(c.committed_at) },
      { label: "", cell: (c) => h("button", { type: "button", class: "small", onclick: () => show(c.command_id) }, "show results") },
    ], recent.result, { empty: "No commands sent yet.", testid: "recent-commands" }));
  }

  poller = every(POLL_MS, refresh, { onError: (err) => errors.show(err) });
}
