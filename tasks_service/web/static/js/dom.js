// Small DOM helpers. Whatever comes from the API (and so, in the end, from users and tasks)
// goes onto the page as text: textContent, text nodes, attribute values, never parsed as HTML.

import { fullTime } from "./format.js";

export const $ = (selector) => document.querySelector(selector);

/** An element with properties/attributes from `props` and text or node children. */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "className") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node && !key.startsWith("aria")) node[key] = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** Set a node's text, touching the DOM only when it changes (live updates come often). */
export function setText(node, text) {
  const value = text ?? "";
  if (node.textContent !== value) node.textContent = value;
}

/** A <time> that shows `text` and has the full date and time as its tooltip. */
export function timeNode(iso, text, className) {
  return h("time", { dateTime: iso ?? "", title: fullTime(iso), className, text });
}
