// One run: a tab per agent, created when that agent's first record arrives over the
// server-sent event stream, with live curves, the latest steps, coordination messages,
// and an episode replay. Protocol: see telemetry/dashboard/live.py.
import { esc, fmt, fmtReward, getJSON, badge, reviveRewards } from "/static/common.js";
import { drawSeries } from "/static/charts.js";
import { drawBoard, gridKind, actionName } from "/static/grid.js";

const runId = document.querySelector('meta[name="run-id"]').content;
const runPath = `/api/runs/${encodeURIComponent(runId)}`;
const TABLE_ROWS = 12;       // latest steps shown per agent
const MESSAGE_ROWS = 30;     // latest coordination messages shown per agent
const STATS_WINDOW = 100;    // episodes in the rolling mean and success rate
const SPS_WINDOW_MS = 5000;  // steps/s over this much wall-clock time

const agents = new Map();
let selected = null;
let renderQueued = false;
const openedAt = Date.now();

const tabs = document.getElementById("tabs");
const panels = document.getElementById("panels");
const conn = document.getElementById("conn");

function panelHtml(id) {
  const e = esc(id);
  return `
  <section class="agent-panel" role="tabpanel" data-agent-id="${e}" hidden>
    <div class="stats">
      <div class="stat"><div class="label">episodes</div><div class="value" data-k="episodes">0</div><div class="sub" data-k="last-return"></div></div>
      <div class="stat"><div class="label">steps</div><div class="value" data-k="steps">0</div><div class="sub" data-k="thinned"></div></div>
      <div class="stat"><div class="label">mean return</div><div class="value" data-k="mean-return">—</div><div class="sub">last ${STATS_WINDOW} episodes</div></div>
      <div class="stat"><div class="label">mean length</div><div class="value" data-k="mean-length">—</div><div class="sub">last ${STATS_WINDOW} episodes</div></div>
      <div class="stat"><div class="label">success rate</div><div class="value" data-k="success">—</div><div class="sub">last ${STATS_WINDOW} episodes</div></div>
      <div class="stat"><div class="label">steps/s</div><div class="value" data-k="sps">—</div><div class="sub">live, last ${SPS_WINDOW_MS / 1000} s</div></div>
    </div>
    <div class="row2">
      <div class="panel chart">
        <h2>Episodic return</h2>
        <svg class="curve" data-k="return-chart" data-points="0"></svg>
        <div class="legend"><span><span class="sw" style="background:#8fb1ec"></span>per episode</span><span><span class="sw" style="background:#e0662f"></span>rolling mean (20)</span></div>
      </div>
      <div class="panel chart">
        <h2>Episodic length</h2>
        <svg class="curve" data-k="length-chart" data-points="0"></svg>
        <div class="legend"><span><span class="sw" style="background:#8fb1ec"></span>per episode</span><span><span class="sw" style="background:#e0662f"></span>rolling mean (20)</span></div>
      </div>
    </div>
    <div class="row-main">
      <div class="panel">
        <h2>Latest steps <span class="thin-note" data-k="thin-note"></span></h2>
        <table class="grid steps">
          <thead><tr><th class="num">seq</th><th class="num">episode</th><th class="num">step</th><th>action</th><th class="num">reward</th><th>end</th></tr></thead>
          <tbody data-k="steps-body"></tbody>
        </table>
      </div>
      <div class="panel replay">
        <h2>Replay</h2>
        <div class="controls">
          <select data-k="episode-select" aria-label="episode to replay"><option value="">choose an episode…</option></select>
          <button class="button" data-k="first" title="first step" disabled>|◀</button>
          <button class="button" data-k="prev" title="previous step" disabled>◀</button>
          <button class="button" data-k="play" title="play" disabled>▶ play</button>
          <button class="button" data-k="next" title="next step" disabled>▶</button>
          <button class="button" data-k="last" title="last step" disabled>▶|</button>
          <input type="range" data-k="scrub" min="0" max="0" value="0" disabled aria-label="step">
        </div>
        <div class="body">
          <svg class="board" data-k="board" width="0" height="0"></svg>
          <dl data-k="replay-info"><dt>episode</dt><dd>—</dd></dl>
        </div>
      </div>
    </div>
    <div class="panel messages" data-k="messages-panel" hidden>
      <h2>Coordination messages <span class="thin-note" data-k="msg-note"></span></h2>
      <div class="scroll"><table class="grid">
        <thead><tr><th class="num">#</th><th>direction</th><th>peer</th><th>kind</th><th class="num">bytes</th><th class="num">episode</th></tr></thead>
        <tbody data-k="messages-body"></tbody>
      </table></div>
    </div>
  </section>`;
}

