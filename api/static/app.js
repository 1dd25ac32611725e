// Mise dashboard: the live monitor (#/), a call's live view and replay (#/call/{sid}, #/call/{sid}?turn=N
// opens it at that turn) and the search page (#/search?..., in search.js). Plain JavaScript, no build step,
// nothing loaded from elsewhere. Data: /v1/calls, /v1/calls/{sid}/turns, /v1/search, and Server-Sent Events
// (/v1/events, /v1/calls/{sid}/events), which resume by Last-Event-ID on their own.
"use strict";

const SILENCE_MS = 3000;
const $ = (id) => document.getElementById(id);
const state = { key: null, source: null, live: new Map(), recent: [], call: null, dirty: false };
// SSE ids as received, in order (tests check: no repeats across reconnects). Only the latest RECEIVED_KEEP
// are kept (a page left open on a busy tenant would otherwise grow by every event it ever saw).
const RECEIVED_KEEP = 10000;
window.miseReceived = [];

function loadKey() {
  const params = new URLSearchParams(location.search);
  const fromUrl = params.get("api_key");
  if (fromUrl) {
    localStorage.setItem("mise.key", fromUrl);
    params.delete("api_key");
    history.replaceState(null, "", location.pathname + (params.toString() ? "?" + params : "") + location.hash);
  }
  state.key = localStorage.getItem("mise.key");
  $("api-key").value = state.key ? "••••••••" : "";
}

async function api(path) {
  const r = await fetch(path, { headers: { Authorization: "Bearer " + state.key } });
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

function stream(path, onEvent) {
  if (state.source) state.source.close();
  const sep = path.includes("?") ? "&" : "?";
  const source = new EventSource(path + sep + "api_key=" + encodeURIComponent(state.key));
  const types = ["call.started", "call.status", "call.ended", "turn.started", "turn.ended", "interruption",
    "silence", "frustration.alert", "turn.transcribed"];
  for (const type of types) {
    source.addEventListener(type, (msg) => {
      window.miseReceived.push(msg.lastEventId);
      if (window.miseReceived.length > 2 * RECEIVED_KEEP) window.miseReceived.splice(0, RECEIVED_KEEP);
      onEvent(type, JSON.parse(msg.data));
    });
  }
  source.onopen = () => setConn("live", true);
  source.onerror = () => setConn(source.readyState === EventSource.CLOSED ? "disconnected" : "reconnecting…", false);
  state.source = source;
}

function setConn(text, ok) {
  $("conn").textContent = text;
  $("conn").classList.toggle("ok", ok);
}

const fmtS = (ms) => (ms / 1000).toFixed(1) + " s";
function fmtDuration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
}
function who(call) {
  const p = call.custom_parameters || {};
  return p.customer || call.from || p.from || call.to || "unknown";
}
function text(tag, value, cls) {
  const el = document.createElement(tag);
  el.textContent = value;
  if (cls) el.className = cls;
  return el;
}
function frustrationColour(f, speaker) {
  if (f === null || f === undefined) return speaker === "caller" ? "#0b5cad" : "#5b3d99";
  const calm = [47, 125, 79], tense = [179, 38, 30]; // both keep white text readable
  const mix = calm.map((c, i) => Math.round(c + (tense[i] - c) * Math.min(1, Math.max(0, f))));
  return `rgb(${mix.join(",")})`;
}

// One view at a time: "monitor", "call", "search" (or none, without a key); the nav marks the current page.
function showView(name) {
  if (name !== "call") playerClose();
  for (const id of ["monitor", "call", "search"]) $(id).hidden = id !== name;
  for (const [link, page] of [["nav-monitor", "monitor"], ["nav-search", "search"]]) {
    if (page === name) $(link).setAttribute("aria-current", "page"); else $(link).removeAttribute("aria-current");
  }
}

// --- live monitor -------------------------------------------------------------------------------
async function showMonitor() {
  showView("monitor");
  state.call = null;
  state.live.clear();
  try {
    const [live, recent] = await Promise.all([api("/v1/calls?live=true&limit=200"), api("/v1/calls?live=false&limit=20")]);
    for (const c of live.calls) state.live.set(c.call_sid, liveEntry(c));
    state.recent = recent.calls;
  } catch (err) {
    setConn(String(err.message), false);
  }
  stream("/v1/events", onMonitorEvent);
  redraw();
}

