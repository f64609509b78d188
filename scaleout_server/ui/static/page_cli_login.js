// CLI login: `scaleout login <url>` opens this page; approving hands the waiting CLI a credential
// (on a secured server a new admin token, so the approval needs the admin token set on this page).

import { api, getToken } from "./api.js";
import { errorSlot, h, update } from "./dom.js";

export async function mount(root, ctx) {
  const requestId = ctx.params.requestId;
  const errors = errorSlot();
  const body = h("div", { "data-testid": "cli-login" });
  root.append(h("h1", {}, "CLI login"), errors.el, h("section", { class: "card" }, body));

  let info;
  try {
    info = await api.get(`/api/cli-auth/requests/${encodeURIComponent(requestId)}`);
  } catch (err) {
    errors.show(err);
    return;
  }
  if (info.status !== "pending") {
    update(body, h("p", {}, `This login was already ${info.status}.`));
    return;
  }
  const decide = async (approve) => {
    try {
      await api.post("/api/cli-auth/approve", { requestId, approve });
      update(body, h("p", { class: "ok-text", "data-testid": "cli-login-done" },
        approve ? "Approved: return to your terminal, the CLI is logged in." : "Refused: the CLI reports the refusal."));
      errors.clear();
    } catch (err) {
      errors.show(err);
    }
  };
  const needsToken = info.secured && !getToken();
  update(body,
    h("p", {}, "A command line (", h("code", {}, "scaleout login"), `) asks to act on this server. Request ${requestId}, `,
      `valid for ${Math.ceil(info.expiresIn / 60)} more minute(s).`),
    info.secured ? h("p", { class: "muted" }, "Approving gives it a new admin token (30 days), listed and revocable with ",
      h("code", {}, "scaleout token list"), ".") : h("p", { class: "muted" }, "This server runs in local mode: no token is needed."),
    needsToken ? h("p", { class: "error" }, "Set your admin token first with the “API token” button at the bottom of the page.") : null,
    h("div", { class: "buttons" },
      h("button", { type: "button", class: "primary", "data-testid": "cli-login-approve", onclick: () => decide(true) }, "Approve"),
      h("button", { type: "button", onclick: () => decide(false) }, "Refuse")));
}
