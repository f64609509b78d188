// Clients: name, id, status, last seen, combiner, package and its checksum, version, attributes and
// telemetry (the latest value of each key the client reported).

import { api } from "./api.js";
import { badge, chips, clientStartHint, errorSlot, fmtAgo, fmtTime, h, section, shortId, table, update } from "./dom.js";
import { every, POLL_MS } from "./poll.js";

const FILTERS = [["", "All"], ["online", "Online"], ["offline", "Offline"]];
const MAX_ROWS = 500;

export async function mount(root, ctx) {
  const errors = errorSlot();
  const body = h("div");
  let filter = new URLSearchParams(window.location.search).get("status") || "";
  const buttons = FILTERS.map(([value, label]) => {
    const b = h("button", { type: "button", class: "toggle", dataset: { filter: value } }, label);
    b.addEventListener("click", () => {
      filter = value;
      mark();
      poller.now();
    });
    return b;
  });
  const mark = () => buttons.forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.filter === filter)));
  mark();
  root.append(h("div", { class: "card-head" }, h("h1", {}, "Clients"), h("div", { class: "toggles" }, buttons)),
    errors.el, body);

  async function refresh() {
    const [clients, combiners] = await Promise.all([
      api.list("clients", { filters: filter ? { status: filter } : {}, sortKey: "name", order: "asc", limit: MAX_ROWS }),
      api.list("combiners"),
    ]);
    const combinerName = new Map(combiners.result.map((c) => [c.combiner_id, c.name]));
    errors.clear();
    const empty = filter === ""
      ? ["No clients connected yet: start one from your project folder with ", { code: clientStartHint(ctx.origin) },
        " (add ", { code: "--local-package" }, " to use ./client instead of the uploaded package)."]
      : `No ${filter} clients.`;
    update(body, section(null, h("p", { class: "muted" }, `${clients.count} client(s)${
      clients.count > clients.result.length ? `, the first ${clients.result.length} by name shown` : ""}`), table([
      { label: "Name", key: "name", cell: (c) => h("b", {}, c.name) },
      { label: "Id", key: "id", cell: (c) => shortId(c.client_id) },
      { label: "Status", key: "status", cell: (c) => badge(c.status) },
      { label: "Last seen", key: "last-seen", cell: (c) => h("span", { title: fmtTime(c.last_seen) }, fmtAgo(c.last_seen)) },
      { label: "Combiner", key: "combiner", cell: (c) => combinerName.get(c.combiner_id) || shortId(c.combiner_id) },
      { label: "Package", key: "package", cell: (c) => c.package },
      { label: "Package checksum", key: "checksum", cell: (c) => (c.package_checksum ? shortId(c.package_checksum)
        : h("span", { class: "muted", title: "Clients using --local-package report no checksum" }, "—")) },
      { label: "Version", key: "version", cell: (c) => c.client_version },
      { label: "IP", key: "ip", cell: (c) => c.ip },
      { label: "Attributes", key: "attributes", cell: (c) => chips(c.attributes) },
      { label: "Telemetry", key: "telemetry", cell: (c) => chips(c.telemetry) },
    ], clients.result, {
      testid: "clients",
      rowAttrs: (c) => ({ dataset: { clientId: c.client_id, name: c.name } }),
      empty,
    })));
  }

  const poller = every(POLL_MS, refresh, { onError: (err) => errors.show(err) });
}