/** The agent's state and DOM; created (with its tab) the first time the agent is seen. */
function agent(id) {
  let a = agents.get(id);
  if (a) return a;
  document.getElementById("waiting")?.remove();
  const button = document.createElement("button");
  button.setAttribute("role", "tab");
  button.dataset.agentId = id;
  button.innerHTML = `<span class="dot"></span>${esc(id)}`;
  button.addEventListener("click", () => select(id));
  tabs.appendChild(button);
  panels.insertAdjacentHTML("beforeend", panelHtml(id));
  const panel = panels.lastElementChild;
  const ref = (k) => panel.querySelector(`[data-k="${k}"]`);
  a = {
    id, button, panel, ref,
    episodes: [], episodeSeq: 0, episodeSteps: 0, doneEpisodes: new Set(), latest: null,
    steps: [], skipped: 0,
    messages: [], messageCount: 0, sent: 0, received: 0, bytes: 0,
    spsSamples: [], lastStepAt: 0, dirty: true, replay: null,
  };
  agents.set(id, a);
  wireReplay(a);
  if (selected === null) select(id);
  summary();
  return a;
}

function select(id) {
  selected = id;
  for (const [aid, a] of agents) {
    const on = aid === id;
    a.button.setAttribute("aria-selected", String(on));
    a.panel.hidden = !on;
    if (on) a.dirty = true;
  }
  scheduleRender();
}

function summary() {
  const n = agents.size;
  document.getElementById("run-summary").textContent = `${n} agent${n === 1 ? "" : "s"}`;
}

function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    const now = Date.now();
    for (const a of agents.values()) {
      a.button.classList.toggle("active-agent", now - a.lastStepAt < 3000);
      if (a.id === selected && a.dirty) render(a);
    }
  });
}
// Keeps steps/s and the tab dots honest when nothing arrives.
setInterval(() => { const a = agents.get(selected); if (a) a.dirty = true; scheduleRender(); }, 1000);

function mean(xs) { return xs.length ? xs.reduce((s, x) => s + x, 0) / xs.length : null; }

/** Steps taken: those of finished episodes plus the episode in progress (step indices count from 0). */
function totalSteps(a) {
  const open = a.latest && !a.doneEpisodes.has(a.latest.episode) ? a.latest.step + 1 : 0;
  return a.episodeSteps + open;
}

/** Steps per second over the last few seconds of the live stream (counts include thinned steps). */
function stepsPerSecond(a) {
  const now = Date.now();
  a.spsSamples = a.spsSamples.filter(([t]) => now - t <= SPS_WINDOW_MS);
  const span = Math.min(SPS_WINDOW_MS, now - openedAt) / 1000;
  if (span < 1) return null;
  return a.spsSamples.reduce((sum, [, count]) => sum + count, 0) / span;
}

