// The schedule form: make a schedule (POST /schedules) or change one made over the API
// (PATCH /schedules/{id}); a refusal is listed under the form, each complaint with its field.

import { ApiError, api, describeError, errorLocation } from "./api.js";
import { $, h, setText } from "./dom.js";
import { json } from "./format.js";
import { taskTypes } from "./start-form.js";
import { toast } from "./toast.js";

const form = { editing: null, onSaved: () => {} };

// Which input each field of a refusal is about.
const INPUT_OF = {
  id: "#schedule-id", task: "#schedule-task", params: "#schedule-params",
  every: "#schedule-every", cron: "#schedule-cron", tz: "#schedule-tz", paused: "#schedule-paused",
};

/** Open the form empty (editing null) or on a schedule made over the API. */
export function openScheduleForm(editing = null) {
  form.editing = editing;
  clearErrors();
  const names = [...taskTypes().keys()].sort();
  const select = $("#schedule-task");
  select.replaceChildren(...names.map((name) => h("option", { value: name, text: name })));
  const schedule = editing ?? { id: "", task: names.includes("sleep") ? "sleep" : names[0] ?? "", params: {} };
  $("#schedule-id").value = schedule.id;
  $("#schedule-id").disabled = Boolean(editing);
  select.value = schedule.task;
  select.disabled = Boolean(editing);
  $("#schedule-params").value = editing ? json(schedule.params) : "{}";
  $("#schedule-kind").value = schedule.cron ? "cron" : "every";
  $("#schedule-every").value = schedule.every ?? "";
  $("#schedule-cron").value = schedule.cron ?? "";
  $("#schedule-tz").value = schedule.cron ? schedule.tz ?? "" : "";
  $("#schedule-paused").checked = Boolean(schedule.paused);
  setText($("#schedule-form-title"), editing ? `Edit ${editing.id}` : "New schedule");
  setText($("#schedule-submit"), editing ? "Save changes" : "Create schedule");
  showKind();
  showParamsHint();
  $("#schedule-form").hidden = false;
  $("#schedule-new").setAttribute("aria-expanded", "true");
  (editing ? $("#schedule-params") : $("#schedule-id")).focus();
}

export function closeScheduleForm() {
  form.editing = null;
  $("#schedule-form").hidden = true;
  $("#schedule-new").setAttribute("aria-expanded", "false");
}

function showKind() {
  const kind = $("#schedule-kind").value;
  for (const node of document.querySelectorAll("#schedule-form [data-kind]")) {
    node.hidden = node.dataset.kind !== kind;
  }
}

/** Under the params: what the chosen task type takes, from its JSON Schema. */
function showParamsHint() {
  const schema = taskTypes().get($("#schedule-task").value)?.params_schema ?? {};
  const required = new Set(schema.required ?? []);
  const names = Object.keys(schema.properties ?? {}).map((name) => (required.has(name) ? `${name} (required)` : name));
  setText($("#schedule-params-hint"), names.length ? `Takes ${names.join(", ")}.` : "Takes no params.");
}

function clearErrors() {
  const box = $("#schedule-error");
  box.hidden = true;
  box.replaceChildren();
  for (const node of document.querySelectorAll("#schedule-form [aria-invalid]")) node.removeAttribute("aria-invalid");
}

function showErrors(items) {
  const box = $("#schedule-error");
  const list = h("ul");
  for (const item of items) {
    const field = Array.isArray(item.loc) && item.loc[0] === "body" ? item.loc[1] : undefined;
    if (INPUT_OF[field]) $(INPUT_OF[field]).setAttribute("aria-invalid", "true");
    list.append(h("li", {}, h("code", { text: errorLocation(item) }), " ", String(item.msg ?? "")));
  }
  box.replaceChildren(h("p", { text: "The service refused this schedule:" }), list);
  box.hidden = false;
}

/** The request body from the form; null (with the reason shown) if the params are not JSON. */
function body() {
  let params;
  try {
    params = JSON.parse($("#schedule-params").value || "{}");
  } catch {
    showErrors([{ loc: ["body", "params"], msg: "This is not valid JSON." }]);
    return null;
  }
  const result = { params, paused: $("#schedule-paused").checked };
  if ($("#schedule-kind").value === "every") {
    const seconds = $("#schedule-every").value.trim();
    result.every = seconds === "" ? null : Number(seconds);
  } else {
    result.cron = $("#schedule-cron").value.trim();
    const tz = $("#schedule-tz").value.trim();
    if (tz) result.tz = tz;
  }
  if (!form.editing) {
    const id = $("#schedule-id").value.trim();
    if (id) result.id = id;
    result.task = $("#schedule-task").value;
    if (result.every === null) delete result.every;
  }
  return result;
}

async function submit(event) {
  event.preventDefault();
  clearErrors();
  const request = body();
  if (!request) return;
  const editing = form.editing;
  const button = $("#schedule-submit");
  button.disabled = true;
  try {
    const saved = editing
      ? await api("PATCH", `/schedules/${encodeURIComponent(editing.id)}`, request)
      : await api("POST", "/schedules", request);
    closeScheduleForm();
    toast(`${editing ? "Saved" : "Created"} schedule ${saved.id}`, "success");
    form.onSaved(saved);
  } catch (error) {
    if (error instanceof ApiError && Array.isArray(error.detail)) showErrors(error.detail);
    else showErrors([{ loc: [], msg: describeError(error) }]);
  } finally {
    button.disabled = false;
  }
}

/** Wire the form; `onSaved(schedule)` gets what the service answered. */
export function setupScheduleForm({ onSaved }) {
  form.onSaved = onSaved;
  $("#schedule-new").addEventListener("click", () => {
    if ($("#schedule-form").hidden || form.editing) openScheduleForm();
    else closeScheduleForm();
  });
  $("#schedule-cancel").addEventListener("click", closeScheduleForm);
  $("#schedule-kind").addEventListener("change", showKind);
  $("#schedule-task").addEventListener("change", showParamsHint);
  $("#schedule-form").addEventListener("submit", submit);
}