function liveEntry(c) {
  return { sid: c.call_sid, who: who(c), started: Date.parse(c.started_at || c.first_seen_at) || Date.now(),
    streamMs: c.duration_ms || 0, speaking: null, turns: (c.summary && c.summary.turns) || 0, frustration: null };
}

function onMonitorEvent(type, e) {
  let call = state.live.get(e.call_sid);
  if (type === "call.started") {
    call = liveEntry({ call_sid: e.call_sid, custom_parameters: e.custom_parameters, started_at: e.started_at });
    state.live.set(e.call_sid, call);
  } else if (type === "call.ended") {
    state.live.delete(e.call_sid);
    refreshRecent();
  }
  if (call && e.at_ms) call.streamMs = Math.max(call.streamMs, e.at_ms);
  if (type === "call.started" || type === "call.ended") {
    // handled above
  } else if (call && type === "turn.started") {
    call.speaking = e.speaker;
  } else if (call && type === "turn.ended") {
    if (call.speaking === e.speaker) call.speaking = null;
    if (!e.backchannel) call.turns += 1;
    if (e.frustration !== null && e.frustration !== undefined && e.speaker === "caller") {
      call.frustration = call.frustration === null ? e.frustration : 0.7 * call.frustration + 0.3 * e.frustration;
    }
  }
  redraw();
}

// Many calls ending together ask for the recent list once (and once more if any ended meanwhile).
const recentFetch = { busy: false, again: false };
function refreshRecent() {
  if (recentFetch.busy) { recentFetch.again = true; return; }
  recentFetch.busy = true;
  api("/v1/calls?live=false&limit=20").then((r) => { state.recent = r.calls; redraw(); }).catch(() => {})
    .finally(() => {
      recentFetch.busy = false;
      if (recentFetch.again) { recentFetch.again = false; refreshRecent(); }
    });
}

function redraw() {
  if (state.dirty) return;
  state.dirty = true;
  requestAnimationFrame(() => {
    state.dirty = false;
    if (state.call) drawCall(); else drawMonitor();
  });
}

function callLink(sid) {
  const a = text("a", sid.slice(0, 12) + "…");
  a.href = "#/call/" + sid;
  a.setAttribute("aria-label", "Open call " + sid);
  return a;
}

// The monitor's rows are kept and updated in place, a cell only when its text changes: with 50 live calls
// there are events every frame, and rebuilding the table each time costs style, layout and paint, and
// swallows clicks (a row replaced between press and release never gets its click).
const monitorRows = new Map(); // call_sid -> { tr, cells }
let drawnRecent = null;

function setText(el, value) {
  const v = String(value);
  if (el.textContent !== v) el.textContent = v;
}

function monitorRow(sid) {
  const tr = document.createElement("tr");
  tr.dataset.callSid = sid;
  const link = document.createElement("td");
  link.append(callLink(sid));
  const cells = [text("td", ""), text("td", ""), text("td", ""), text("td", ""), text("td", "")];
  tr.append(link, ...cells);
  return { tr, cells };
}

function drawMonitor() {
  const now = Date.now();
  const tbody = $("live-rows");
  for (const [sid, row] of monitorRows) {
    if (!state.live.has(sid) || row.tr.parentNode !== tbody) { row.tr.remove(); monitorRows.delete(sid); }
  }
  let prev = null;
  for (const c of state.live.values()) {
    let row = monitorRows.get(c.sid);
    if (!row) { row = monitorRow(c.sid); monitorRows.set(c.sid, row); }
    const [whoCell, durationCell, speakingCell, turnsCell, fCell] = row.cells;
    // Stream time from the events (a replayed or sped-up call runs ahead of the wall clock), else wall time.
    setText(whoCell, c.who);
    setText(durationCell, fmtDuration(Math.max(now - c.started, c.streamMs)));
    setText(speakingCell, c.speaking || "—");
    const cls = c.speaking ? "speaking " + c.speaking : "";
    if (speakingCell.className !== cls) speakingCell.className = cls;
    setText(turnsCell, c.turns);
    setText(fCell, c.frustration === null ? "—" : Math.round(100 * c.frustration) + "%");
    const at = prev ? prev.nextSibling : tbody.firstChild; // keep the rows in the calls' order
    if (at !== row.tr) tbody.insertBefore(row.tr, at);
    prev = row.tr;
  }
  while (prev ? prev.nextSibling : tbody.firstChild) (prev ? prev.nextSibling : tbody.firstChild).remove();
  setText($("live-count"), state.live.size);
  if ($("live-empty").hidden !== state.live.size > 0) $("live-empty").hidden = state.live.size > 0;
  if (drawnRecent === state.recent) return;
  drawnRecent = state.recent;
  $("recent-rows").replaceChildren(...state.recent.map((c) => {
    const tr = document.createElement("tr");
    const link = document.createElement("td");
    link.append(callLink(c.call_sid));
    const s = c.summary || {};
    const interruptions = s.interruptions ? (s.interruptions.caller || 0) + (s.interruptions.agent || 0) : "—";
    tr.append(link, text("td", who(c)), text("td", fmtDuration(c.duration_ms || 0)), text("td", s.turns ?? "—"),
      text("td", interruptions), text("td", (c.ended_at || "").replace("T", " ").slice(0, 19)));
    return tr;
  }));
}

