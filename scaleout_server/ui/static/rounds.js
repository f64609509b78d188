// What a session's records mean, as pure functions (no DOM): per-round counts and durations, the
// validation metrics of each round per client and their mean, and log_metric values per client on
// one step axis. The same rules as the CLI's `session wait` summary.

const FINAL_SESSION = new Set(["finished", "stopped", "failed"]);
const LIVE_ROUND = new Set(["running", "validating", "pending"]);
const ENDED_ROUND = new Set(["finished", "failed", "stopped"]);

export function isFinalSession(session) {
  return FINAL_SESSION.has(String(session?.status || "").toLowerCase());
}

// {done, total}: rounds that ended (finished, failed or stopped) out of the configured rounds (or
// of those that exist, when a session ran more).
export function sessionProgress(session, rounds) {
  const total = Math.max(Number(session.session_config?.rounds) || 0, rounds.length);
  const done = rounds.filter((r) => ENDED_ROUND.has(String(r.status).toLowerCase())).length;
  return { done, total };
}

function num(value) {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

function sum(values) {
  const known = values.filter((v) => v !== null);
  return known.length ? known.reduce((a, b) => a + b, 0) : null;
}

// {asked, answered, expected}: clients asked to train, updates received, updates expected.
export function roundCounts(round) {
  const combiners = (round.combiners || []).filter((c) => c && typeof c === "object");
  const data = round.round_data || {};
  const asked = sum(combiners.map((c) => num(c.clients))) ?? num(data.clients_selected);
  const answered = sum(combiners.map((c) => num(c.updates_received))) ?? num(data.updates_received);
  const expected = sum(combiners.map((c) => num(c.updates_expected))) ?? num(data.updates_expected) ?? asked;
  return { asked, answered, expected };
}

// Seconds the round took, or has taken so far while it runs.
export function roundDuration(round, now = Date.now()) {
  const data = round.round_data || {};
  for (const key of ["duration", "time_total", "round_duration"]) {
    if (num(data[key]) !== null) return data[key];
  }
  const start = round.started_at ? Date.parse(round.started_at) : NaN;
  if (Number.isNaN(start)) return null;
  const end = round.finished_at ? Date.parse(round.finished_at) : NaN;
  if (!Number.isNaN(end)) return Math.max(0, (end - start) / 1000);
  return LIVE_ROUND.has(String(round.status || "").toLowerCase()) ? Math.max(0, (now - start) / 1000) : null;
}

// "validated/asked" from round_data.validation, with the clients not asked because they do not validate
// ("2/3 (1 skipped)"); "" for a round without validation. The CLI's `validation_cell`, same rules.
export function validatedCell(round) {
  const data = round.round_data?.validation;
  if (!data || typeof data !== "object" || !Number.isInteger(data.clients)) return "";
  const validated = data.validated ?? data.completed;
  const cell = `${Number.isInteger(validated) ? validated : "?"}/${data.clients}`;
  const skipped = Array.isArray(data.skipped) ? data.skipped.length : 0;
  return skipped ? `${cell} (${skipped} skipped)` : cell;
}

export function aggregationSeconds(round) {
  return sum((round.combiners || []).map((c) => num(c?.time_aggregation)));
}

function senderKey(record) {
  const sender = record.sender || {};
  return String(sender.client_id || sender.name || "unknown");
}

function senderName(record) {
  const sender = record.sender || {};
  return String(sender.name || sender.client_id || "unknown");
}

// Series names and labels per client: the name, or name + short id when two clients share a name.
export function clientLabels(records) {
  const names = new Map();
  for (const r of records) names.set(senderKey(r), senderName(r));
  const count = new Map();
  for (const name of names.values()) count.set(name, (count.get(name) || 0) + 1);
  const labels = new Map();
  for (const [key, name] of names) labels.set(key, count.get(name) > 1 ? `${name} (${key.slice(0, 8)})` : name);
  return new Map([...labels].sort((a, b) => a[1].localeCompare(b[1])));
}

// Validations grouped by round: by round_id, else by the round whose new model they validated.
export function validationsByRound(rounds, validations) {
  const byId = new Map(rounds.map((r) => [r.round_id, r]));
  const byModel = new Map(rounds.filter((r) => r.new_model_id).map((r) => [r.new_model_id, r]));
  const out = new Map(rounds.map((r) => [r.round_id, []]));
  for (const v of validations) {
    const round = (v.round_id && byId.get(v.round_id)) || (v.model_id && byModel.get(v.model_id));
    if (round) out.get(round.round_id).push(v);
  }
  return out;
}

export function numericKeys(records, field = "data") {
  const keys = [];
  for (const r of records) {
    const data = r[field];
    if (!data || typeof data !== "object") continue;
    for (const [k, v] of Object.entries(data)) {
      if (num(v) !== null && !keys.includes(k)) keys.push(k);
    }
  }
  return keys;
}

export function mean(values) {
  return values.length ? values.reduce((a, b) => a + b, 0) / values.length : null;
}

// Per validation metric: {key, clients: [{key, label, points: [{x: round, y}]}], mean: [{x, y, n}]}.
export function validationSeries(rounds, validations) {
  const grouped = validationsByRound(rounds, validations);
  const all = [...grouped.values()].flat();
  const labels = clientLabels(all);
  const ordered = [...rounds].sort((a, b) => a.round_number - b.round_number);
  return numericKeys(all).map((metric) => {
    const clients = new Map([...labels].map(([key, label]) => [key, { key, label, points: [] }]));
    const meanPoints = [];
    for (const round of ordered) {
      const values = [];
      for (const v of grouped.get(round.round_id) || []) {
        const y = num((v.data || {})[metric]);
        if (y === null) continue;
        values.push(y);
        clients.get(senderKey(v)).points.push({ x: round.round_number, y, data: { round: round.round_number } });
      }
      if (values.length) meanPoints.push({ x: round.round_number, y: mean(values), data: { round: round.round_number, n: values.length } });
    }
    return { key: metric, clients: [...clients.values()].filter((c) => c.points.length), mean: meanPoints };
  });
}

// Mean of each numeric validation metric per round: Map round_id -> {metric: mean}.
export function roundMetricMeans(rounds, validations) {
  const out = new Map();
  for (const [roundId, list] of validationsByRound(rounds, validations)) {
    const means = {};
    for (const key of numericKeys(list)) {
      means[key] = mean(list.map((v) => num((v.data || {})[key])).filter((y) => y !== null));
    }
    out.set(roundId, means);
  }
  return out;
}

// log_metric values per metric key and client. Steps restart with every training task, so rounds
// are laid end to end: x = offset of the round + step (offset = steps of the earlier rounds).
// `onlyRound` (a round number) keeps one round and uses the raw step. A value without a step counts
// as the next step of its client in that round.
export function trainingSeries(metrics, rounds, onlyRound = null) {
  const roundNumber = new Map(rounds.map((r) => [r.round_id, r.round_number]));
  const entries = [...metrics]
    .filter((m) => num(m.value) !== null)
    .map((m) => ({ m, round: roundNumber.has(m.round_id) ? roundNumber.get(m.round_id) : null }))
    .filter((e) => onlyRound === null || e.round === onlyRound)
    .sort((a, b) => String(a.m.timestamp).localeCompare(String(b.m.timestamp)));
  const counters = new Map();
  for (const e of entries) {
    if (Number.isInteger(e.m.step)) {
      e.step = e.m.step;
    } else {
      const ck = `${e.m.key}|${senderKey(e.m)}|${e.round}`;
      e.step = counters.get(ck) ?? 0;
      counters.set(ck, e.step + 1);
    }
  }
  const roundOrder = [...new Set(entries.map((e) => e.round))].sort((a, b) => (a ?? Infinity) - (b ?? Infinity));
  const labels = clientLabels(entries.map((e) => e.m));
  return [...new Set(entries.map((e) => e.m.key))].sort().map((key) => {
    const mine = entries.filter((e) => e.m.key === key);
    const rounds = roundOrder.filter((round) => mine.some((e) => e.round === round));
    const laid = onlyRound === null && rounds.length > 1;
    const offsets = new Map();
    const markers = [];
    let offset = 0;
    for (const round of rounds) {
      const steps = mine.filter((e) => e.round === round).map((e) => e.step);
      if (!steps.length) continue;
      const first = Math.min(...steps);
      offsets.set(round, offset - first);
      if (laid) {
        markers.push({ x: offset, label: round === null ? "other" : `R${round}` });
      }
      offset += Math.max(...steps) - first + 1;
    }
    const clients = new Map([...labels].map(([k, label]) => [k, { key: k, label, points: [] }]));
    for (const e of mine) {
      clients.get(senderKey(e.m)).points.push({
        x: laid ? offsets.get(e.round) + e.step : e.step,
        y: e.m.value,
        data: { step: e.step, round: e.round ?? "", metricId: e.m.metric_id },
      });
    }
    return { key, clients: [...clients.values()].filter((c) => c.points.length), markers };
  });
}
