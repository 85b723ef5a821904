// Pictures of grid environments (FrozenLake, CliffWalking, Taxi) drawn from a step's
// observation and the render hint the agent sent with it ({"kind": "grid", "rows", "cols",
// "desc": [...], "env_id"?}). Anything else gets no picture, only the raw observation.

const NS = "http://www.w3.org/2000/svg";

const ACTION_NAMES = {
  frozenlake: ["Left", "Down", "Right", "Up"],
  cliffwalking: ["Up", "Right", "Down", "Left"],
  taxi: ["South", "North", "East", "West", "Pickup", "Dropoff"],
};

const TAXI_LOCS = [[0, 0], [0, 4], [4, 0], [4, 3]];
const TAXI_COLOURS = { R: "#e05252", G: "#2e9d5b", Y: "#d9a400", B: "#3f74d8" };

const CELL_FILL = {
  S: "#cfe8d6", F: "#e6f1fb", H: "#27466b", G: "#f4c84a", C: "#9c4a3a", ".": "#f2f4f7", W: "#5b6675",
};

/** Which grid world a hint describes: "frozenlake", "cliffwalking", "taxi", "grid" or null. */
export function gridKind(hint) {
  if (!hint || typeof hint !== "object") return null;
  const env = String(hint.env_id || hint.env || "").toLowerCase();
  if (env.startsWith("taxi")) return "taxi";
  if (env.startsWith("cliffwalking")) return "cliffwalking";
  if (env.startsWith("frozenlake")) return "frozenlake";
  if (hint.kind !== "grid") return null;
  const desc = Array.isArray(hint.desc) ? hint.desc.map(String) : [];
  if (hint.walls || hint.locations || (desc.length && desc[0].startsWith("+"))) return "taxi";
  if (desc.some((row) => row.includes("C"))) return "cliffwalking";
  if (desc.some((row) => row.includes("H"))) return "frozenlake";
  return "grid";
}

/** Human name of an action for a grid world, or the raw action as text. */
export function actionName(kind, action) {
  const names = ACTION_NAMES[kind];
  const i = Number(action);
  if (names && Number.isInteger(i) && i >= 0 && i < names.length) return `${names[i]} (${i})`;
  return typeof action === "string" ? action : JSON.stringify(action);
}

function stateIndex(observation) {
  if (typeof observation === "number") return observation;
  if (typeof observation === "string" && /^\d+$/.test(observation)) return Number(observation);
  if (observation && typeof observation === "object" && "state" in observation) return Number(observation.state);
  return null;
}

function node(tag, attrs, parent) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  parent.appendChild(el);
  return el;
}

function plainLayout(hint, kind) {
  let desc = Array.isArray(hint.desc) ? hint.desc.map(String) : null;
  const rows = Number(hint.rows) || (desc ? desc.length : 0);
  const cols = Number(hint.cols) || (desc ? desc[0].length : 0);
  if (!desc && kind === "cliffwalking" && rows && cols) {
    // CliffWalking has no map in Gymnasium: start bottom-left, cliff along the bottom, goal bottom-right.
    desc = Array.from({ length: rows }, (_, r) =>
      r === rows - 1 ? "S" + "C".repeat(cols - 2) + "G" : ".".repeat(cols));
  }
  if (!desc) desc = Array.from({ length: rows }, () => ".".repeat(cols));
  return { rows, cols, desc };
}

/** Positions (row, col) of the agent for a state index in a plain grid. */
function cellOf(s, cols) {
  return [Math.floor(s / cols), s % cols];
}

/** Decode a Taxi state (Gymnasium's encoding) into taxi row/col, passenger location, destination. */
export function decodeTaxi(observation) {
  if (Array.isArray(observation) && observation.length === 4) return observation.map(Number);
  let s = stateIndex(observation);
  if (s === null) return null;
  const dest = s % 4; s = Math.floor(s / 4);
  const pass = s % 5; s = Math.floor(s / 5);
  const col = s % 5; const row = Math.floor(s / 5);
  return [row, col, pass, dest];
}

/**
 * Draw the board for `observation` into `svg`; `trail` is the list of earlier observations of
 * the episode (drawn faintly). Returns false when the hint is not a grid we know how to draw.
 */