// --- one call: live view and replay -------------------------------------------------------------
async function showCall(sid, turnId = null, atMs = null) {
  showView("call");
  $("events-title").textContent = "Latest events";
  // From the search page: a link back to its results (search.js keeps them).
  const back = typeof searchBackHash === "function" ? searchBackHash() : null;
  $("call-back").hidden = !back;
  if (back) $("call-back-link").href = back;
  const call = { sid, turns: new Map(), interruptions: [], silences: [], events: [], endMs: 0, selected: turnId,
    record: null, reveal: turnId !== null };
  state.call = call;
  $("call-title").textContent = "Call " + sid;
  $("detail").replaceChildren(text("p", "Select a turn to see how it sounded.", "empty"));
  let record = null;
  try {
    record = await api("/v1/calls/" + encodeURIComponent(sid));
  } catch (err) {
    if (state.call === call) $("call-meta").textContent = String(err.message);
    return;
  }
  if (state.call !== call) return; // another view was opened meanwhile
  call.record = record;
  playerOpen(sid, state.key, null);
  $("call-meta").textContent = `${who(record)} · ${record.live ? "live" : "ended " + (record.end_reason || "")} · ` +
    `started ${(record.started_at || record.first_seen_at || "").replace("T", " ").slice(0, 19)}`;
  if (record.live) {
    stream("/v1/calls/" + encodeURIComponent(sid) + "/events", onCallEvent);
  } else {
    if (state.source) state.source.close();
    setConn("replay", true);
    const { turns } = await api("/v1/calls/" + encodeURIComponent(sid) + "/turns");
    if (state.call !== call) return;
    replayFromTurns(turns);
    $("events-title").textContent = "Events";
    const wanted = call.selected === null ? null : call.turns.get(call.selected);
    if (wanted) showTurn(wanted);
    if (wanted || atMs !== null) playFrom(atMs !== null ? atMs : wanted.start_ms); // a search hit: play at it
  }
  redraw();
}

function replayFromTurns(turns) {
  const call = state.call;
  let lastEnd = 0;
  const sorted = [...turns].sort((a, b) => a.start_ms - b.start_ms);
  const events = [];
  for (const t of sorted) {
    call.turns.set(t.turn_id, { ...t, added: Date.now() });
    if (t.interrupted_other) {
      const i = { by: t.speaker, at_ms: t.start_ms, overlap_ms: t.overlap_ms };
      call.interruptions.push(i);
      events.push({ type: "interruption", e: i, ms: t.start_ms });
    }
    if (t.start_ms - lastEnd >= SILENCE_MS) {
      const s = { start_ms: lastEnd, end_ms: t.start_ms, duration_ms: t.start_ms - lastEnd };
      call.silences.push(s);
      events.push({ type: "silence", e: s, ms: lastEnd });
    }
    events.push({ type: "turn.ended", e: t, ms: t.end_ms });
    lastEnd = Math.max(lastEnd, t.end_ms);
    call.endMs = Math.max(call.endMs, t.end_ms);
  }
  call.events = events.sort((a, b) => b.ms - a.ms);
}

