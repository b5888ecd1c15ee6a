// The task types panel: each type's limits and how many of its tasks run now ("running /
// limit"), whether it runs in worker processes, and pause/resume, read again every few
// seconds (running counts change with every task); and its runs, failures and durations
// over the charts' window (GET /stats, kept by glance.js).

import { canWrite, onAccessChange } from "./access.js";
import { api, describeError } from "./api.js";
import { $, h } from "./dom.js";
import { formatCount, formatSeconds } from "./format.js";
import { onGlance, typeStats, windowLabel } from "./glance.js";
import { toast } from "./toast.js";

const REFRESH_EVERY = 3000;
const panel = { list: [], loading: false };

/** Read the task types (one read at a time) and show them. */
export async function loadTypePanel() {
  if (panel.loading) return;
  panel.loading = true;
  try {
    panel.list = await api("GET", "/task-types");
    render();
  } catch (error) {
    toast(`Cannot load task types: ${describeError(error)}`, "error");
  } finally {
    panel.loading = false;
  }
}

function render() {
  $("#type-list").replaceChildren(...panel.list.map(typeItem));
}

/** "2 / 3 running", "5/s", "per account": what holds this type's tasks back, and how full. */
function limitsText(type) {
  const parts = [];
  parts.push(type.concurrency ? `${type.running} / ${type.concurrency} running` : `${type.running} running`);
  if (type.rate_limit) parts.push(`at most ${type.rate_limit}`);
  if (type.limit_key) parts.push(`per ${type.limit_key}`);
  return parts.join(" · ");
}

/** "120 runs · 3 failed · p50 85 ms · p95 1.2 s": the type's sums over the charts' window. */
function statsText(name) {
  const stats = typeStats(name);
  const runs = stats ? stats.completed + stats.failed + stats.cancelled : 0;
  if (!runs) return `no runs in the ${windowLabel()}`;
  const parts = [`${formatCount(runs)} ${runs === 1 ? "run" : "runs"}`, `${formatCount(stats.failed)} failed`];
  if (stats.cancelled) parts.push(`${formatCount(stats.cancelled)} cancelled`);
  if (stats.duration_p50 !== null) {
    parts.push(`p50 ${formatSeconds(stats.duration_p50)}`, `p95 ${formatSeconds(stats.duration_p95)}`);
  }
  return parts.join(" · ");
}

function typeItem(type) {
  const paused = Boolean(type.paused);
  const item = h("li", { className: "task-type", dataset: { type: type.name, paused: String(paused) } });
  const title = h("div", { className: "schedule-title" },
    h("span", { className: "task-name", text: type.name }),
    type.process ? h("span", { className: "badge badge-quiet", text: "process" }) : null,
    paused ? h("span", { className: "badge", dataset: { status: "paused" }, text: "paused" }) : null);
  const meta = h("div", { className: "schedule-meta" }, h("span", { className: "type-limits", text: limitsText(type) }));
  const stats = typeStats(type.name);
  const figures = h("div", {
    className: "type-stats", dataset: { failed: String(Boolean(stats?.failed)) },
    title: `Over the ${windowLabel()}: runs that ended, failures, attempt durations`, text: statsText(type.name),
  });
  const action = paused ? "resume" : "pause";
  const button = h("button", {
    type: "button", className: "btn btn-small", dataset: { action },
    "aria-label": `${paused ? "Resume" : "Pause"} task type ${type.name}`, text: paused ? "Resume" : "Pause",
    onclick: (event) => typeAction(type.name, action, event.currentTarget),
  });
  item.append(h("div", { className: "schedule-info" }, title, meta, figures),
    canWrite() ? h("div", { className: "schedule-actions" }, button) : null);
  return item;
}

async function typeAction(name, action, button) {
  button.disabled = true;
  try {
    const answer = await api("POST", `/task-types/${encodeURIComponent(name)}/${action}`);
    panel.list = panel.list.map((type) => (type.name === answer.name ? answer : type));
    render();
    toast(`${answer.name} ${answer.paused ? "paused" : "resumed"}`, "success");
  } catch (error) {
    toast(`Cannot ${action} ${name}: ${describeError(error)}`, "error");
    button.disabled = false;
  }
}

/** Keep the running counts fresh while the page is visible. */
export function setupTypePanel() {
  onAccessChange(render); // a read-only token gets no Pause/Resume buttons
  onGlance(render); // the runs over the charts' window
  setInterval(() => {
    if (document.visibilityState === "visible") loadTypePanel();
  }, REFRESH_EVERY);
}
