// Small shared pieces for the dashboard pages: DOM building, number formatting, JSON fetches.

/** Escape text for safe insertion into HTML built from template strings. */
export function esc(value) {
  return String(value)
    .replaceAll("&", "&amp;")
    .replaceAll("<", "&lt;")
    .replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;")
    .replaceAll("'", "&#39;");
}

/** A number for people: integers with thousands separators, others to `digits` places. */
export function fmt(value, digits = 2) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  return value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** A reward for people: as `fmt`, but NaN shown as "NaN" (the agent's value, not a missing one). */
export function fmtReward(value) {
  return Number.isNaN(value) ? "NaN" : fmt(value);
}

const NON_FINITE = { nan: NaN, inf: Infinity, "-inf": -Infinity };

/** JSON.parse reviver: the server sends non-finite rewards as "nan", "inf", "-inf" (JSON has no
 * such numbers); this turns them back into numbers. */
export function reviveRewards(key, value) {
  if ((key === "reward" || key === "total_reward") && typeof value === "string" && value in NON_FINITE) {
    return NON_FINITE[value];
  }
  return value;
}

/** Seconds-resolution local time of a millisecond timestamp, or "—". */
export function fmtTime(ms) {
  if (!ms) return "—";
  const d = new Date(ms);
  return d.toLocaleString("en-GB", { hour12: false });
}

/** GET a JSON document; throws an Error carrying the server's message on a non-2xx answer. */
export async function getJSON(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await response.text().then((text) => JSON.parse(text, reviveRewards)).catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

/** The short form of a status name used for badges ("RUN_STATUS_EXEC" -> "EXEC"). */
export function shortStatus(status) {
  return String(status || "UNSPECIFIED").replace(/^RUN_STATUS_/, "");
}

export function badge(status) {
  const s = shortStatus(status);
  return `<span class="badge s-${esc(s)}" data-status="${esc(s)}">${esc(s)}</span>`;
}
