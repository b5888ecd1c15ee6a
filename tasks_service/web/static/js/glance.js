// The "At a glance" panel: GET /stats drawn as three charts (tasks finished per minute by
// status, the queue's depth, attempt durations p50/p95) over the last hour, 6 or 24 hours.
// Live: each task that ends on the event stream is added to this minute at once, and the
// service is asked again shortly after (at most every REFRESH_AFTER), and at each new
// minute. The task types panel shows each type's sums over the same window (typeStats).

import { api, describeError } from "./api.js";
import { chartSvg, decades, drawBars, drawLines, linear, logarithmic, niceMax } from "./charts.js";
import { $, h, setText } from "./dom.js";
import { formatCount, formatSeconds, minuteLabel } from "./format.js";
import { TERMINAL } from "./tasks-list.js";
import { toast } from "./toast.js";

const MAX_SLOTS = 120; // bars per chart: a longer window groups its minutes
const REFRESH_AFTER = 1500; // ms from a task's change to reading the service's counts again
const WINDOW_LABELS = { 60: "last hour", 360: "last 6 hours", 1440: "last 24 hours" };
const FINISHED = [
  { key: "completed", className: "bar-completed", label: "completed" },
  { key: "failed", className: "bar-failed", label: "failed" },
  { key: "cancelled", className: "bar-cancelled", label: "cancelled" },
  { key: "retried", className: "bar-retried", label: "retried" },
];

const glance = {
  minutes: 60,
  answer: null, // the last GET /stats, with live additions since
  loading: false,
  again: false, // asked for while a read was in flight
  refresh: null, // the timer of the next read after a task's change
  failedOnce: false,
  listeners: [],
  charts: null,
};

/** Read GET /stats for the window shown (one read at a time) and draw it. */
export async function loadGlance() {
  if (glance.loading) {
    glance.again = true;
    return;
  }
  glance.loading = true;
  try {
    const minutes = glance.minutes;
    const answer = await api("GET", `/stats?minutes=${minutes}`);
    if (minutes === glance.minutes) {
      glance.answer = answer;
      glance.failedOnce = false;
      render();
    } else glance.again = true;
  } catch (error) {
    if (!glance.failedOnce) toast(`Cannot load the charts: ${describeError(error)}`, "error");
    glance.failedOnce = true;
  } finally {
    glance.loading = false;
    if (glance.again) {
      glance.again = false;
      loadGlance();
    }
  }
}

/** A task changed on the event stream: count its end now, and read the service soon. */
export function noteTask(task) {
  const answer = glance.answer;
  if (answer && TERMINAL.has(task.status) && answer.series.length) {
    answer.series[answer.series.length - 1][task.status] += 1;
    let type = answer.by_type.find((item) => item.name === task.name);
    if (!type) {
      type = { name: task.name, completed: 0, failed: 0, cancelled: 0, duration_p50: null, duration_p95: null };
      answer.by_type.push(type);
    }
    type[task.status] += 1;
    render();
  }
  if (glance.refresh === null) {
    glance.refresh = setTimeout(() => {
      glance.refresh = null;
      loadGlance();
    }, REFRESH_AFTER);
  }
}

/** The sums of task type `name` over the window shown (null: no runs in it). */
export function typeStats(name) {
  return glance.answer?.by_type.find((item) => item.name === name) ?? null;
}

export function windowLabel() {
  return WINDOW_LABELS[glance.minutes] ?? `last ${glance.minutes} minutes`;
}

/** Call `listener` after each drawing (the task types panel shows the same window). */
export function onGlance(listener) {
  glance.listeners.push(listener);
}

// -- drawing --------------------------------------------------------------------------------

function chart(id, title, legend) {
  const svg = chartSvg(title);
  const figure = h("figure", { className: "chart", id },
    h("figcaption", { className: "chart-head" },
      h("span", { className: "chart-title", text: title }),
      h("span", { className: "chart-summary" })),
    h("div", { className: "chart-plot" }, h("span", { className: "chart-max" }), h("span", { className: "chart-min" }), svg),
    h("div", { className: "chart-axis" }, h("span", { className: "axis-start" }), h("span", { text: "now" })),
    h("ul", { className: "chart-legend" }, legend.map(({ className, label }) =>
      h("li", {}, h("span", { className: `swatch ${className}` }), label))));
  const part = (selector) => figure.querySelector(selector);
  return { figure, svg, summary: part(".chart-summary"), max: part(".chart-max"), min: part(".chart-min"), start: part(".axis-start") };
}

function buildCharts() {
  glance.charts = {
    finished: chart("chart-finished", "Finished per minute", FINISHED),
    depth: chart("chart-depth", "Queue depth", [{ className: "line-depth", label: "pending and due" }]),
    durations: chart("chart-durations", "Attempt duration (log scale)", [
      { className: "line-p50", label: "p50" },
      { className: "line-p95", label: "p95" },
    ]),
  };
  $("#glance-charts").replaceChildren(...Object.values(glance.charts).map((item) => item.figure));
}