function onCallEvent(type, e) {
  const call = state.call;
  if (!call || e.call_sid !== call.sid) return;
  call.events.unshift({ type, e, at: Date.now() });
  call.events.length = Math.min(call.events.length, 50);
  if (type === "turn.ended") {
    call.turns.set(e.turn_id, { ...e, added: Date.now() });
    call.endMs = Math.max(call.endMs, e.end_ms);
    if (call.reveal && e.turn_id === call.selected) showTurn(call.turns.get(e.turn_id)); // opened at this turn
  } else if (type === "turn.transcribed") {
    const t = call.turns.get(e.turn_id);
    if (t) {
      for (const k of WORD_KEYS) t[k] = e[k];
      const drawn = view.turns.get(e.turn_id);
      if (drawn) drawn.b.title = e.text || "";
      if (call.selected === e.turn_id) showTurn(t);
    }
  } else if (type === "interruption") {
    call.interruptions.push(e);
  } else if (type === "silence") {
    call.silences.push(e);
    call.endMs = Math.max(call.endMs, e.end_ms);
  } else if (type === "call.ended") {
    $("call-meta").textContent = `${who(call.record || {})} · ended ${e.end_reason || ""} · ${fmtDuration(e.duration_ms || 0)}`;
    call.endMs = Math.max(call.endMs, e.duration_ms || 0);
  }
  if (e.at_ms) call.endMs = Math.max(call.endMs, e.at_ms);
  redraw();
}

const WORD_KEYS = ["text", "words", "redactions", "transcript", "transcript_source", "transcript_skipped"];

// A turn's words as the detail panel shows them: the text, or what is happening to it.
function said(t) {
  if (t.transcript === "pending") return "(transcribing…)";
  if (t.transcript === "skipped") return `(no words: ${t.transcript_skipped || "skipped"})`;
  if (!t.text) return t.transcript === "done" ? "(no speech recognised)" : "—";
  return t.text + (t.transcript_source === "external" ? "  [posted]" : "");
}

function describe(type, e) {
  switch (type) {
    case "turn.ended": return `${e.speaker} turn ${e.turn_id} ended (${fmtS(e.duration_ms)}${e.backchannel ? ", backchannel" : ""})`;
    case "turn.started": return `${e.speaker} started speaking`;
    case "interruption": return `${e.by} interrupted at ${fmtS(e.at_ms)} (${e.overlap_ms} ms overlap)`;
    case "silence": return `silence of ${fmtS(e.duration_ms)}`;
    case "frustration.alert": return `frustration alert: ${e.speaker || "caller"} at ${Math.round(100 * (e.frustration || 0))}%`;
    case "call.ended": return `call ended (${e.end_reason || "?"})`;
    case "call.started": return "call started";
    case "call.status": return `status: ${e.status}`;
    case "turn.transcribed": return e.transcript === "done"
      ? `${e.speaker} turn ${e.turn_id}: “${(e.text || "").slice(0, 80)}”` : `${e.speaker} turn ${e.turn_id}: no words (${e.transcript_skipped})`;
    default: return type;
  }
}

// The timeline is kept between draws and changed incrementally: new turns, bands and marks are added;
// existing ones are only moved when the scale changes (while the call is short enough to fit the width).
// A long call's lanes hold thousands of elements: rebuilding them on every event would take 100+ ms.
const view = { call: null, pxPerS: 0, widthPx: 0, turns: new Map(), lanes: {}, silences: [], marks: [],
  selected: null, axis: "", events: null, eventsLength: -1, curves: -1 };

function placeTurn(b, t, x) {
  b.style.left = x(t.start_ms) + "px";
  b.style.width = Math.max(4, x(t.end_ms - t.start_ms)) + "px";
  setText(b, !t.backchannel && x(t.end_ms - t.start_ms) > 40 ? fmtS(t.duration_ms) : "");
}

function turnButton(call, t, x) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "turn" + (t.backchannel ? " backchannel" : "");
  placeTurn(b, t, x);
  b.style.background = frustrationColour(t.frustration, t.speaker);
  b.dataset.turnId = t.turn_id;
  b.dataset.speaker = t.speaker;
  b.dataset.added = t.added;
  b.setAttribute("aria-pressed", String(call.selected === t.turn_id));
  b.setAttribute("aria-label", `${t.speaker} turn ${t.turn_id}, ${fmtS(t.start_ms)} to ${fmtS(t.end_ms)}` +
    (t.backchannel ? ", backchannel" : "") + (t.interrupted_other ? ", interrupted the other party" : ""));
  if (t.text) b.title = t.text;
  b.addEventListener("click", () => { call.selected = t.turn_id; showTurn(t); redraw(); playFrom(t.start_ms); });
  return b;
}

