// Hand-drawn SVG line charts: one point per episode plus a rolling mean.
// One <polyline> per series keeps thousands of episodes cheap to redraw.

const NS = "http://www.w3.org/2000/svg";

/** Mean of the last `window` values at each index (a trailing window, shorter at the start). */
export function rollingMean(values, window) {
  const out = new Array(values.length);
  let sum = 0;
  for (let i = 0; i < values.length; i++) {
    sum += values[i];
    if (i >= window) sum -= values[i - window];
    out[i] = sum / Math.min(i + 1, window);
  }
  return out;
}

/** About `count` round tick values covering [lo, hi]. */
function ticks(lo, hi, count) {
  if (hi === lo) return [lo];
  const raw = (hi - lo) / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}

function node(tag, attrs, parent) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  parent.appendChild(el);
  return el;
}

function tickLabel(v) {
  const a = Math.abs(v);
  if (a >= 10000) return `${+(v / 1000).toFixed(1)}k`;
  return String(+v.toFixed(2));
}

/**
 * Draw `ys` (one value per episode, x = episode index `xs`) with its rolling mean into `svg`.
 * The svg gets data-points = number of points drawn, which tests and people can read.
 */
export function drawSeries(svg, xs, ys, { window = 20, emptyText = "waiting for the first episode" } = {}) {
  const width = Math.max(svg.clientWidth || 0, 320);
  const height = Math.max(svg.clientHeight || 0, 160);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  svg.dataset.points = String(ys.length);
  const m = { l: 44, r: 10, t: 10, b: 22 };
  const w = width - m.l - m.r;
  const h = height - m.t - m.b;
  if (ys.length === 0) {
    const t = node("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "axis" }, svg);
    t.setAttribute("fill", "#8895a7");
    t.textContent = emptyText;
    return;
  }
  const mean = rollingMean(ys, window);
  let lo = Math.min(...ys), hi = Math.max(...ys);
  if (lo === hi) { lo -= 1; hi += 1; }
  const pad = (hi - lo) * 0.06;
  lo -= pad; hi += pad;
  const x0 = xs[0], x1 = xs[xs.length - 1] === x0 ? x0 + 1 : xs[xs.length - 1];
  const sx = (x) => m.l + ((x - x0) / (x1 - x0)) * w;
  const sy = (y) => m.t + (1 - (y - lo) / (hi - lo)) * h;

  const axis = node("g", { class: "axis" }, svg);
  for (const v of ticks(lo, hi, 4)) {
    node("line", { class: "gridline", x1: m.l, x2: m.l + w, y1: sy(v), y2: sy(v) }, axis);
    const t = node("text", { x: m.l - 6, y: sy(v) + 3, "text-anchor": "end" }, axis);
    t.textContent = tickLabel(v);
  }
  for (const v of ticks(x0, x1, 6)) {
    if (!Number.isInteger(v)) continue;
    const t = node("text", { x: sx(v), y: height - 6, "text-anchor": "middle" }, axis);
    t.textContent = tickLabel(v);
  }
  node("line", { x1: m.l, x2: m.l + w, y1: m.t + h, y2: m.t + h }, axis);

  const pts = (vals) => vals.map((y, i) => `${sx(xs[i]).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
  node("polyline", { class: "series-raw", points: pts(ys) }, svg);
  if (ys.length <= 120) {
    const dots = node("g", { class: "pts" }, svg);
    ys.forEach((y, i) => node("circle", { class: "pt", cx: sx(xs[i]).toFixed(1), cy: sy(y).toFixed(1), r: 2.2 }, dots));
  }
  node("polyline", { class: "series-mean", points: pts(mean) }, svg);
}
