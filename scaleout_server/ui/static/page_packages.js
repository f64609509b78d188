// Compute packages: upload one (chunked, then activated, as `scaleout package set-active` does), list
// them, activate an older one, download.

import { api, downloadLink } from "./api.js";
import { badge, errorSlot, fmtBytes, fmtTime, h, section, shortId, table, update } from "./dom.js";
import { every, POLL_MS } from "./poll.js";
import { handleUploadForm } from "./upload.js";

const EXTENSIONS = [".tar.gz", ".tgz", ".tar.bz2"];

function uploadForm(onUploaded) {
  const file = h("input", { type: "file", name: "file", accept: EXTENSIONS.join(","), required: true, "data-testid": "package-file" });
  const name = h("input", { type: "text", name: "name", placeholder: "default: the file name", "data-testid": "package-name" });
  const description = h("input", { type: "text", name: "description", placeholder: "optional" });
  const restart = h("input", { type: "checkbox", name: "restart_clients" });
  const status = h("div", { class: "form-status", "aria-live": "polite", "data-testid": "package-upload-status" });
  const submit = h("button", { type: "submit", class: "primary" }, "Upload and activate");
  const form = h("form", { class: "form", "data-testid": "package-form", novalidate: true },
    h("label", {}, h("span", {}, "Package archive (", EXTENSIONS.join(", "), ", made with ",
      h("code", {}, "scaleout package create"), ")"), file),
    h("label", {}, h("span", {}, "Name"), name),
    h("label", {}, h("span", {}, "Description"), description),
    h("label", { class: "check" }, restart, " Ask connected clients to restart and fetch it"),
    h("div", { class: "buttons" }, submit),
    status);

  handleUploadForm(form, {
    file, status, submit,
    check: (chosen) => {
      if (!chosen) return "Choose a package file first (a .tgz made with `scaleout package create --path client`).";
      if (!EXTENSIONS.some((ext) => chosen.name.toLowerCase().endsWith(ext))) {
        return `${chosen.name} is not a package archive: the file must end in ${EXTENSIONS.join(", ")}.`;
      }
      return null;
    },
    register: async (chosen, token) => {
      const body = new FormData();
      body.set("file_token", token);
      body.set("file_name", chosen.name);
      body.set("name", name.value.trim() || chosen.name);
      body.set("description", description.value.trim());
      body.set("restart_clients", restart.checked ? "true" : "false");
      const reply = await api.postForm("packages/", body);
      const restarted = reply.restarted_clients ? ` Asked ${reply.restarted_clients.length} client(s) to restart.` : "";
      name.value = "";
      description.value = "";
      return h("p", { class: "ok-text", "data-testid": "package-uploaded" },
        `Package ${reply.package.name} uploaded and active (checksum ${reply.package.checksum.slice(0, 12)}…).${restarted}`);
    },
    onUploaded,
  });
  return form;
}

export async function mount(root) {
  const errors = errorSlot();
  const list = h("div");
  let poller = null;
  root.append(h("h1", {}, "Compute packages"), errors.el,
    h("section", { class: "card" }, h("h2", {}, "Packages"), list),
    section("Upload a package", uploadForm(() => poller.now())));

  async function activate(pkg) {
    try {
      await api.put("packages/active", { id: pkg.package_id });
      errors.clear();
    } catch (err) {
      errors.show(err);
    }
    poller.now();
  }

  async function refresh() {
    const packages = await api.list("packages", { sortKey: "committed_at" });
    errors.clear();
    update(list, table([
      { label: "Name", key: "name", cell: (p) => h("b", {}, p.name) },
      { label: "File", key: "file", cell: (p) => p.file_name },
      { label: "Size", key: "size", cell: (p) => fmtBytes(p.size), class: "num" },
      { label: "Checksum (SHA-256)", key: "checksum", cell: (p) => shortId(p.checksum) },
      { label: "Helper", key: "helper", cell: (p) => p.helper },
      { label: "Description", key: "description", cell: (p) => p.description },
      { label: "Uploaded", key: "uploaded", cell: (p) => fmtTime(p.committed_at) },
      { label: "State", key: "state", cell: (p) => (p.active ? badge("active")
        : h("button", { type: "button", class: "small", "data-testid": "activate", onclick: () => activate(p) }, "Activate")) },
      { label: "", key: "download", cell: (p) => downloadLink(`packages/download?name=${encodeURIComponent(p.name)}`,
        p.file_name, (err) => errors.show(err)) },
    ], packages.result, {
      testid: "packages",
      rowAttrs: (p) => ({ dataset: { packageId: p.package_id, active: p.active ? "true" : "false" } }),
      empty: ["No compute package yet. Make one from your project with ", { code: "scaleout package create --path client" },
        " and upload it above (or with ", { code: "scaleout package set-active --file package.tgz -n v1" }, ")."],
    }));
  }

  poller = every(POLL_MS, refresh, { onError: (err) => errors.show(err) });
}