function drawCall() {
  const call = state.call;
  // Fit the call to the width while it is short; scroll (at 8-60 px a second) once it is long.
  const avail = Math.max(320, $("timeline").clientWidth - 110);
  const pxPerS = Math.min(60, Math.max(8, avail / (call.endMs / 1000 + 1)));
  const widthPx = Math.max(avail, Math.ceil((call.endMs / 1000 + 1) * pxPerS));
  const x = (ms) => (ms / 1000) * pxPerS;
  const tracks = {};
  for (const el of document.querySelectorAll("#timeline .track")) tracks[el.dataset.speaker] = el;
  if (view.call !== call) { // another call (or the same one shown again): start from empty lanes
    for (const el of Object.values(tracks)) el.replaceChildren();
    Object.assign(view, { call, pxPerS: 0, widthPx: 0, turns: new Map(), silences: [], marks: [], selected: null,
      axis: "", events: null, eventsLength: -1, curves: -1 });
    view.lanes = Object.fromEntries(Object.keys(tracks).map((k) => [k, []])); // [turn_id, button], by turn_id
  }
  const rescale = view.pxPerS !== pxPerS;
  if (rescale || view.widthPx !== widthPx) {
    for (const el of Object.values(tracks)) {
      el.style.width = widthPx + "px";
      el.style.backgroundSize = pxPerS + "px 100%";
    }
  }
  const placeBand = (band, s) => {
    band.style.left = x(s.start_ms) + "px";
    band.style.width = x(s.end_ms - s.start_ms) + "px";
  };
  if (rescale) for (const [s, bands] of view.silences) for (const band of bands) placeBand(band, s);
  for (const s of call.silences.slice(view.silences.length)) {
    const bands = Object.values(tracks).map((el) => {
      const band = document.createElement("div");
      band.className = "silence-band";
      placeBand(band, s);
      band.title = "silence " + fmtS(s.end_ms - s.start_ms);
      el.prepend(band); // under the turns
      return band;
    });
    view.silences.push([s, bands]);
  }
  for (const t of call.turns.values()) {
    const drawn = view.turns.get(t.turn_id);
    if (drawn && drawn.t === t) {
      if (rescale) placeTurn(drawn.b, t, x);
      continue;
    }
    if (drawn) { // the same turn again, as a new event: it replaces the one drawn
      const old = view.lanes[drawn.lane];
      old.splice(old.findIndex(([id]) => id === t.turn_id), 1);
      drawn.b.remove();
    }
    const b = turnButton(call, t, x);
    // Keep each lane's turns in turn order (the keyboard's order); the marks (z-index 2) may sit between them.
    const laneName = tracks[t.speaker] ? t.speaker : "caller";
    const lane = view.lanes[laneName];
    let i = lane.length;
    while (i > 0 && lane[i - 1][0] > t.turn_id) i -= 1;
    tracks[laneName].insertBefore(b, i < lane.length ? lane[i][1] : null);
    lane.splice(i, 0, [t.turn_id, b]);
    view.turns.set(t.turn_id, { t, b, lane: laneName });
  }
  if (view.selected !== call.selected) {
    for (const id of [view.selected, call.selected]) {
      const drawn = view.turns.get(id);
      if (drawn) drawn.b.setAttribute("aria-pressed", String(call.selected === id));
    }
    view.selected = call.selected;
  }
  const shown = call.reveal && view.turns.get(call.selected);
  if (shown) { // opened at a turn (from a search hit): bring it into view and give it the focus
    call.reveal = false;
    shown.b.scrollIntoView({ block: "nearest", inline: "center" });
    shown.b.focus({ preventScroll: true });
  }
  if (rescale) for (const [i, m] of view.marks) m.style.left = x(i.at_ms) + "px";
  for (const i of call.interruptions.slice(view.marks.length)) {
    const m = document.createElement("div");
    m.className = "interruption";
    m.textContent = "!";
    m.style.left = x(i.at_ms) + "px";
    m.setAttribute("role", "img");
    m.setAttribute("aria-label", `${i.by} interrupted at ${fmtS(i.at_ms)}`);
    (tracks[i.by] || tracks.caller).append(m);
    view.marks.push([i, m]);
  }
  if (rescale || view.widthPx !== widthPx || view.curves !== call.turns.size) {
    view.curves = call.turns.size;
    drawCurves(call, widthPx, pxPerS);
  }
  view.pxPerS = pxPerS;
  view.widthPx = widthPx;
  updatePlayhead();
  const axis = $("axis");
  const step = call.endMs > 120000 ? 10 : 5;
  const ticks = Math.floor(call.endMs / 1000 / step) + 1;
  if (view.axis !== `${widthPx} ${pxPerS} ${step} ${ticks}`) {
    view.axis = `${widthPx} ${pxPerS} ${step} ${ticks}`;
    axis.style.width = widthPx + "px";
    axis.replaceChildren(...Array.from({ length: ticks }, (_, k) => {
      const s = text("span", k * step + " s");
      s.style.left = x(k * step * 1000) + "px";
      return s;
    }));
  }
  if (view.events !== call.events[0] || view.eventsLength !== call.events.length) {
    view.events = call.events[0];
    view.eventsLength = call.events.length;
    $("events").replaceChildren(...call.events.map(({ type, e }) =>
      text("li", describe(type, e), type === "frustration.alert" ? "alert" : "")));
  }
}