function render(a) {
  a.dirty = false;
  const ref = a.ref;
  const recent = a.episodes.slice(-STATS_WINDOW);
  ref("episodes").textContent = fmt(a.episodes.length);
  const last = a.episodes[a.episodes.length - 1];
  ref("last-return").textContent = last ? `last return ${fmtReward(last.total_reward)}` : "";
  ref("steps").textContent = fmt(totalSteps(a));
  ref("thinned").textContent = a.skipped ? `${fmt(a.skipped)} thinned from the table` : "";
  ref("mean-return").textContent = fmtReward(mean(recent.map((e) => e.total_reward)));
  ref("mean-length").textContent = fmt(mean(recent.map((e) => e.steps)), 1);
  const succ = recent.filter((e) => e.success !== null);
  ref("success").textContent = succ.length ? `${fmt((100 * succ.filter((e) => e.success).length) / succ.length, 0)}%` : "—";
  const sps = stepsPerSecond(a);
  ref("sps").textContent = sps === null ? "—" : fmt(Math.round(sps));

  const xs = a.episodes.map((e) => e.episode);
  // Returns that are not finite (an agent's NaN) are shown in the tables, not plotted.
  const measured = a.episodes.filter((e) => Number.isFinite(e.total_reward));
  drawSeries(ref("return-chart"), measured.map((e) => e.episode), measured.map((e) => e.total_reward));
  drawSeries(ref("length-chart"), xs, a.episodes.map((e) => e.steps));

  const kind = a.kind;
  ref("steps-body").innerHTML = a.steps.slice().reverse().map((s) => `
    <tr data-seq="${s.seq}" data-episode="${s.episode}" data-step="${s.step}"${s.fresh ? ' class="fresh"' : ""}>
      <td class="num muted">${s.seq}</td><td class="num">${s.episode}</td><td class="num">${s.step}</td>
      <td>${esc(actionName(kind, s.action))}</td><td class="num">${fmtReward(s.reward)}</td>
      <td>${s.terminated ? '<span class="flag term">terminated</span>' : ""}${s.truncated ? '<span class="flag trunc">truncated</span>' : ""}</td>
    </tr>`).join("");
  for (const s of a.steps) s.fresh = false;
  ref("thin-note").textContent = a.skipped ? "(thinned: the newest rows of each update)" : "";

  if (a.messageCount) {
    ref("messages-panel").hidden = false;
    ref("msg-note").textContent =
      `${fmt(a.messageCount)} in all · ${fmt(a.sent)} sent · ${fmt(a.received)} received · ${fmt(a.bytes)} bytes`;
    ref("messages-body").innerHTML = a.messages.slice().reverse().map((m) => `
      <tr data-index="${m.index}"><td class="num muted">${m.index}</td>
        <td>${m.direction === "sent" ? "→ sent" : "← received"}</td><td class="mono">${esc(m.peer)}</td>
        <td>${esc(m.kind)}</td><td class="num">${fmt(m.bytes)}</td><td class="num">${m.episode}</td></tr>`).join("");
  }
  refreshEpisodeChoices(a);
}

// ---- live stream -----------------------------------------------------------------

function onHello(data) {
  document.getElementById("run-status").innerHTML = badge(data.run.status);
  for (const id of data.agents) agent(id);
}

function onSteps(data) {
  const now = Date.now();
  for (const [id, update] of Object.entries(data.agents)) {
    const a = agent(id);
    for (const row of update.rows) {
      row.fresh = true;
      a.steps.push(row);
    }
    if (update.render_hint) a.kind = gridKind(update.render_hint);
    if (a.steps.length > TABLE_ROWS) a.steps.splice(0, a.steps.length - TABLE_ROWS);
    const newest = update.rows[update.rows.length - 1];
    if (newest && (!a.latest || newest.seq > a.latest.seq)) a.latest = newest;
    a.skipped += update.skipped;
    if (update.count) a.lastStepAt = now;
    if (update.count) a.spsSamples.push([now, update.count]);
    a.dirty = true;
  }
  scheduleRender();
}

function onEpisodes(data) {
  for (const row of data.rows) {
    const a = agent(row.agent_id);
    if (row.seq <= a.episodeSeq) continue;
    a.episodeSeq = row.seq;
    a.episodes.push(row);
    a.episodeSteps += row.steps;
    a.doneEpisodes.add(row.episode);
    a.dirty = true;
  }
  scheduleRender();
}

function onMessages(data) {
  for (const m of data.rows) {
    const a = agent(m.agent_id);
    a.messages.push(m);
    if (a.messages.length > MESSAGE_ROWS) a.messages.shift();
    a.messageCount += 1;
    if (m.direction === "sent") a.sent += 1; else a.received += 1;
    a.bytes += m.bytes;
    a.dirty = true;
  }
  scheduleRender();
}

function connect() {
  const source = new EventSource(`${runPath}/events`);
  const on = (name, fn) => source.addEventListener(name, (ev) => fn(JSON.parse(ev.data, reviveRewards)));
  on("hello", onHello);
  on("steps", onSteps);
  on("episodes", onEpisodes);
  on("messages", onMessages);
  on("run", (run) => { document.getElementById("run-status").innerHTML = badge(run.status); });
  source.onopen = () => { conn.textContent = "live"; conn.className = "conn live"; };
  source.onerror = () => { conn.textContent = "reconnecting…"; conn.className = "conn down"; };
}

