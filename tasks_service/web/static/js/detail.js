// The detail drawer: opened from a row, it follows that one task on its own event stream
// until the task finishes or the drawer closes.

import { onAccessChange } from "./access.js";
import { api } from "./api.js";
import { buildDetail, renderChildren, renderDetail, renderMissing } from "./detail-view.js";
import { $, setText } from "./dom.js";
import { follow, parseTask } from "./events.js";
import { TERMINAL, receiveTask, shownRow } from "./tasks-list.js";

const detail = { id: null, task: null, controller: null, slots: null, lastRow: null, children: new Map() };

/** Open the drawer on task `id` and follow it there. */
export function openDetail(id) {
  const known = shownRow(id)?.task;
  closeDetailStream();
  detail.id = id;
  detail.task = null;
  detail.children = new Map();
  detail.slots = buildDetail({ onAnswer: receiveTask, onOpen: openDetail });
  const dialog = $("#task-detail");
  if (known) showDetail(known);
  else {
    setText($("#detail-title"), "Loading…");
    setText($("#detail-id"), id);
  }
  if (!dialog.open) dialog.showModal();
  followDetail(id);
  loadChildren(id);
}

/** The task's children as they are now; their changes then come on its own stream. */
async function loadChildren(id) {
  try {
    const page = await api("GET", `/tasks?parent_id=${encodeURIComponent(id)}&limit=500`);
    if (detail.id !== id) return; // another task was opened since
    for (const child of page.items) if (!detail.children.has(child.id)) detail.children.set(child.id, child);
    if (detail.slots) renderChildren(detail.slots, detail.children);
  } catch {
    // The drawer still shows the task itself; its children come with their next change.
  }
}

function closeDetailStream() {
  detail.controller?.abort();
  detail.controller = null;
}

/** Closing (the ✕, Escape, a click on the backdrop) stops the stream and gives focus back to the row. */
export function setupDetail() {
  const dialog = $("#task-detail");
  $("#detail-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => {
    closeDetailStream();
    detail.task = null;
    const row = detail.lastRow;
    if (row && row.isConnected) row.focus();
  });
  onAccessChange(() => { if (detail.task) showDetail(detail.task); });
  // A click on the backdrop (outside the drawer) closes it.
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) {
      const box = dialog.getBoundingClientRect();
      const inside = event.clientX >= box.left && event.clientX <= box.right
        && event.clientY >= box.top && event.clientY <= box.bottom;
      if (!inside) dialog.close();
    }
  });
}

/** GET /tasks/{id}/events while the drawer shows that task: its own changes, every one. */
function followDetail(id) {
  detail.controller = new AbortController();
  follow(`/tasks/${encodeURIComponent(id)}/events`, {
    signal: detail.controller.signal,
    onEvent: ({ event, data }) => {
      const task = parseTask(data);
      if (!task) return;
      if (event === "task" && task.id === id) showDetail(task);
      if (event === "child" && task.parent_id === id && detail.slots) {
        detail.children.set(task.id, task);
        renderChildren(detail.slots, detail.children);
      }
    },
    onMissing: () => renderMissing(id),
    // The service ends the stream once the task has finished: nothing more will come.
    onClose: () => !(detail.task && TERMINAL.has(detail.task.status)),
  });
}

function showDetail(task) {
  if (!detail.slots) return;
  detail.task = task;
  detail.lastRow = shownRow(task.id)?.tr ?? detail.lastRow; // where focus goes back on close
  renderDetail(detail.slots, task);
}
