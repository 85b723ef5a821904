// The run list: polls /api/runs every two seconds and redraws the table.
import { esc, fmt, fmtTime, getJSON, badge } from "/static/common.js";

const body = document.querySelector("#runs tbody");
const empty = document.getElementById("no-runs");
const conn = document.getElementById("conn");

function row(run) {
  const href = `/runs/${encodeURIComponent(run.run_id)}`;
  return `<tr data-run-id="${esc(run.run_id)}">
    <td class="mono"><a href="${href}">${esc(run.run_id)}</a></td>
    <td>${badge(run.status)}${run.failure_reason ? ` <span class="muted">${esc(run.failure_reason)}</span>` : ""}${run.control_hold ? ` <span class="muted">held: ${esc(run.control_hold)}</span>` : ""}</td>
    <td class="num">${fmt(run.agents)}</td>
    <td class="num">${fmt(run.steps)}</td>
    <td class="num">${fmt(run.episodes)}</td>
    <td>${esc(fmtTime(run.created_ms))}</td>
    <td>${esc(fmtTime(run.updated_ms))}</td>
  </tr>`;
}

async function refresh() {
  try {
    const { runs } = await getJSON("/api/runs");
    body.innerHTML = runs.map(row).join("");
    empty.hidden = runs.length > 0;
    conn.textContent = "live";
    conn.className = "conn live";
  } catch (err) {
    conn.textContent = `daemon unreachable (${err.message})`;
    conn.className = "conn down";
  }
}

refresh();
setInterval(refresh, 2000);
