// The dashboard: plain DOM, no framework. Everything that comes from the API is put on the
// page as text (textContent, attribute values), never parsed as HTML.

import { $, h, setText, timeNode } from "./js/dom.js";
import { json, paramsSummary, parseTime, relative, shortId } from "./js/format.js";
import { ApiError, api, describeError, errorLocation } from "./js/api.js";
import { setLive } from "./js/live.js";
import { follow, parseTask } from "./js/events.js";
import { setupTokenDialog } from "./js/token.js";
import { openDetail, setupDetail } from "./js/detail.js";
import { hasLoaded, receiveTask, reloadTasks, resetTasks, setupTaskList } from "./js/tasks-list.js";
import { toast } from "./js/toast.js";

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

// -- starting a task ------------------------------------------------------------------------

const types = { byName: new Map() };

async function loadTaskTypes() {
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

function resolveRef(schema, root) {
  if (schema && typeof schema.$ref === "string" && schema.$ref.startsWith("#/$defs/")) {
    return root.$defs?.[schema.$ref.slice("#/$defs/".length)] ?? {};
  }
  return schema ?? {};
}

function typesOf(schema) {
  if (Array.isArray(schema.type)) return schema.type;
  return schema.type ? [schema.type] : [];
}

/** How to ask for one property: a kind of input, and the schema that drives it. */
function fieldSpec(property, root) {
  let schema = resolveRef(property, root);
  let nullable = false;
  const variants = schema.anyOf ?? schema.oneOf;
  if (Array.isArray(variants)) {
    const branches = variants.map((branch) => resolveRef(branch, root));
    const concrete = branches.filter((branch) => !typesOf(branch).every((t) => t === "null") || !branch.type);
    nullable = concrete.length < branches.length;
    if (concrete.length === 1) schema = { ...concrete[0], default: property.default, description: property.description };
    else {
      const kinds = [...new Set(concrete.flatMap((branch) => typesOf(branch)))];
      return { kind: "json", schema: property, nullable, acceptsString: kinds.includes("string"), kinds };
    }
  }
  const kinds = typesOf(schema).filter((t) => t !== "null");
  if (kinds.length < typesOf(schema).length) nullable = true;
  const type = kinds.length === 1 ? kinds[0] : null;
  if (Array.isArray(schema.enum) && schema.enum.every((v) => typeof v === "string")) {
    return { kind: "enum", schema, nullable };
  }
  if (type === "string") return { kind: "string", schema, nullable };
  if (type === "integer" || type === "number") return { kind: type, schema, nullable };
  if (type === "boolean") return { kind: "boolean", schema, nullable };
  return { kind: "json", schema, nullable, acceptsString: kinds.includes("string"), kinds };
}

function constraintHint(spec, required, hasDefault, defaultValue) {
  const { schema, kind } = spec;
  const parts = [];
  if (kind === "json") {
    const others = (spec.kinds ?? []).filter((t) => t !== "null" && t !== "string");
    if (spec.acceptsString) parts.push(others.length ? `text, or JSON ${others.join(" or ")}` : "text");
    else parts.push(others.length ? `JSON ${others.join(" or ")}` : "any JSON");
  } else parts.push(kind === "enum" ? "one of the list" : kind);
  const min = schema.minimum ?? schema.exclusiveMinimum;
  const max = schema.maximum ?? schema.exclusiveMaximum;
  if (min !== undefined && max !== undefined) parts.push(`${min} to ${max}`);
  else if (min !== undefined) parts.push(schema.exclusiveMinimum !== undefined ? `over ${min}` : `at least ${min}`);
  else if (max !== undefined) parts.push(`at most ${max}`);
  if (schema.maxLength !== undefined) parts.push(`up to ${schema.maxLength} characters`);
  if (schema.format) parts.push(schema.format);
  if (!required && hasDefault && defaultValue !== null && kind !== "boolean") {
    parts.push(`default ${typeof defaultValue === "string" ? defaultValue : JSON.stringify(defaultValue)}`);
  } else if (!required) parts.push("optional");
  return parts.join(" · ");
}

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
  setText($("#start-description"), [type.description, facts.join(" · ")].filter(Boolean).join(" — "));

  const root = type.params_schema ?? {};
  const required = new Set(root.required ?? []);
  const fields = [];
  for (const [name, property] of Object.entries(root.properties ?? {})) {
    const spec = fieldSpec(property, root);
    const isRequired = required.has(name);
    const hasDefault = Object.hasOwn(property, "default");
    const id = `param-${name}`;
    const hintId = `${id}-hint`;
    const errorId = `${id}-error`;
    let input;
    const common = { id, name, "aria-describedby": `${hintId} ${errorId}`, required: isRequired };
    if (spec.kind === "boolean") {
      input = h("input", { ...common, type: "checkbox", checked: hasDefault ? Boolean(property.default) : false, required: false });
    } else if (spec.kind === "enum") {
      input = h("select", common,
        (!isRequired && !hasDefault) ? h("option", { value: "", text: "(default)" }) : null,
        spec.schema.enum.map((value) => h("option", { value, text: value })));
      if (hasDefault && property.default !== null) input.value = property.default;
    } else if (spec.kind === "string") {
      input = h("input", { ...common, type: "text", spellcheck: false, autocomplete: "off" });
      if (spec.schema.maxLength !== undefined) input.maxLength = spec.schema.maxLength;
      if (spec.schema.minLength) input.minLength = spec.schema.minLength;
      if (hasDefault && property.default !== null) input.value = String(property.default);
    } else if (spec.kind === "integer" || spec.kind === "number") {
      input = h("input", { ...common, type: "number", step: spec.kind === "integer" ? "1" : "any" });
      const { minimum, maximum, exclusiveMinimum, exclusiveMaximum } = spec.schema;
      if (minimum !== undefined) input.min = String(minimum);
      else if (exclusiveMinimum !== undefined && spec.kind === "integer") input.min = String(exclusiveMinimum + 1);
      if (maximum !== undefined) input.max = String(maximum);
      else if (exclusiveMaximum !== undefined && spec.kind === "integer") input.max = String(exclusiveMaximum - 1);
      if (hasDefault && property.default !== null) input.value = String(property.default);
    } else {
      input = h("textarea", { ...common, rows: 3, spellcheck: false, className: "mono" });
      if (hasDefault && property.default !== null) input.value = json(property.default);
      input.placeholder = spec.acceptsString ? "JSON, or plain text" : "JSON";
    }
    input.dataset.kind = spec.kind;
    if (spec.acceptsString) input.dataset.acceptsString = "true";
    const label = h("label", { htmlFor: id },
      h("span", { className: "param-name", text: name }),
      isRequired ? h("span", { className: "required", title: "required", "aria-hidden": "true", text: " *" }) : null,
      isRequired ? h("span", { className: "visually-hidden", text: " (required)" }) : null);
    const hint = h("p", {
      className: "hint", id: hintId,
      text: [property.description, constraintHint(spec, isRequired, hasDefault, property.default)].filter(Boolean).join(" — "),
    });
    const error = h("p", { className: "field-error", id: errorId, hidden: true });
    const field = spec.kind === "boolean"
      ? h("div", { className: "field field-check", dataset: { param: name } },
        h("label", { htmlFor: id }, input, h("span", { className: "param-name", text: name })), hint, error)
      : h("div", { className: "field", dataset: { param: name } }, label, input, hint, error);
    fields.push(field);
  }
  if (!fields.length) fields.push(h("p", { className: "hint", text: "This task type takes no params." }));
  container.replaceChildren(...fields);
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

function fieldError(name, message) {
  const input = document.getElementById(`param-${name}`);
  const error = document.getElementById(`param-${name}-error`);
  if (!input || !error) return false;
  input.setAttribute("aria-invalid", "true");
  error.hidden = false;
  error.append(h("span", { className: "field-error-line", text: message }));
  return true;
}

/** The params object from the generated fields; null (with messages shown) if one is bad. */
function collectParams() {
  const params = {};
  let ok = true;
  for (const input of document.querySelectorAll("#start-params [data-kind]")) {
    const { name } = input;
    const kind = input.dataset.kind;
    if (kind === "boolean") {
      params[name] = input.checked;
      continue;
    }
    const raw = input.value;
    if (raw.trim() === "" && !(kind === "string" && input.required)) continue; // the default applies
    if (kind === "integer" || kind === "number") params[name] = Number(raw);
    else if (kind === "json") {
      try {
        params[name] = JSON.parse(raw);
      } catch {
        if (input.dataset.acceptsString) params[name] = raw.trim();
        else {
          fieldError(name, "This is not valid JSON.");
          ok = false;
        }
      }
    } else params[name] = raw;
  }
  return ok ? params : null;
}

function showStartError(error) {
  const box = $("#start-error");
  box.replaceChildren();
  const { detail } = error instanceof ApiError ? error : { detail: null };
  if (Array.isArray(detail)) {
    box.append(h("p", { text: "The service refused this task:" }));
    const list = h("ul");
    for (const item of detail) {
      const loc = Array.isArray(item.loc) ? item.loc : [];
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

function setupStartForm() {
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
    const button = $("#start-submit");
    button.disabled = true;
    try {
      const task = await api("POST", "/tasks", body);
      receiveTask(task);
      toast(`Started ${task.name} ${shortId(task.id)}`, "success");
    } catch (error) {
      showStartError(error);
    } finally {
      button.disabled = false;
    }
  });
}

// -- schedules ------------------------------------------------------------------------------

const schedules = { list: [], loadedAt: 0, loading: false };

async function loadSchedules() {
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
  const actions = h("div", { className: "schedule-actions" },
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
    params ? h("div", { className: "params-summary", text: params }) : null), actions);
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
  setInterval(tickSchedules, 1000);
  restart();
}

main();
