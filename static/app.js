// The dashboard: plain DOM, no framework. Everything that comes from the API is put on the
// page as text (textContent, attribute values), never parsed as HTML.

import { setLive } from "./js/live.js";
import { follow, parseTask } from "./js/events.js";
import { loadTaskTypes, setupStartForm } from "./js/start-form.js";
import { setupTokenDialog } from "./js/token.js";
import { openDetail, setupDetail } from "./js/detail.js";
import { hasLoaded, receiveTask, reloadTasks, resetTasks, setupTaskList } from "./js/tasks-list.js";
import { loadSchedules, setupSchedules } from "./js/schedules.js";

// -- the dashboard's event stream -----------------------------------------------------------

/** GET /events for as long as the page lives: every task change, reconnecting with backoff. */
let feedController = null;

function runFeed() {
  feedController = new AbortController();
  follow("/events", {
    signal: feedController.signal,
    onState: setLive,
    // Changes from the moment the service listens arrive on the stream, so the list is read
    // only then, and nothing falls between the two.
    onOpen: () => reloadTasks(),
    onEvent: ({ event, data }) => {
      if (event !== "task") return;
      const task = parseTask(data);
      if (task) receiveTask(task);
    },
    onClose: () => {
      if (!hasLoaded()) reloadTasks(); // show what we can, even without the stream
    },
  });
}

function stopFeed() {
  feedController?.abort();
  feedController = null;
}

// -- start ----------------------------------------------------------------------------------

function restart() {
  stopFeed();
  resetTasks();
  loadTaskTypes();
  loadSchedules();
  runFeed();
}

function main() {
  setupTokenDialog({ onForget: restart });
  setupTaskList({ onOpen: openDetail });
  setupDetail();
  setupStartForm();
  setupSchedules();
  restart();
}

main();