// ---- replay ---------------------------------------------------------------------

function refreshEpisodeChoices(a) {
  const select = a.ref("episode-select");
  const have = select.options.length - 1;
  if (have === a.episodes.length) return;
  const frag = document.createDocumentFragment();
  for (const e of a.episodes.slice(have)) {
    const opt = document.createElement("option");
    opt.value = String(e.episode);
    opt.textContent = `episode ${e.episode} · return ${fmtReward(e.total_reward)} · ${e.steps} steps`;
    frag.appendChild(opt);
  }
  select.appendChild(frag);
}

function wireReplay(a) {
  const ref = a.ref;
  const buttons = ["first", "prev", "play", "next", "last"].map(ref);
  let timer = null;
  const stop = () => { if (timer) clearInterval(timer); timer = null; ref("play").textContent = "▶ play"; };
  const show = (i) => {
    const r = a.replay;
    if (!r || !r.steps.length) return;
    r.index = Math.max(0, Math.min(i, r.steps.length - 1));
    const s = r.steps[r.index];
    ref("scrub").value = String(r.index);
    const hint = s.render_hint || r.hint;
    const drawn = drawBoard(ref("board"), hint, s.observation, r.steps.slice(0, r.index).map((x) => x.observation));
    ref("board").style.display = drawn ? "" : "none";
    const kind = gridKind(hint);
    const soFar = r.steps.slice(0, r.index + 1).reduce((t, x) => t + x.reward, 0);
    ref("replay-info").innerHTML = `
      <dt>episode</dt><dd>${r.episode}</dd>
      <dt>step</dt><dd data-k="replay-step">${s.step} (${r.index + 1} of ${r.steps.length})</dd>
      <dt>observation</dt><dd>${esc(JSON.stringify(s.observation))}</dd>
      <dt>action</dt><dd>${esc(actionName(kind, s.action))}</dd>
      <dt>reward</dt><dd>${fmtReward(s.reward)}</dd>
      <dt>return so far</dt><dd>${fmtReward(soFar)}</dd>
      <dt>end</dt><dd>${s.terminated ? "terminated" : s.truncated ? "truncated" : "—"}</dd>`;
  };
  ref("episode-select").addEventListener("change", async (ev) => {
    stop();
    const episode = ev.target.value;
    if (episode === "") return;
    const q = new URLSearchParams({ agent_id: a.id, episode });
    const data = await getJSON(`${runPath}/replay?${q}`);
    a.replay = { episode: Number(episode), steps: data.steps, hint: data.render_hint, index: 0 };
    const scrub = ref("scrub");
    scrub.max = String(Math.max(0, data.steps.length - 1));
    for (const el of [...buttons, scrub]) el.disabled = data.steps.length === 0;
    if (!data.steps.length) {
      ref("replay-info").innerHTML = `<dt>episode</dt><dd>${esc(episode)}: no steps stored</dd>`;
      ref("board").replaceChildren();
      return;
    }
    show(0);
  });
  ref("first").addEventListener("click", () => { stop(); show(0); });
  ref("prev").addEventListener("click", () => { stop(); show(a.replay.index - 1); });
  ref("next").addEventListener("click", () => { stop(); show(a.replay.index + 1); });
  ref("last").addEventListener("click", () => { stop(); show(a.replay.steps.length - 1); });
  ref("scrub").addEventListener("input", (ev) => { stop(); show(Number(ev.target.value)); });
  ref("play").addEventListener("click", () => {
    if (timer) { stop(); return; }
    if (a.replay.index >= a.replay.steps.length - 1) show(0);
    ref("play").textContent = "❚❚ pause";
    timer = setInterval(() => {
      if (a.replay.index >= a.replay.steps.length - 1) { stop(); return; }
      show(a.replay.index + 1);
    }, 350);
  });
}

// Export links: the chosen kind of record, the whole run, written by the CLI's exporter.
const exportKind = document.getElementById("export-kind");
function exportLinks() {
  for (const fmt of ["csv", "jsonl"]) {
    const q = new URLSearchParams({ format: fmt, kind: exportKind.value });
    document.getElementById(`export-${fmt}`).href = `${runPath}/export?${q}`;
  }
}
exportKind.addEventListener("change", exportLinks);
exportLinks();

connect();
