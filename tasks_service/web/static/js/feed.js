// The dashboard's own event stream, GET /events: every task's changes, into the list and the
// charts, for as long as the page lives. How it is doing shows in the top bar's badge.

import { follow, parseTask } from "./events.js";
import { noteTask } from "./glance.js";
import { setLive } from "./live.js";
import { hasLoaded, receiveTask, reloadTasks } from "./tasks-list.js";

let controller = null;

export function startFeed() {
  controller = new AbortController();
  follow("/events", {
    signal: controller.signal,
    onState: setLive,
    // Changes from the moment the service listens arrive on the stream, so the list is read
    // only then, and nothing falls between the two.
    onOpen: () => reloadTasks(),
    onEvent: ({ event, data }) => {
      if (event !== "task") return;
      const task = parseTask(data);
      if (!task) return;
      receiveTask(task);
      noteTask(task);
    },
    onClose: () => {
      if (!hasLoaded()) reloadTasks(); // show what we can, even without the stream
    },
  });
}

export function stopFeed() {
  controller?.abort();
  controller = null;
}