function showTurn(t) {
  const f = t.features || {};
  const rows = [
    ["speaker", t.speaker], ["from", fmtS(t.start_ms)], ["to", fmtS(t.end_ms)], ["said", said(t)],
    ["frustration", t.frustration === null || t.frustration === undefined ? "—" : Math.round(100 * t.frustration) + "%"],
    ["emotion", t.emotion ? t.emotion.label : "—"],
    ["response latency", t.response_latency_ms === null ? "—" : fmtS(t.response_latency_ms)],
    ["overlap", t.overlap_ms + " ms"],
    ["pitch", f.pitch_mean_hz ? `${f.pitch_mean_hz.toFixed(0)} Hz (z ${f.pitch_z === null ? "—" : f.pitch_z.toFixed(1)})` : "—"],
    ["energy", f.energy_db ? `${f.energy_db.toFixed(1)} dBFS (z ${f.energy_z === null ? "—" : f.energy_z.toFixed(1)})` : "—"],
    ["speaking rate", f.speaking_rate ? f.speaking_rate.toFixed(1) + " syll/s" : "—"],
    ["jitter / shimmer", f.jitter ? `${(100 * f.jitter).toFixed(2)}% / ${(100 * f.shimmer).toFixed(1)}%` : "—"],
    ["HNR", f.hnr_db ? f.hnr_db.toFixed(1) + " dB" : "—"],
  ];
  const dl = document.createElement("dl");
  dl.className = "features";
  for (const [k, v] of rows) {
    const spans = k === "said" && !t.transcript_skipped && t.transcript !== "pending" ? wordSpans(t) : null;
    const dd = spans ? document.createElement("dd") : text("dd", v);
    if (spans) dd.append(spans, t.transcript_source === "external" ? "  [posted]" : "");
    dl.append(text("dt", k), dd);
  }
  $("detail").replaceChildren(text("h3", `${t.speaker} turn ${t.turn_id}`), dl);
}

// --- routing ------------------------------------------------------------------------------------
function route() {
  if (!state.key) {
    showView(null);
    setConn("enter an API key", false);
    $("api-key").focus();
    return;
  }
  const m = location.hash.match(/^#\/call\/([^/?]+)(?:\?(.*))?$/);
  if (m) {
    const params = new URLSearchParams(m[2] || "");
    const turn = params.get("turn");
    const at = params.get("t");
    showCall(decodeURIComponent(m[1]), turn !== null && /^\d+$/.test(turn) ? Number(turn) : null,
      at !== null && /^\d+$/.test(at) ? Number(at) : null);
  } else if (/^#\/search(\?|$)/.test(location.hash)) {
    state.call = null;
    state.live.clear();
    if (state.source) { state.source.close(); state.source = null; }
    setConn("", false);
    showSearch(location.hash);
  } else {
    showMonitor();
  }
}

$("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const value = $("api-key").value.trim();
  if (value && !value.startsWith("•")) localStorage.setItem("mise.key", value);
  loadKey();
  route();
});
initPlayer();
initSearch(); // before route's listener: the search page notes where a call view was opened from
window.addEventListener("hashchange", route);
setInterval(() => { if (!state.call && state.live.size) redraw(); }, 1000);
loadKey();
route();
