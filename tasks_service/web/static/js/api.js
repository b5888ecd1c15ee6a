// Calls to the service's JSON API, with the token; and its errors, made readable.

import { noteAccess } from "./access.js";
import { askForToken, authHeaders, currentToken } from "./token.js";

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

/** JSON if the body is JSON, else its text (a proxy's error page), null if empty. */
async function readBody(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** Call the API; on 401, ask for the token and try again. Errors throw ApiError. */
export async function api(method, path, body) {
  for (;;) {
    const token = currentToken();
    const headers = { Accept: "application/json", ...authHeaders(token) };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch {
      throw new ApiError(0, "The service cannot be reached.");
    }
    if (response.status === 401) {
      await askForToken(token);
      continue;
    }
    noteAccess(response);
    const data = await readBody(response);
    if (!response.ok) throw new ApiError(response.status, data && data.detail !== undefined ? data.detail : data);
    return data;
  }
}

/** A readable line for any error detail FastAPI sends (a string or a list of errors). */
export function describeError(error) {
  if (!(error instanceof ApiError)) return String(error?.message ?? error);
  const { detail, status } = error;
  if (typeof detail === "string" && detail) return detail;
  if (Array.isArray(detail)) return detail.map((item) => `${errorLocation(item)}: ${item.msg}`).join("; ");
  return `The service answered ${status}.`;
}

/** Where a validation error points: `params.extra`, without FastAPI's leading "body". */
export function errorLocation(item) {
  const loc = Array.isArray(item?.loc) ? item.loc.filter((part, i) => !(i === 0 && part === "body")) : [];
  return loc.length ? loc.join(".") : "request";
}
