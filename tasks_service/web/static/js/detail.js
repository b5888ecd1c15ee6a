// The detail drawer: opened from a row, it follows that one task on its own event stream
// until the task finishes or the drawer closes.

import { onAccessChange } from "./access.js";
import { buildDetail, renderDetail, renderMissing } from "./detail-view.js";
import { $, setText } from "./dom.js";
import { follow, parseTask } from "./events.js";
import { TERMINAL, receiveTask, shownRow } from "./tasks-list.js";

const detail = { task: null, controller: null, slots: null, lastRow: null };

/** Open the drawer on task `id` and follow it there. */
export function openDetail(id) {
  const known = shownRow(id)?.task;
  closeDetailStream();
  detail.task = null;
  detail.slots = buildDetail({ onAnswer: receiveTask });
  const dialog = $("#task-detail");
  if (known) showDetail(known);
  else {
    setText($("#detail-title"), "Loading…");
    setText($("#detail-id"), id);
  }
  if (!dialog.open) dialog.showModal();
  followDetail(id);
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
      if (event !== "task") return;
      const task = parseTask(data);
      if (task && task.id === id) showDetail(task);
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