/** Minutes in groups of `size`: counts summed, the depth at the group's end, p50 the
 * runs-weighted mean of its minutes' and p95 the highest (a group of one is exact). */
function grouped(series, size) {
  const groups = [];
  for (let start = 0; start < series.length; start += size) {
    const items = series.slice(start, start + size);
    const sum = (key) => items.reduce((total, item) => total + item[key], 0);
    let weight = 0;
    let weighted = 0;
    let p95 = null;
    for (const item of items) {
      if (item.duration_p50 === null) continue;
      const runs = Math.max(1, item.completed + item.failed + item.retried);
      weight += runs;
      weighted += item.duration_p50 * runs;
      p95 = Math.max(p95 ?? 0, item.duration_p95);
    }
    groups.push({
      from: items[0].minute,
      to: items[items.length - 1].minute,
      completed: sum("completed"),
      failed: sum("failed"),
      cancelled: sum("cancelled"),
      retried: sum("retried"),
      depth: items[items.length - 1].queue_depth,
      p50: weight ? weighted / weight : null,
      p95,
    });
  }
  return groups;
}

function span(group) {
  return group.from === group.to ? minuteLabel(group.from) : `${minuteLabel(group.from)}–${minuteLabel(group.to)}`;
}

function render() {
  const answer = glance.answer;
  if (!answer) return;
  if (!glance.charts) buildCharts();
  const size = Math.max(1, Math.ceil(answer.series.length / MAX_SLOTS));
  const groups = grouped(answer.series, size);
  const per = size === 1 ? "minute" : `${size} minutes`;
  const { finished, depth, durations } = glance.charts;
  const start = answer.series.length ? minuteLabel(answer.series[0].minute) : "";

  const totals = Object.fromEntries(FINISHED.map(({ key }) => [key, groups.reduce((t, g) => t + g[key], 0)]));
  const finishedMax = niceMax(Math.max(...groups.map((g) => g.completed + g.failed + g.cancelled + g.retried)));
  drawBars(finished.svg, groups.map((g) => ({
    values: g,
    title: `${span(g)}: ${g.completed} completed, ${g.failed} failed, ${g.cancelled} cancelled, ${g.retried} retried`,
  })), FINISHED, finishedMax);
  setText(finished.figure.querySelector(".chart-title"), `Finished per ${per}`);
  setText(finished.summary, FINISHED.map(({ key }) => `${formatCount(totals[key])} ${key}`).join(" · "));
  setText(finished.max, formatCount(finishedMax));

  const depths = groups.map((g) => g.depth);
  const depthMax = niceMax(Math.max(...depths));
  drawLines(depth.svg, [{ values: depths, className: "line-depth", area: true }], linear(depthMax),
    groups.map((g) => `${span(g)}: ${g.depth} waiting`));
  setText(depth.summary, `${formatCount(depths[depths.length - 1] ?? 0)} now · at most ${formatCount(Math.max(...depths, 0))}`);
  setText(depth.max, formatCount(depthMax));

  const p95s = groups.map((g) => g.p95);
  const p50s = groups.map((g) => g.p50);
  const [low, high] = decades([...p50s, ...p95s].filter((value) => value !== null));
  drawLines(durations.svg, [
    { values: p95s, className: "line-p95" },
    { values: p50s, className: "line-p50" },
  ], logarithmic(low, high), groups.map((g) => (g.p50 === null
    ? `${span(g)}: no attempt ended`
    : `${span(g)}: p50 ${formatSeconds(g.p50)}, p95 ${formatSeconds(g.p95)}`)));
  const latest = [...groups].reverse().find((g) => g.p50 !== null);
  setText(durations.summary, latest ? `p50 ${formatSeconds(latest.p50)} · p95 ${formatSeconds(latest.p95)} at ${minuteLabel(latest.to)}` : "no attempt ended");
  setText(durations.max, latest ? formatSeconds(high) : "");
  setText(durations.min, latest ? formatSeconds(low) : "");

  for (const item of [finished, depth, durations]) setText(item.start, start);
  $("#glance-panel").dataset.minutes = String(answer.series.length);
  for (const listener of glance.listeners) listener();
}

/** The window picker, a read at each new minute, and a fresh read when the page shows. */
export function setupGlance() {
  const picker = $("#glance-window");
  picker.addEventListener("change", () => {
    glance.minutes = Number(picker.value);
    loadGlance();
  });
  const atNextMinute = () => {
    const wait = 60_000 - (Date.now() % 60_000) + 1000;
    setTimeout(() => {
      if (document.visibilityState === "visible") loadGlance();
      atNextMinute();
    }, wait);
  };
  atNextMinute();
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") loadGlance();
  });
}
