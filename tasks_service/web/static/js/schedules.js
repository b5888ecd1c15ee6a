// The schedules panel: each periodic schedule with its next run (a relative time that
// ticks) and its latest run; pause/resume and run now for all; edit and delete for those
// made over the API; each one's recent runs on demand, a click away from their details.

import { canWrite, onAccessChange } from "./access.js";
import { api, describeError } from "./api.js";
import { openDetail } from "./detail.js";
import { $, h, setText, timeNode } from "./dom.js";
import { paramsSummary, parseTime, relative, shortId } from "./format.js";
import { closeScheduleForm, openScheduleForm, setupScheduleForm } from "./schedule-form.js";
import { receiveTask } from "./tasks-list.js";
import { toast } from "./toast.js";

// More than this many schedules are not all drawn (GET /schedules lists every one).
const SHOWN = 200;
const RECENT_RUNS = 5;
const CONFIRM_FOR_MS = 4000;

const schedules = { list: [], loadedAt: 0, loading: false, open: new Set(), runs: new Map() };

/** Read the schedules (one read at a time) and show them. */
export async function loadSchedules() {
  if (schedules.loading) return;
  schedules.loading = true;
  try {
    schedules.list = await api("GET", "/schedules");
    schedules.loadedAt = Date.now();
    renderSchedules();
    for (const id of schedules.open) loadRuns(id);
  } catch (error) {
    toast(`Cannot load schedules: ${describeError(error)}`, "error");
    schedules.loadedAt = Date.now();
  } finally {
    schedules.loading = false;
  }
}

function renderSchedules() {
  const list = $("#schedule-list");
  list.replaceChildren(...schedules.list.slice(0, SHOWN).map(scheduleItem));
  const more = $("#schedules-more");
  more.hidden = schedules.list.length <= SHOWN;
  setText(more, `…and ${schedules.list.length - SHOWN} more (GET /schedules lists them all).`);
  $("#schedules-empty").hidden = schedules.list.length > 0;
}

function replaceSchedule(answer) {
  const known = schedules.list.some((schedule) => schedule.id === answer.id);
  schedules.list = known
    ? schedules.list.map((schedule) => (schedule.id === answer.id ? answer : schedule))
    : [...schedules.list, answer];
  renderSchedules();
}

function button(action, text, label, onclick, className = "btn btn-small") {
  return h("button", { type: "button", className, dataset: { action }, "aria-label": label, text, onclick });
}

/** One schedule: its trigger, next and latest run, params, its buttons and maybe its runs. */
function scheduleItem(schedule) {
  const paused = Boolean(schedule.paused);
  const madeOverApi = schedule.source === "api";
  const { id } = schedule;
  const item = h("li", {
    className: "schedule",
    dataset: { scheduleId: id, paused: String(paused), source: schedule.source },
  });
  const title = h("div", { className: "schedule-title" },
    h("span", { className: "task-name", text: id }),
    paused ? h("span", { className: "badge", dataset: { status: "paused" }, text: "paused" }) : null,
    h("span", { className: "source", title: madeOverApi ? "made over the API" : "defined in code", text: madeOverApi ? "api" : "code" }));
  const nextRun = schedule.next_run_at;
  const meta = h("div", { className: "schedule-meta" },
    h("span", { className: "trigger", text: schedule.trigger }),
    schedule.task !== id ? h("span", { text: `runs ${schedule.task}` }) : null,
    h("span", { className: "next-run" },
      paused || !nextRun ? "not scheduled" : ["next ", timeNode(nextRun, relative(nextRun), "relative")]),
    schedule.last_run_at
      ? h("span", { className: "last-run" }, "last ", timeNode(schedule.last_run_at, relative(schedule.last_run_at), "relative"))
      : null);
  const params = paramsSummary(schedule.params);
  const isOpen = schedules.open.has(id);
  const writes = canWrite(); // a read-only token sees the schedules and their runs only
  const actions = h("div", { className: "schedule-actions" },
    writes ? button(paused ? "resume" : "pause", paused ? "Resume" : "Pause", `${paused ? "Resume" : "Pause"} schedule ${id}`,
      (event) => scheduleAction(id, paused ? "resume" : "pause", event.currentTarget)) : null,
    writes ? button("run", "Run now", `Run schedule ${id} now`, (event) => scheduleAction(id, "run", event.currentTarget)) : null,
    button("runs", "Runs", `Recent runs of schedule ${id}`, () => toggleRuns(id)),
    writes && madeOverApi ? button("edit", "Edit", `Edit schedule ${id}`, () => openScheduleForm(schedule)) : null,
    writes && madeOverApi ? button("delete", "Delete", `Delete schedule ${id}`,
      (event) => deleteSchedule(id, event.currentTarget), "btn btn-small btn-danger") : null);
  actions.querySelector('[data-action="runs"]').setAttribute("aria-expanded", String(isOpen));
  const info = h("div", { className: "schedule-info" }, title, meta,
    params ? h("div", { className: "params-summary", text: params }) : null);
  const row = h("div", { className: "schedule-row" }, info, actions);
  item.append(row);
  if (isOpen) item.append(runsList(id));
  return item;
}

