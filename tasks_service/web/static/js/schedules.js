// The schedules panel: each periodic schedule with its next run (a relative time that
// ticks), pause/resume, and run now, whose new task goes straight to the list.

import { canWrite, onAccessChange } from "./access.js";
import { api, describeError } from "./api.js";
import { $, h, setText, timeNode } from "./dom.js";
import { paramsSummary, parseTime, relative, shortId } from "./format.js";
import { receiveTask } from "./tasks-list.js";
import { toast } from "./toast.js";

const schedules = { list: [], loadedAt: 0, loading: false };

/** Read the schedules (one read at a time) and show them. */
export async function loadSchedules() {
  if (schedules.loading) return;
  schedules.loading = true;
  try {
    schedules.list = await api("GET", "/schedules");
    schedules.loadedAt = Date.now();
    renderSchedules();
  } catch (error) {
    toast(`Cannot load schedules: ${describeError(error)}`, "error");
    schedules.loadedAt = Date.now();
  } finally {
    schedules.loading = false;
  }
}

function renderSchedules() {
  const list = $("#schedule-list");
  list.replaceChildren(...schedules.list.map(scheduleItem));
  $("#schedules-empty").hidden = schedules.list.length > 0;
}

/** One schedule: its trigger, next run and params, with Pause/Resume and Run now. */
function scheduleItem(schedule) {
  const paused = Boolean(schedule.paused);
  const label = schedule.id;
  const nextRun = schedule.next_run_at;
  const item = h("li", {
    className: "schedule",
    dataset: { scheduleId: schedule.id, paused: String(paused) },
  });
  const title = h("div", { className: "schedule-title" },
    h("span", { className: "task-name", text: schedule.id }),
    paused ? h("span", { className: "badge", dataset: { status: "paused" }, text: "paused" }) : null);
  const meta = h("div", { className: "schedule-meta" },
    h("span", { className: "trigger", text: schedule.trigger }),
    schedule.task !== schedule.id ? h("span", { text: `runs ${schedule.task}` }) : null,
    h("span", { className: "next-run" },
      paused || !nextRun ? "not scheduled" : [
        "next ",
        timeNode(nextRun, relative(nextRun), "relative"),
      ]));
  const params = paramsSummary(schedule.params);
  const actions = !canWrite() ? null : h("div", { className: "schedule-actions" },
    h("button", {
      type: "button", className: "btn btn-small", dataset: { action: paused ? "resume" : "pause" },
      "aria-label": `${paused ? "Resume" : "Pause"} schedule ${label}`, text: paused ? "Resume" : "Pause",
      onclick: (event) => scheduleAction(schedule.id, paused ? "resume" : "pause", event.currentTarget),
    }),
    h("button", {
      type: "button", className: "btn btn-small", dataset: { action: "run" },
      "aria-label": `Run schedule ${label} now`, text: "Run now",
      onclick: (event) => scheduleAction(schedule.id, "run", event.currentTarget),
    }));
  item.append(h("div", { className: "schedule-info" }, title, meta,
    params ? h("div", { className: "params-summary", text: params }) : null), ...(actions ? [actions] : []));
  return item;
}

async function scheduleAction(id, action, button) {
  button.disabled = true;
  try {
    const answer = await api("POST", `/schedules/${encodeURIComponent(id)}/${action}`);
    if (action === "run") {
      receiveTask(answer);
      toast(`Running ${answer.name} ${shortId(answer.id)} now`, "success");
    } else {
      schedules.list = schedules.list.map((schedule) => (schedule.id === answer.id ? answer : schedule));
      renderSchedules();
    }
  } catch (error) {
    toast(`Cannot ${action} ${id}: ${describeError(error)}`, "error");
    button.disabled = false;
  }
}

/** Relative times tick; a schedule whose next run has passed is read again (at most every 5 s). */
function tickSchedules() {
  for (const node of document.querySelectorAll("#schedule-list time.relative")) {
    setText(node, relative(node.dateTime));
  }
  const now = Date.now();
  const due = schedules.list.some((schedule) => {
    const next = parseTime(schedule.next_run_at);
    return !schedule.paused && next && next.getTime() + 1000 < now;
  });
  if (due && now - schedules.loadedAt > 5000) loadSchedules();
}

/** Keep the relative times ticking (and overdue schedules read again) once a second. */
export function setupSchedules() {
  setInterval(tickSchedules, 1000);
  onAccessChange(renderSchedules);
}
