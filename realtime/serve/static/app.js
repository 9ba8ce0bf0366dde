// The live page: one panel per source, the MJPEG stream in an <img>, numbers polled
// from the JSON API once a second. No libraries, no build step, nothing external.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token");
// The server answered ?token= with a cookie, which the <img> stream also sends;
// take the token out of the address bar so it is not shared by copying the URL.
if (token) history.replaceState(null, "", location.pathname);
const headers = token ? { Authorization: "Bearer " + token } : {};
const panels = new Map();

async function getJSON(path) {
  const response = await fetch(path, { headers, cache: "no-store" });
  if (!response.ok) throw new Error(path + ": " + response.status);
  return response.json();
}

function text(root, selector, value) {
  root.querySelector(selector).textContent = value;
}

function panel(source) {
  if (panels.has(source.id)) return panels.get(source.id);
  const node = document.getElementById("source-template").content.firstElementChild.cloneNode(true);
  if (source.video === false) node.querySelector(".stream").remove();  // serve --no-video
  else node.querySelector(".stream").src = "api/sources/" + source.id + "/stream.mjpg";
  document.getElementById("sources").appendChild(node);
  panels.set(source.id, node);
  return node;
}

function fillGrid(node, summary) {
  const body = node.querySelector(".grid tbody");
  body.textContent = "";
  if (!summary) return;
  const counts = summary.by_age_group_and_gender || {};
  for (const age of Object.keys(summary.by_age_group)) {
    const row = body.insertRow();
    row.insertCell().textContent = age;
    for (const gender of Object.keys(summary.by_gender)) {
      const cell = row.insertCell();
      const n = counts[age + " " + gender] || 0;
      cell.textContent = n;
      if (!n) cell.className = "zero";
    }
  }
}

function drawChart(canvas, perMinute) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 18;
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#9aa0a6";
  if (!perMinute || !perMinute.length) {
    ctx.fillText(perMinute ? "no one yet" : "needs tracking (--track)", 8, h / 2);
    return;
  }
  const minutes = 10, now = perMinute[perMinute.length - 1].minute;
  const max = Math.max(1, ...perMinute.map((m) => m.people));
  const bar = (w - 2 * pad) / minutes;
  for (const m of perMinute) {
    const slot = minutes - 1 - Math.round((now - m.minute) / 60);
    if (slot < 0) continue;
    const height = (h - 2 * pad) * m.people / max;
    ctx.fillStyle = "#4fc3f7";
    ctx.fillRect(pad + slot * bar + 2, h - pad - height, bar - 4, height);
    ctx.fillStyle = "#e8eaed";
    ctx.fillText(String(m.people), pad + slot * bar + 4, h - pad - height - 3);
  }
  ctx.fillStyle = "#9aa0a6";
  ctx.fillText("last " + minutes + " min", pad, h - 4);
}

function fillTracks(node, tracks) {
  const body = node.querySelector(".tracks tbody");
  body.textContent = "";
  for (const t of tracks) {
    const row = body.insertRow();
    const values = [t.track_id ?? "–", t.age_group ?? "–", t.gender ?? "–",
      t.gender_prob != null ? t.gender_prob.toFixed(2) : "–", t.age != null ? t.age.toFixed(0) : "–",
      t.dwell_seconds != null ? t.dwell_seconds.toFixed(1) : "–"];
    for (const v of values) row.insertCell().textContent = v;
  }
}

async function refresh() {
  try {
    const sources = await getJSON("api/sources");
    for (const s of sources) {
      const node = panel(s);
      const [detail, summary] = await Promise.all([
        getJSON("api/sources/" + s.id),
        s.tracking ? getJSON("api/sources/" + s.id + "/summary") : Promise.resolve(null),
      ]);
      text(node, ".name", detail.name);
      text(node, ".state", detail.state + (detail.live ? ", live" : ""));
      text(node, ".fps", detail.fps.toFixed(1));
      text(node, ".in-view", detail.in_view);
      text(node, ".people", detail.people ?? "–");
      text(node, ".frames", detail.frames);
      text(node, ".dropped", detail.dropped);
      text(node, ".reconnects", detail.reconnects);
      fillGrid(node, summary);
      drawChart(node.querySelector(".chart"), detail.people_per_minute);
      fillTracks(node, detail.tracks);
    }
    text(document, "#status", sources.length ? "live · " + new Date().toLocaleTimeString() : "starting…");
  } catch (e) {
    text(document, "#status", "no answer from the server (" + e.message + "); retrying");
  }
}

refresh();
setInterval(refresh, 1000);
