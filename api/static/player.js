// The call replay's player: the recording (GET /v1/calls/{sid}/audio, stereo, caller left) in an <audio>
// element, a playhead across the lanes, a turn's click playing from its start, a search hit opening the
// call playing at the hit (#/call/{sid}?turn=N&t=MS), the words of the turn being played lit as they are
// spoken, and each speaker's pitch and energy per turn drawn as curves under the lanes (each on its own scale).
// Keys (the call view, outside text fields): space plays or pauses, ←/→ seek 5 s, [ and ] the previous or
// next turn.
"use strict";

const player = { sid: null, lastTurn: null, raf: 0 };

function audioEl() { return document.getElementById("audio"); }

// Called by showCall for every call opened: the element's source is that call's recording.
function playerOpen(sid, key, startMs) {
  const audio = audioEl();
  player.sid = sid;
  player.lastTurn = null;
  audio.pause();
  audio.src = "/v1/calls/" + encodeURIComponent(sid) + "/audio?api_key=" + encodeURIComponent(key);
  document.getElementById("player-status").textContent = "";
  if (startMs !== null && startMs !== undefined) playFrom(startMs);
  else updatePlayhead();
}

function playerClose() {
  const audio = audioEl();
  if (player.sid !== null) { audio.pause(); audio.removeAttribute("src"); audio.load(); }
  player.sid = null;
}

function playFrom(ms) {
  const audio = audioEl();
  const start = () => {
    audio.currentTime = ms / 1000;
    audio.play().catch((err) => {
      document.getElementById("player-status").textContent = "press play (" + err.name + ")";
    });
    updatePlayhead();
  };
  if (audio.readyState >= 1) start(); else audio.addEventListener("loadedmetadata", start, { once: true });
}

function togglePlay() {
  const audio = audioEl();
  if (audio.paused) audio.play().catch(() => {}); else audio.pause();
}

// Where the playhead stands: the lanes' tracks start after their names; view (app.js) holds the scale.
function updatePlayhead() {
  const audio = audioEl();
  const head = document.getElementById("playhead");
  const track = document.querySelector("#timeline .track");
  if (!track || !view.pxPerS) { head.hidden = true; return; }
  const ms = audio.currentTime * 1000;
  head.hidden = false;
  head.style.left = (track.offsetLeft + (ms / 1000) * view.pxPerS) + "px";
  head.dataset.ms = String(Math.round(ms));
  document.getElementById("player-time").textContent = fmtDuration(ms) + " / " +
    (Number.isFinite(audio.duration) ? fmtDuration(audio.duration * 1000) : "–:––");
  document.getElementById("player-toggle").textContent = audio.paused ? "▶ Play" : "❚❚ Pause";
  followTurn(ms);
}

// While playing: the turn under the playhead is shown in the detail panel, its current word lit.
function followTurn(ms) {
  const call = state.call;
  if (!call || audioEl().paused) return;
  let current = null;
  for (const t of call.turns.values()) {
    if (t.start_ms <= ms && ms < t.end_ms && (!current || t.start_ms > current.start_ms)) current = t;
  }
  if (current && current.turn_id !== player.lastTurn) {
    player.lastTurn = current.turn_id;
    call.selected = current.turn_id;
    showTurn(current);
    redraw();
  }
  for (const w of document.querySelectorAll("#detail .word")) {
    w.classList.toggle("now", Number(w.dataset.start) <= ms && ms < Number(w.dataset.end));
  }
}

function tick() {
  updatePlayhead();
  player.raf = audioEl().paused ? 0 : requestAnimationFrame(tick);
}

// A turn's words as spans with their times (the detail panel's "said"), for lighting during playback.
function wordSpans(t) {
  if (!Array.isArray(t.words) || !t.words.length) return null;
  const p = document.createElement("span");
  p.className = "words";
  t.words.forEach((w, i) => {
    const s = text("span", (i ? " " : "") + w.word, "word");
    s.dataset.start = String(w.start_ms);
    s.dataset.end = String(w.end_ms);
    p.append(s);
  });
  return p;
}

// --- curves: each speaker's pitch (solid) and energy (dashed) per turn, on the lanes' time scale ---------
const SPEAKER_COLOURS = { caller: "#2f6db5", agent: "#8a5a00" };
function drawCurves(call, widthPx, pxPerS) {
  const svg = document.getElementById("curves");
  const height = 64;
  svg.setAttribute("width", String(widthPx));
  svg.setAttribute("height", String(height));
  svg.style.marginLeft = (document.querySelector("#timeline .track") || { offsetLeft: 0 }).offsetLeft + "px";
  const turns = [...call.turns.values()].filter((t) => !t.backchannel && t.features).sort((a, b) => a.start_ms - b.start_ms);
  const paths = [];
  for (const [key, dashed] of [["pitch_mean_hz", false], ["energy_db", true]]) {
    for (const speaker of Object.keys(SPEAKER_COLOURS)) {
      // Each speaker on their own scale: the arc is how they rose and fell against themselves.
      const own = turns.filter((t) => t.speaker === speaker && typeof t.features[key] === "number");
      const values = own.map((t) => t.features[key]);
      const lo = Math.min(...values), hi = Math.max(...values);
      const y = (v) => height - 4 - ((v - lo) / (hi - lo || 1)) * (height - 8);
      const pts = own.map((t) => `${(((t.start_ms + t.end_ms) / 2000) * pxPerS).toFixed(1)},${y(t.features[key]).toFixed(1)}`);
      if (pts.length < 1) continue;
      const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
      line.setAttribute("points", pts.join(" "));
      line.setAttribute("fill", "none");
      line.setAttribute("stroke", SPEAKER_COLOURS[speaker]);
      line.setAttribute("stroke-width", dashed ? "1.5" : "2");
      if (dashed) line.setAttribute("stroke-dasharray", "4 3");
      line.dataset.speaker = speaker;
      line.dataset.feature = key;
      paths.push(line);
    }
  }
  svg.replaceChildren(...paths);
}

function initPlayer() {
  const audio = audioEl();
  for (const type of ["play", "pause", "seeked", "timeupdate", "loadedmetadata"]) {
    audio.addEventListener(type, () => {
      updatePlayhead();
      if (type === "play" && !player.raf) player.raf = requestAnimationFrame(tick);
    });
  }
  audio.addEventListener("error", () => {
    document.getElementById("player-status").textContent = "no recording of this call";
  });
  document.getElementById("player-toggle").addEventListener("click", togglePlay);
  document.addEventListener("keydown", (ev) => {
    if (document.getElementById("call").hidden || player.sid === null) return;
    if (ev.target.closest && ev.target.closest("input, textarea, select")) return;
    const call = state.call;
    if (ev.key === " " && !(ev.target.closest && ev.target.closest("button, a"))) {
      ev.preventDefault();
      togglePlay();
    } else if (ev.key === "ArrowRight" || ev.key === "ArrowLeft") {
      if (ev.target.closest && ev.target.closest(".turn")) return; // the lanes' own arrow keys
      ev.preventDefault();
      audio.currentTime = Math.max(0, audio.currentTime + (ev.key === "ArrowRight" ? 5 : -5));
    } else if ((ev.key === "]" || ev.key === "[") && call) {
      const now = audio.currentTime * 1000;
      const starts = [...call.turns.values()].map((t) => t.start_ms).sort((a, b) => a - b);
      const next = ev.key === "]" ? starts.find((s) => s > now + 50) : [...starts].reverse().find((s) => s < now - 500);
      if (next !== undefined) playFrom(next);
    }
  });
}
