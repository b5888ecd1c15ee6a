// "Start a task": the type select, the params fields, priority and delay; the new task goes
// to the list at once, and a refusal is shown next to what it is about.

import { canWrite, onAccessChange } from "./access.js";
import { ApiError, api, describeError, errorLocation } from "./api.js";
import { $, h, setText } from "./dom.js";
import { shortId } from "./format.js";
import { collectParams, fieldError, paramFields } from "./param-fields.js";
import { receiveTask } from "./tasks-list.js";
import { toast } from "./toast.js";

const types = { byName: new Map() };

/** The task types read so far, by name (the schedule form offers them too). */
export function taskTypes() {
  return types.byName;
}

/** Read the task types into the form's select (and the name filter's suggestions). */
export async function loadTaskTypes() {
  try {
    const list = await api("GET", "/task-types");
    types.byName = new Map(list.map((type) => [type.name, type]));
    const select = $("#start-type");
    const previous = select.value;
    const names = [...types.byName.keys()].sort();
    select.replaceChildren(...names.map((name) => h("option", { value: name, text: name })));
    $("#type-names").replaceChildren(...names.map((name) => h("option", { value: name })));
    select.value = types.byName.has(previous) ? previous : types.byName.has("sleep") ? "sleep" : names[0] ?? "";
    renderParamFields();
  } catch (error) {
    toast(`Cannot load task types: ${describeError(error)}`, "error");
  }
}

/** The chosen type's description, and a field for each of its params. */
function renderParamFields() {
  const type = types.byName.get($("#start-type").value);
  const container = $("#start-params");
  clearStartErrors();
  if (!type) {
    container.replaceChildren();
    setText($("#start-description"), "");
    return;
  }
  const facts = [];
  if (type.max_attempts > 1) facts.push(`up to ${type.max_attempts} attempts`);
  if (type.timeout) facts.push(`timeout ${type.timeout} s`);
  if (type.schedule) facts.push(`scheduled ${type.schedule}`);
  if (type.process) facts.push("runs in a worker process of its own");
  setText($("#start-description"), [type.description, facts.join(" · ")].filter(Boolean).join(" — "));
  container.replaceChildren(...paramFields(type.params_schema ?? {}));
}

function clearStartErrors() {
  const box = $("#start-error");
  box.hidden = true;
  box.replaceChildren();
  for (const node of document.querySelectorAll("#start-form .field-error")) {
    node.hidden = true;
    node.textContent = "";
  }
  for (const node of document.querySelectorAll("#start-form [aria-invalid]")) node.removeAttribute("aria-invalid");
}

/** A refusal from the service: its every complaint listed, and marked on its field. */
function showStartError(error) {
  const box = $("#start-error");
  box.replaceChildren();
  const { detail } = error instanceof ApiError ? error : { detail: null };
  if (Array.isArray(detail)) {
    box.append(h("p", { text: "The service refused this task:" }));
    const list = h("ul");
    for (const item of detail) {
      const given = Array.isArray(item.loc) ? item.loc : [];
      // A batch's refusal names the item (["body", "tasks", 3, ...]): every copy is the same.
      const loc = given[1] === "tasks" ? [given[0], ...given.slice(3)] : given;
      if (loc[0] === "body" && loc[1] === "params" && loc.length > 2) fieldError(String(loc[2]), item.msg);
      if (loc[0] === "body" && (loc[1] === "priority" || loc[1] === "delay")) {
        document.getElementById(`start-${loc[1]}`)?.setAttribute("aria-invalid", "true");
      }
      list.append(h("li", {}, h("code", { text: errorLocation(item) }), " ", String(item.msg ?? "")));
    }
    box.append(list);
  } else {
    box.append(h("p", { text: describeError(error) }));
  }
  box.hidden = false;
}

/** A new type's fields on change; on submit, the params checked here first, then sent. */
export function setupStartForm() {
  const showForm = () => {
    $("#start-form").hidden = !canWrite();
    $("#start-read-only").hidden = canWrite();
  };
  onAccessChange(showForm);
  showForm();
  $("#start-type").addEventListener("change", renderParamFields);
  $("#start-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    clearStartErrors();
    const name = $("#start-type").value;
    const params = collectParams();
    if (!name || params === null) return;
    const body = { name, params };
    const priority = $("#start-priority").value.trim();
    const delay = $("#start-delay").value.trim();
    if (priority) body.priority = Number(priority);
    if (delay) body.delay = Number(delay);
    const copies = Number($("#start-copies").value.trim() || 1);
    const button = $("#start-submit");
    button.disabled = true;
    try {
      if (copies > 1) {
        // Many at once: one request, all stored or none (POST /tasks/batch).
        const answer = await api("POST", "/tasks/batch", { tasks: Array(copies).fill(body) });
        for (const task of answer.items) receiveTask(task);
        toast(`Started ${answer.items.length} ${name} tasks`, "success");
      } else {
        const task = await api("POST", "/tasks", body);
        receiveTask(task);
        toast(`Started ${task.name} ${shortId(task.id)}`, "success");
      }
    } catch (error) {
      showStartError(error);
    } finally {
      button.disabled = false;
    }
  });
}
