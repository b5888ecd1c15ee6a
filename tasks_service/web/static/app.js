// The dashboard's entry point: wires the sections in js/ and starts them. Plain DOM and
// native ES modules, served as they are (no framework, no build step). Everything that comes
// from the API goes on the page as text, never parsed as HTML.

import { openDetail, setupDetail } from "./js/detail.js";
import { startFeed, stopFeed } from "./js/feed.js";
import { loadGlance, setupGlance } from "./js/glance.js";
import { loadSchedules, setupSchedules } from "./js/schedules.js";
import { loadTaskTypes, setupStartForm } from "./js/start-form.js";
import { loadTypePanel, setupTypePanel } from "./js/task-types.js";
import { resetTasks, setupTaskList } from "./js/tasks-list.js";
import { setupTokenDialog } from "./js/token.js";

/** Read everything from the service anew: at start, and after the token is forgotten. */
function restart() {
  stopFeed();
  resetTasks();
  loadTaskTypes();
  loadSchedules();
  loadTypePanel();
  loadGlance();
  startFeed(); // the list is read once the stream is open
}

setupTokenDialog({ onForget: restart });
setupTaskList({ onOpen: openDetail });
setupDetail();
setupStartForm();
setupSchedules();
setupTypePanel();
setupGlance();
restart();
