// The task table: the first page read with the filters, older pages by cursor, and each
// change that arrives (from the event stream or an action's answer) applied in place.

import { onAccessChange } from "./access.js";
import { api, describeError } from "./api.js";
import { $ } from "./dom.js";
import { buildRow, updateRow } from "./task-row.js";
import { toast } from "./toast.js";

/** The statuses a task never leaves. */
export const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const PAGE_SIZE = 50;
const MAX_LIVE_ROWS = 200; // rows kept while live inserts push older ones down

const tasks = {
  rows: new Map(), // id -> {task, tr, cells}
  nextCursor: null,
  loading: 0, // a list read in flight: live changes wait in `held`
  held: [],
  loadSeq: 0,
  loadedOnce: false,
  keep: PAGE_SIZE,
};
let openTask = () => {}; // what a click on a row does: set by setupTaskList

function filters() {
  const statuses = [...document.querySelectorAll('#filters input[name="status"]:checked')].map((box) => box.value);
  const name = $("#filter-name").value.trim();
  return { statuses, name };
}

function matchesFilters(task) {
  const { statuses, name } = filters();
  return (!statuses.length || statuses.includes(task.status)) && (!name || task.name === name);
}

function listQuery(cursor) {
  const { statuses, name } = filters();
  const query = new URLSearchParams();
  for (const status of statuses) query.append("status", status);
  if (name) query.set("name", name);
  query.set("limit", String(PAGE_SIZE));
  if (cursor) query.set("cursor", cursor);
  return `/tasks?${query}`;
}

/** Newest first, as the API orders them: by creation time, then id. */
function newerThan(a, b) {
  if (a.created_at !== b.created_at) return a.created_at > b.created_at;
  return a.id > b.id;
}

/** Read the first page again, with the filters; live changes meanwhile wait their turn. */
export async function reloadTasks() {
  const seq = ++tasks.loadSeq;
  tasks.loading += 1;
  $("#task-table").setAttribute("aria-busy", "true");
  try {
    const page = await api("GET", listQuery(null));
    if (seq !== tasks.loadSeq) return;
    tasks.rows.clear();
    $("#task-rows").replaceChildren();
    for (const task of page.items) appendRow(task);
    tasks.nextCursor = page.next_cursor;
    tasks.keep = Math.max(PAGE_SIZE, page.items.length);
    tasks.loadedOnce = true;
    showListError(null);
  } catch (error) {
    if (seq === tasks.loadSeq) showListError(`Cannot load tasks: ${describeError(error)}`);
  } finally {
    tasks.loading -= 1;
    if (!tasks.loading) releaseHeld();
    if (seq === tasks.loadSeq) $("#task-table").setAttribute("aria-busy", "false");
    updateListFoot();
  }
}

async function loadOlder() {
  if (!tasks.nextCursor) return;
  const seq = tasks.loadSeq;
  const button = $("#older");
  button.disabled = true;
  tasks.loading += 1;
  try {
    const page = await api("GET", listQuery(tasks.nextCursor));
    if (seq !== tasks.loadSeq) return;
    for (const task of page.items) {
      if (!tasks.rows.has(task.id)) appendRow(task);
    }
    tasks.nextCursor = page.next_cursor;
    tasks.keep = Math.max(tasks.keep, tasks.rows.size);
  } catch (error) {
    toast(`Cannot load older tasks: ${describeError(error)}`, "error");
  } finally {
    button.disabled = false;
    tasks.loading -= 1;
    if (!tasks.loading) releaseHeld();
    updateListFoot();
  }
}

function releaseHeld() {
  const held = tasks.held;
  tasks.held = [];
  for (const task of held) applyTask(task);
}

function showListError(message) {
  const node = $("#tasks-error");
  node.hidden = !message;
  node.textContent = message ?? "";
}

function updateListFoot() {
  const count = tasks.rows.size;
  $("#tasks-empty").hidden = count > 0 || !tasks.loadedOnce;
  $("#tasks-count").textContent = count ? `${count} task${count === 1 ? "" : "s"} shown` : "";
  $("#older").hidden = !tasks.nextCursor;
}

/** A task from the event stream (or an action's answer). */
export function receiveTask(task) {
  if (tasks.loading) tasks.held.push(task);
  else applyTask(task);
}

/** Is `task` older news than what the row shows? (A slow answer can trail the stream.) */
function isStale(task, shown) {
  if (TERMINAL.has(shown.status)) return !TERMINAL.has(task.status) || task.status !== shown.status;
  return task.attempts < shown.attempts;
}

function applyTask(task) {
  const row = tasks.rows.get(task.id);
  if (row) {
    if (!isStale(task, row.task)) updateRow(row, task);
    return;
  }
  if (!matchesFilters(task)) return;
  const rowsNode = $("#task-rows");
  // Where does it go? Usually at the top; after older rows only if we hold every older one.
  let before = null;
  for (const other of rowsNode.children) {
    const otherTask = tasks.rows.get(other.dataset.taskId)?.task;
    if (otherTask && newerThan(task, otherTask)) {
      before = other;
      break;
    }
  }
  if (!before && tasks.nextCursor) return; // it belongs to a page not loaded yet
  const created = addRow(task);
  rowsNode.insertBefore(created.tr, before);
  created.tr.classList.add("row-new");
  setTimeout(() => created.tr.classList.remove("row-new"), 1500);
  trimRows();
  updateListFoot();
}

/** Live inserts push rows down; keep the table to a sane size (the rest are a page away). */
function trimRows() {
  const limit = Math.max(MAX_LIVE_ROWS, tasks.keep);
  const rowsNode = $("#task-rows");
  if (rowsNode.children.length <= limit) return;
  while (rowsNode.children.length > limit) {
    const last = rowsNode.lastElementChild;
    tasks.rows.delete(last.dataset.taskId);
    last.remove();
  }
  // The list's cursor is the id of the last task shown: go on from the last row kept.
  tasks.nextCursor = rowsNode.lastElementChild.dataset.taskId;
}

function addRow(task) {
  const row = buildRow(task, { onOpen: (id) => openTask(id), onAnswer: receiveTask });
  tasks.rows.set(task.id, row);
  return row;
}

function appendRow(task) {
  $("#task-rows").append(addRow(task).tr);
}

/** Wire the filters and paging; a click (or Enter) on a row calls onOpen(id). */
export function setupTaskList({ onOpen }) {
  openTask = onOpen;
  let timer = null;
  const form = $("#filters");
  form.addEventListener("submit", (event) => event.preventDefault());
  form.addEventListener("change", () => {
    clearTimeout(timer);
    reloadTasks();
  });
  $("#filter-name").addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(reloadTasks, 300);
  });
  $("#older").addEventListener("click", loadOlder);
  onAccessChange(() => { for (const row of tasks.rows.values()) updateRow(row, row.task); });
}

/** Forget every row (the token changed): the next reloadTasks() starts from nothing. */
export function resetTasks() {
  tasks.loadedOnce = false;
  tasks.loadSeq += 1;
  tasks.rows.clear();
  tasks.nextCursor = null;
  $("#task-rows").replaceChildren();
  updateListFoot();
}

/** Has a page of the list ever been read (since the last reset)? */
export function hasLoaded() {
  return tasks.loadedOnce;
}

/** The row showing task `id` ({task, tr}), if the list shows it. */
export function shownRow(id) {
  return tasks.rows.get(id);
}