/** The schedule's latest runs, newest first; each opens its task's details. */
function runsList(id) {
  const runs = schedules.runs.get(id);
  const list = h("ul", { className: "schedule-runs", "aria-label": `Recent runs of ${id}` });
  if (!runs) list.append(h("li", { className: "hint", text: "Loading…" }));
  else if (!runs.length) list.append(h("li", { className: "hint", text: "No runs yet." }));
  for (const task of runs ?? []) {
    list.append(h("li", { dataset: { taskId: task.id } },
      h("button", { type: "button", className: "btn btn-quiet btn-small", title: task.id,
        "aria-label": `Open task ${task.id}`, text: shortId(task.id), onclick: () => openDetail(task.id) }),
      h("span", { className: "badge", dataset: { status: task.status }, text: task.status }),
      timeNode(task.created_at, relative(task.created_at), "relative")));
  }
  return list;
}

function toggleRuns(id) {
  if (schedules.open.has(id)) schedules.open.delete(id);
  else {
    schedules.open.add(id);
    loadRuns(id);
  }
  renderSchedules();
}

async function loadRuns(id) {
  try {
    const query = new URLSearchParams({ schedule_id: id, limit: String(RECENT_RUNS) });
    const page = await api("GET", `/tasks?${query}`);
    schedules.runs.set(id, page.items);
    if (schedules.open.has(id)) renderSchedules();
  } catch (error) {
    toast(`Cannot load the runs of ${id}: ${describeError(error)}`, "error");
  }
}

async function scheduleAction(id, action, node) {
  node.disabled = true;
  try {
    const answer = await api("POST", `/schedules/${encodeURIComponent(id)}/${action}`);
    if (action === "run") {
      receiveTask(answer);
      toast(`Running ${answer.name} ${shortId(answer.id)} now`, "success");
      if (schedules.open.has(id)) loadRuns(id);
      node.disabled = false;
    } else {
      replaceSchedule(answer);
    }
  } catch (error) {
    toast(`Cannot ${action} ${id}: ${describeError(error)}`, "error");
    node.disabled = false;
  }
}

/** Delete takes two clicks: the first asks "Really delete?" for a few seconds. */
async function deleteSchedule(id, node) {
  if (node.dataset.confirm !== "true") {
    node.dataset.confirm = "true";
    setText(node, "Really delete?");
    setTimeout(() => {
      if (!node.isConnected) return;
      node.dataset.confirm = "false";
      setText(node, "Delete");
    }, CONFIRM_FOR_MS);
    return;
  }
  node.disabled = true;
  try {
    await api("DELETE", `/schedules/${encodeURIComponent(id)}`);
    schedules.list = schedules.list.filter((schedule) => schedule.id !== id);
    schedules.open.delete(id);
    closeScheduleForm();
    renderSchedules();
    toast(`Deleted schedule ${id}`, "success");
  } catch (error) {
    toast(`Cannot delete ${id}: ${describeError(error)}`, "error");
    node.disabled = false;
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
  setupScheduleForm({ onSaved: replaceSchedule });
  setInterval(tickSchedules, 1000);
  const showWrites = () => {
    $("#schedule-new").hidden = !canWrite();
    if (!canWrite()) closeScheduleForm();
    renderSchedules();
  };
  onAccessChange(showWrites);
}