export function drawBoard(svg, hint, observation, trail = []) {
  svg.replaceChildren();
  const kind = gridKind(hint);
  if (!kind) return false;
  if (kind === "taxi") return drawTaxi(svg, hint, observation, trail);
  const { rows, cols, desc } = plainLayout(hint, kind);
  if (!rows || !cols) return false;
  const size = Math.max(14, Math.min(56, Math.floor(440 / cols), Math.floor(330 / rows)));
  svg.setAttribute("width", cols * size + 2);
  svg.setAttribute("height", rows * size + 2);
  svg.setAttribute("viewBox", `-1 -1 ${cols * size + 2} ${rows * size + 2}`);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const ch = (desc[r] || "")[c] || ".";
      node("rect", {
        x: c * size, y: r * size, width: size, height: size,
        fill: CELL_FILL[ch] || CELL_FILL["."], stroke: "#ffffff", "stroke-width": 1.5, class: `cell cell-${ch}`,
      }, svg);
      if ("SGH".includes(ch) || (ch === "C" && size >= 24)) {
        const t = node("text", {
          x: c * size + size / 2, y: r * size + size / 2 + 4, "text-anchor": "middle",
          "font-size": Math.round(size * 0.32), fill: ch === "H" || ch === "C" ? "#ffffff" : "#44505f",
        }, svg);
        t.textContent = ch;
      }
    }
  }
  const seen = new Set();
  for (const obs of trail) {
    const s = stateIndex(obs);
    if (s === null || seen.has(s)) continue;
    seen.add(s);
    const [r, c] = cellOf(s, cols);
    node("circle", { cx: c * size + size / 2, cy: r * size + size / 2, r: size * 0.12, fill: "#2f6fdf", opacity: 0.35, class: "trail" }, svg);
  }
  const s = stateIndex(observation);
  if (s !== null && s >= 0 && s < rows * cols) {
    const [r, c] = cellOf(s, cols);
    node("circle", {
      cx: c * size + size / 2, cy: r * size + size / 2, r: size * 0.3,
      fill: "#2f6fdf", stroke: "#ffffff", "stroke-width": 2, class: "agent",
    }, svg);
  }
  return true;
}

/** Taxi's layout from the hint: bordered wall map, letters per cell, the four stops. */
function taxiLayout(hint) {
  const desc = Array.isArray(hint.desc) ? hint.desc.map(String) : [];
  const bordered = Array.isArray(hint.walls) ? hint.walls.map(String) : desc[0]?.startsWith("+") ? desc : null;
  const rows = Number(hint.rows) || (bordered ? bordered.length - 2 : 5);
  const cols = Number(hint.cols) || (bordered ? Math.floor((bordered[0].length - 1) / 2) : 5);
  const letter = (r, c) => (bordered ? bordered[r + 1][2 * c + 1] : (desc[r] || "")[c]) || ".";
  const wallEast = (r, c) => Boolean(bordered) && c < cols - 1 && bordered[r + 1][2 * c + 2] === "|";
  const locs = Array.isArray(hint.locations) ? hint.locations : TAXI_LOCS;
  return { rows, cols, letter, wallEast, locs };
}

function drawTaxi(svg, hint, observation, trail) {
  const { rows, cols, letter, wallEast, locs } = taxiLayout(hint);
  const size = 52;
  svg.setAttribute("width", cols * size + 8);
  svg.setAttribute("height", rows * size + 8);
  svg.setAttribute("viewBox", `-4 -4 ${cols * size + 8} ${rows * size + 8}`);
  node("rect", { x: 0, y: 0, width: cols * size, height: rows * size, fill: "#f2f4f7", stroke: "#44505f", "stroke-width": 3 }, svg);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      node("rect", { x: c * size, y: r * size, width: size, height: size, fill: "none", stroke: "#dde3ea", class: "cell" }, svg);
      const ch = letter(r, c);
      if (TAXI_COLOURS[ch]) {
        node("rect", { x: c * size + 3, y: r * size + 3, width: size - 6, height: size - 6, fill: TAXI_COLOURS[ch], opacity: 0.22, rx: 4 }, svg);
        const t = node("text", { x: c * size + 8, y: r * size + 16, "font-size": 12, "font-weight": 700, fill: TAXI_COLOURS[ch] }, svg);
        t.textContent = ch;
      }
      if (wallEast(r, c)) {
        node("line", { x1: (c + 1) * size, x2: (c + 1) * size, y1: r * size, y2: (r + 1) * size, stroke: "#44505f", "stroke-width": 4, class: "wall" }, svg);
      }
    }
  }
  for (const obs of trail) {
    const t = decodeTaxi(obs);
    if (!t) continue;
    node("circle", { cx: t[1] * size + size / 2, cy: t[0] * size + size / 2, r: 4, fill: "#d9a400", opacity: 0.35, class: "trail" }, svg);
  }
  const taxi = decodeTaxi(observation);
  if (!taxi) return true;
  const [row, col, pass, dest] = taxi;
  if (locs[dest]) {
    const [dr, dc] = locs[dest];
    node("rect", { x: dc * size + 2, y: dr * size + 2, width: size - 4, height: size - 4, fill: "none", stroke: "#1d2733", "stroke-width": 2.5, "stroke-dasharray": "5 3", class: "destination" }, svg);
  }
  const inTaxi = pass === locs.length;
  node("rect", {
    x: col * size + 9, y: row * size + 14, width: size - 18, height: size - 26, rx: 6,
    fill: inTaxi ? "#2e9d5b" : "#f0b400", stroke: "#1d2733", "stroke-width": 1.5, class: "agent",
  }, svg);
  if (!inTaxi && locs[pass]) {
    const [pr, pc] = locs[pass];
    node("circle", { cx: pc * size + size - 12, cy: pr * size + size - 12, r: 7, fill: "#1d2733", class: "passenger" }, svg);
  }
  return true;
}
