// The start form's params fields, made from each task type's JSON Schema (types, enums,
// bounds, defaults, required marks), and read back into a params object.

import { h } from "./dom.js";
import { json } from "./format.js";

/** The fields for a task type's params JSON Schema (or a note that it takes none). */
export function paramFields(root) {
  const required = new Set(root.required ?? []);
  const fields = Object.entries(root.properties ?? {})
    .map(([name, property]) => paramField(name, property, root, required.has(name)));
  if (!fields.length) fields.push(h("p", { className: "hint", text: "This task type takes no params." }));
  return fields;
}

/** One property's field: a label, the input that fits its schema, a hint, a place for errors. */
function paramField(name, property, root, isRequired) {
  const spec = fieldSpec(property, root);
  const hasDefault = Object.hasOwn(property, "default");
  const id = `param-${name}`;
  const hintId = `${id}-hint`;
  const errorId = `${id}-error`;
  const common = { id, name, "aria-describedby": `${hintId} ${errorId}`, required: isRequired };
  const input = inputFor(spec, property, common, isRequired, hasDefault);
  const label = h("label", { htmlFor: id },
    h("span", { className: "param-name", text: name }),
    isRequired ? h("span", { className: "required", title: "required", "aria-hidden": "true", text: " *" }) : null,
    isRequired ? h("span", { className: "visually-hidden", text: " (required)" }) : null);
  const hint = h("p", {
    className: "hint", id: hintId,
    text: [property.description, constraintHint(spec, isRequired, hasDefault, property.default)].filter(Boolean).join(" — "),
  });
  const error = h("p", { className: "field-error", id: errorId, hidden: true });
  return spec.kind === "boolean"
    ? h("div", { className: "field field-check", dataset: { param: name } },
      h("label", { htmlFor: id }, input, h("span", { className: "param-name", text: name })), hint, error)
    : h("div", { className: "field", dataset: { param: name } }, label, input, hint, error);
}

/** The input for one property, holding its default; data-kind tells collectParams how to read it. */
function inputFor(spec, property, common, isRequired, hasDefault) {
  let input;
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
  return input;
}

/** A `$ref` into the schema's own `$defs` (how pydantic writes nested models), followed. */
function resolveRef(schema, root) {
  if (schema && typeof schema.$ref === "string" && schema.$ref.startsWith("#/$defs/")) {
    return root.$defs?.[schema.$ref.slice("#/$defs/".length)] ?? {};
  }
  return schema ?? {};
}

/** A schema's `type` as a list: JSON Schema allows one name or several. */
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

/** The hint under a field: what it takes, its bounds, and its default or that it is optional. */
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

/** Show `message` under the field of param `name`; false if the form has no such field. */
export function fieldError(name, message) {
  const input = document.getElementById(`param-${name}`);
  const error = document.getElementById(`param-${name}-error`);
  if (!input || !error) return false;
  input.setAttribute("aria-invalid", "true");
  error.hidden = false;
  error.append(h("span", { className: "field-error-line", text: message }));
  return true;
}

/** The params object from the generated fields; null (with messages shown) if one is bad. */
export function collectParams() {
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
