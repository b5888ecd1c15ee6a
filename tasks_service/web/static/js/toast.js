// Short-lived messages in the corner: what an action did, or why it could not.

import { $, h } from "./dom.js";

export function toast(message, kind = "info") {
  const node = h("div", { className: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" });
  node.append(h("span", { text: message }));
  node.append(h("button", {
    type: "button", className: "toast-close", "aria-label": "Dismiss", text: "✕",
    onclick: () => node.remove(),
  }));
  $("#toasts").append(node);
  setTimeout(() => node.remove(), kind === "error" ? 8000 : 4000);
}
