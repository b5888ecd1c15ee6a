// How values read on the page: ids, params, times, durations, percentages. Plain strings
// only, no DOM, so any module can use them.

export function shortId(id) {
  return id.length > 8 ? id.slice(-8) : id;
}

export function json(value, indent = 2) {
  return JSON.stringify(value, null, indent);
}

/** `seconds=3 · steps=30`: a task's params on one line. */
export function paramsSummary(params) {
  const parts = Object.entries(params ?? {})
    .filter(([, value]) => value !== null)
    .map(([key, value]) => `${key}=${typeof value === "string" ? value : JSON.stringify(value)}`);
  const line = parts.join(" · ");
  return line.length > 90 ? `${line.slice(0, 89)}…` : line;
}

export function oneLine(text, max = 80) {
  const line = String(text).replace(/\s+/g, " ").trim();
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

// -- time -----------------------------------------------------------------------------------

const timeFormat = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
});
const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
  month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23",
});
const minuteFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
const fullFormat = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric",
  hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZoneName: "short",
});

export function parseTime(iso) {
  if (!iso) return null;
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? null : date;
}

/** The time alone for today, with the date for any other day. */
export function shortTime(iso) {
  const date = parseTime(iso);
  if (!date) return "";
  const now = new Date();
  return date.toDateString() === now.toDateString() ? timeFormat.format(date) : dateTimeFormat.format(date);
}

/** "14:05": a minute of the charts, in local time. */
export function minuteLabel(iso) {
  const date = parseTime(iso);
  return date ? minuteFormat.format(date) : "";
}

export function fullTime(iso) {
  const date = parseTime(iso);
  return date ? fullFormat.format(date) : "";
}

function duration(seconds) {
  if (seconds < 0) seconds = 0;
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 90) return `${Math.round(seconds)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 90) return `${minutes} min ${Math.round(seconds % 60)} s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${minutes % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

export function between(startIso, endIso) {
  const start = parseTime(startIso);
  const end = parseTime(endIso);
  return start && end ? duration((end - start) / 1000) : "";
}

/** "in 12 s" / "3 min ago" from now. */
export function relative(iso) {
  const date = parseTime(iso);
  if (!date) return "";
  const seconds = (date - Date.now()) / 1000;
  if (Math.abs(seconds) < 1) return "now";
  return seconds > 0 ? `in ${duration(seconds)}` : `${duration(-seconds)} ago`;
}

// -- progress -------------------------------------------------------------------------------

/** A task's progress clamped to 0..100 (a task may report anything). */
export function percent(progress) {
  return Math.max(0, Math.min(100, Number(progress)));
}

/** "42%", "3.5%" (a decimal only while it matters); "" while the task has reported none. */
export function formatPercent(progress) {
  if (progress === null || progress === undefined) return "";
  const value = percent(progress);
  return `${value < 10 && value % 1 ? value.toFixed(1) : Math.round(value)}%`;
}

// -- counts and durations -------------------------------------------------------------------

const countFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });

export function formatCount(value) {
  return countFormat.format(value);
}

function significant(value) {
  if (value >= 100) return String(Math.round(value));
  return String(Number(value.toPrecision(2)));
}

/** "120 µs", "85 ms", "1.4 s", "2.5 min", "3 h": an attempt's duration, two digits. */
export function formatSeconds(value) {
  if (value === null || value === undefined) return "–";
  if (value < 0.001) return `${significant(value * 1e6)} µs`;
  if (value < 1) return `${significant(value * 1000)} ms`;
  if (value < 120) return `${significant(value)} s`;
  if (value < 7200) return `${significant(value / 60)} min`;
  return `${significant(value / 3600)} h`;
}
