// Small SVG charts drawn with DOM calls (no library, no innerHTML): stacked bars, and lines
// with an optional area under them. The SVG holds shapes only, stretched to its box
// (preserveAspectRatio="none", strokes that do not scale); the numbers around a chart are
// HTML, so they stay crisp at any width. Colours come from classes in app.css.

const SVG = "http://www.w3.org/2000/svg";
export const WIDTH = 600;
export const HEIGHT = 120;

function svgNode(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  node.append(...children);
  return node;
}

/** A <title> child: the browser shows it as the shape's tooltip (text only). */
function tooltip(text) {
  const title = document.createElementNS(SVG, "title");
  title.textContent = text;
  return title;
}

/** An empty chart canvas; `label` is what a screen reader hears for the whole picture. */
export function chartSvg(label) {
  return svgNode("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    preserveAspectRatio: "none",
    role: "img",
    "aria-label": label,
    class: "chart-svg",
  });
}

/** The base line, and a faint one halfway up. */
function axisLines() {
  return [
    svgNode("line", { x1: 0, x2: WIDTH, y1: HEIGHT / 2, y2: HEIGHT / 2, class: "chart-grid", "vector-effect": "non-scaling-stroke" }),
    svgNode("line", { x1: 0, x2: WIDTH, y1: HEIGHT - 0.5, y2: HEIGHT - 0.5, class: "chart-base", "vector-effect": "non-scaling-stroke" }),
  ];
}

/** A round top for the scale: 1, 2 or 5 times a power of ten, at least `value`. */
export function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

/**
 * Stacked bars: one per item of `groups` ({values: {key: number}, title}), stacked in the
 * order of `keys` ([{key, className}]), scaled to `max`. Replaces what `svg` held.
 */
export function drawBars(svg, groups, keys, max) {
  const slot = WIDTH / Math.max(groups.length, 1);
  const width = Math.max(slot * 0.78, 0.5);
  const shapes = axisLines();
  groups.forEach((group, index) => {
    const x = index * slot + (slot - width) / 2;
    let top = HEIGHT;
    const bar = svgNode("g", { class: "chart-bar" }, tooltip(group.title));
    for (const { key, className } of keys) {
      const value = group.values[key] || 0;
      if (!value) continue;
      const height = (value / max) * HEIGHT;
      top -= height;
      bar.append(svgNode("rect", { x, y: top, width, height, class: className }));
    }
    // A hit area the height of the chart, so a short bar's tooltip is easy to reach.
    bar.append(svgNode("rect", { x: index * slot, y: 0, width: slot, height: HEIGHT, class: "chart-hit" }));
    shapes.push(bar);
  });
  svg.replaceChildren(...shapes);
}

/** A linear scale from 0 to `max`: value -> 0..1. */
export function linear(max) {
  return (value) => value / max;
}

/** A logarithmic scale from `low` to `high` (both > 0): durations span orders of magnitude. */
export function logarithmic(low, high) {
  const bottom = Math.log10(low);
  const range = Math.log10(high) - bottom || 1;
  return (value) => Math.min(1, Math.max(0, (Math.log10(Math.max(value, low)) - bottom) / range));
}

/** The powers of ten around `values` (positive numbers): a log scale's ends. */
export function decades(values) {
  const positive = values.filter((value) => value > 0);
  if (!positive.length) return [0.001, 1];
  const low = 10 ** Math.floor(Math.log10(Math.min(...positive)));
  const high = 10 ** Math.ceil(Math.log10(Math.max(...positive)));
  return [low, high > low ? high : low * 10];
}

/**
 * Lines over the same slots as the bars: `lines` ([{values, className, area}]) of numbers or
 * null (a gap), placed by `scale` (value -> 0..1); `titles[i]` is the tooltip of slot i.
 */
export function drawLines(svg, lines, scale, titles) {
  const count = Math.max(titles.length, 1);
  const slot = WIDTH / count;
  const xOf = (index) => index * slot + slot / 2;
  const yOf = (value) => HEIGHT - scale(value) * (HEIGHT - 2) - 1;
  const shapes = axisLines();
  for (const { values, className, area } of lines) {
    let path = "";
    let open = false;
    values.forEach((value, index) => {
      if (value === null || value === undefined) {
        open = false;
        return;
      }
      path += `${open ? "L" : "M"}${xOf(index).toFixed(2)},${yOf(value).toFixed(2)}`;
      open = true;
    });
    if (area && path) {
      const first = values.findIndex((value) => value !== null && value !== undefined);
      const last = values.length - 1 - [...values].reverse().findIndex((value) => value !== null && value !== undefined);
      shapes.push(svgNode("path", {
        d: `${path}L${xOf(last).toFixed(2)},${HEIGHT}L${xOf(first).toFixed(2)},${HEIGHT}Z`,
        class: `${className} chart-area`,
      }));
    }
    if (path) {
      shapes.push(svgNode("path", { d: path, class: `${className} chart-line`, "vector-effect": "non-scaling-stroke" }));
    }
    // A lone point has no line to show: mark it with a short stroke.
    values.forEach((value, index) => {
      const alone = value !== null && value !== undefined
        && (values[index - 1] === null || values[index - 1] === undefined)
        && (values[index + 1] === null || values[index + 1] === undefined);
      if (alone) {
        shapes.push(svgNode("line", {
          x1: xOf(index) - slot / 3, x2: xOf(index) + slot / 3, y1: yOf(value), y2: yOf(value),
          class: `${className} chart-line`, "vector-effect": "non-scaling-stroke",
        }));
      }
    });
  }
  titles.forEach((title, index) => {
    shapes.push(svgNode("rect", { x: index * slot, y: 0, width: slot, height: HEIGHT, class: "chart-hit" }, tooltip(title)));
  });
  svg.replaceChildren(...shapes);
}
