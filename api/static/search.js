// Mise dashboard: the search page (#/search). Loaded before app.js; it only defines things here, and uses
// app.js's helpers ($, text, fmtS, fmtDuration, who, state, showView) once app.js calls initSearch().
//
// The address bar holds the query, so a search can be shared and a reload brings it back:
//   #/search?q=refund&speaker=caller&min_frustration=0.7   the GET /v1/search query string, as it is
//   #/search?json=<the JSON query, URI-encoded>            the POST /v1/search body (sequences need it)
// Turn text and highlights are only ever set as text: a highlight is split on its <em> marks into text
// nodes and <mark> elements, never parsed as HTML.
"use strict";

const EMOTION_LABELS = ["neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised", "boredom"];
const MAX_SEQUENCE_STEPS = 4;
const STEP_CONDITIONS = 2;
const DEFAULT_LIMIT = "20";
// What a sequence step's condition can test: field -> [label, kind]; "seconds" fields are ms in the API.
const STEP_FIELDS = new Map([
  ["frustration", ["frustration (0–1)", "number"]],
  ["emotion", ["emotion", "emotion"]],
  ["interrupted_other", ["interrupted the other", "bool"]],
  ["interrupted_by_other", ["was interrupted", "bool"]],
  ["gap_before_ms", ["dead air before (s)", "seconds"]],
  ["duration_ms", ["duration (s)", "seconds"]],
  ["overlap_ms", ["overlap (s)", "seconds"]],
  ["arousal", ["arousal (0–1)", "number"]],
  ["pitch_z", ["pitch (z-score)", "number"]],
  ["energy_z", ["loudness (z-score)", "number"]],
  ["speaking_rate", ["speaking rate (syll/s)", "number"]],
  ["backchannel", ["backchannel", "bool"]],
]);
const STEP_KEYS = ["speaker", "text", "where", "within_turns", "within_s"];

window.miseSearches = 0;
const search = {
  steps: [], // the sequence builder: [{speaker, text, conditions: [{field, op, value}], within_turns, within_s, extra}]
  extra: new URLSearchParams(), // parameters of a shared address that the form has no control for (kept as they are)
  jsonExtra: {}, // likewise, top-level keys of a JSON query
  hash: null, // the address the results on the page belong to
  current: null, // its request: {get: URLSearchParams} or {post: object}
  pages: [],
  cursor: null,
  seq: 0, // answers to an older request are dropped
  calls: new Map(), // call_sid -> its results section, while a result list grows
  back: null, // the search a call view was opened from
  lastHit: null, // the hit that opened it (focused again on the way back)
};

// --- the form ------------------------------------------------------------------------------------
function blankCondition() {
  return { field: "", op: "gte", value: "" };
}

function blankStep(speaker = "", conditions = []) {
  const c = [...conditions];
  while (c.length < STEP_CONDITIONS) c.push(blankCondition());
  return { speaker, text: "", conditions: c, within_turns: "", within_s: "", extra: {} };
}

function defaultSteps() {
  return [
    blankStep("agent", [{ field: "interrupted_by_other", op: "eq", value: "true" }]),
    { ...blankStep("caller", [{ field: "interrupted_other", op: "eq", value: "true" }]), within_turns: "1" },
  ];
}

function mode() {
  return $("s-mode-sequence").checked ? "sequence" : "turns";
}

function setMode(m) {
  $("s-mode-sequence").checked = m === "sequence";
  $("s-mode-turns").checked = m !== "sequence";
  $("s-turns").hidden = m === "sequence";
  $("s-sequence").hidden = m !== "sequence";
  if (m === "sequence" && !search.steps.length) {
    search.steps = defaultSteps();
    renderSteps();
  }
  syncOptions();
}

function syncOptions() {
  const grouped = $("s-group").checked;
  $("s-min-matches-field").hidden = !grouped;
  const fixed = grouped || mode() === "sequence"; // the API sorts groups and sequences by time
  $("s-sort").disabled = fixed;
  $("s-sort-note").hidden = !fixed;
}

function number(v) {
  return v === "" || v === null || v === undefined || !Number.isFinite(Number(v)) ? null : Number(v);
}

// Put a value into a select or input; false if the control cannot show it (then it is kept as extra).
function setControl(el, value) {
  el.value = value;
  return el.value === value;
}

function fillFromParams(params) {
  setMode("turns");
  const p = new URLSearchParams(params);
  for (const name of ["cursor", "explain", "api_key", "highlight"]) p.delete(name);
  const extra = new URLSearchParams();
  const take = (name) => {
    const all = p.getAll(name);
    p.delete(name);
    for (const v of all.slice(1)) extra.append(name, v);
    return all.length ? all[0] : "";
  };
  const fill = (id, name, convert = (v) => v) => {
    const raw = take(name);
    if (!setControl($(id), raw === "" ? "" : convert(raw))) extra.append(name, raw);
  };
  fill("s-q", "q");
  fill("s-speaker", "speaker");
  fill("s-emotion", "emotion");
  fill("s-min-frustration", "min_frustration");
  fill("s-interrupted-other", "interrupted_other", (v) => v.toLowerCase().replace(/^1$/, "true").replace(/^0$/, "false"));
  fill("s-interrupted-by-other", "interrupted_by_other",
    (v) => v.toLowerCase().replace(/^1$/, "true").replace(/^0$/, "false"));
  const seconds = (v) => (number(v) === null ? v : String(number(v) / 1000));
  fill("s-min-gap", "min_gap_before_ms", seconds);
  fill("s-max-gap", "max_gap_before_ms", seconds);
  fill("s-first-s", "first_s");
  fill("s-last-s", "last_s");
  fillOptions({ group_by: take("group_by"), min_matches: take("min_matches"), sort: take("sort"), limit: take("limit") },
    (name, v) => extra.append(name, v));
  for (const [k, v] of p) extra.append(k, v);
  search.extra = extra;
  search.jsonExtra = {};
  showExtra();
}

function fillOptions(o, keep) {
  $("s-group").checked = o.group_by === "call";
  if (o.group_by && o.group_by !== "call") keep("group_by", String(o.group_by));
  $("s-min-matches").value = o.min_matches ? String(o.min_matches) : "";
  if (!setControl($("s-sort"), o.sort ? String(o.sort) : "")) keep("sort", String(o.sort));
  if (!setControl($("s-limit"), o.limit ? String(o.limit) : DEFAULT_LIMIT)) {
    $("s-limit").value = DEFAULT_LIMIT;
    keep("limit", String(o.limit));
  }
  syncOptions();
}

// A JSON turn query (not a sequence) as GET parameters, as far as they go (the form shows those).
function jsonToParams(q) {
  const p = new URLSearchParams();
  const where = { ...(q.where || {}) };
  if (q.speaker !== undefined) where.speaker = q.speaker;
  if (q.text) p.set("q", q.text);
  for (const [field, v] of Object.entries(where)) {
    if (v && typeof v === "object" && !Array.isArray(v)) {
      for (const [op, bound] of Object.entries(v)) p.append((op.startsWith("g") ? "min_" : "max_") + field, String(bound));
    } else {
      p.set(field, Array.isArray(v) ? v.join(",") : String(v));
    }
  }
  for (const k of ["first_s", "last_s", "group_by", "min_matches", "sort", "limit"]) {
    if (q[k] !== undefined && q[k] !== null) p.set(k, String(q[k]));
  }
  return p;
}

function fillFromJson(q) {
  setMode("sequence");
  search.steps = q.sequence.map(stepFromJson);
  const jsonExtra = {};
  for (const [k, v] of Object.entries(q)) {
    if (!["sequence", "group_by", "min_matches", "limit", "sort", "cursor", "explain"].includes(k)) jsonExtra[k] = v;
  }
  fillOptions({ group_by: q.group_by, min_matches: q.min_matches, sort: null, limit: q.limit },
    (name, v) => { jsonExtra[name] = name === "limit" ? Number(v) : v; });
  search.jsonExtra = jsonExtra;
  search.extra = new URLSearchParams();
  renderSteps();
  showExtra();
}

function stepFromJson(s) {
  const step = blankStep();
  step.conditions = [];
  if (!s || typeof s !== "object") return { ...blankStep(), extra: { invalid: s } };
  const extra = {};
  const where = { ...(s.where && typeof s.where === "object" ? s.where : {}) };
  const speaker = s.speaker !== undefined ? s.speaker : where.speaker;
  delete where.speaker;
  if (["caller", "agent"].includes(speaker)) step.speaker = speaker;
  else if (speaker !== undefined) extra.speaker = speaker;
  step.text = typeof s.text === "string" ? s.text : "";
  step.within_turns = s.within_turns === undefined ? "" : String(s.within_turns);
  step.within_s = s.within_s === undefined ? "" : String(s.within_s);
  const kept = {};
  for (const [field, v] of Object.entries(where)) {
    const [, kind] = STEP_FIELDS.get(field) || [];
    const conds = [];
    if (kind === "bool" && typeof v === "boolean") conds.push({ field, op: "eq", value: String(v) });
    else if (kind === "emotion" && EMOTION_LABELS.includes(v)) conds.push({ field, op: "eq", value: v });
    else if ((kind === "number" || kind === "seconds") && v && typeof v === "object" && !Array.isArray(v) &&
      Object.keys(v).length && Object.keys(v).every((op) => op === "gte" || op === "lte") &&
      Object.values(v).every((b) => typeof b === "number")) {
      for (const op of ["gte", "lte"]) {
        if (op in v) conds.push({ field, op, value: String(kind === "seconds" ? v[op] / 1000 : v[op]) });
      }
    }
    if (conds.length && step.conditions.length + conds.length <= STEP_CONDITIONS) step.conditions.push(...conds);
    else kept[field] = v;
  }
  if (Object.keys(kept).length) extra.where = kept;
  for (const [k, v] of Object.entries(s)) if (!STEP_KEYS.includes(k)) extra[k] = v;
  while (step.conditions.length < STEP_CONDITIONS) step.conditions.push(blankCondition());
  step.extra = extra;
  return step;
}

function stepToJson(step, i) {
  if ("invalid" in step.extra) return step.extra.invalid;
  const out = {};
  const extraWhere = step.extra.where || {};
  const where = { ...extraWhere };
  if (step.speaker) out.speaker = step.speaker;
  else if ("speaker" in step.extra) where.speaker = step.extra.speaker;
  if (step.text.trim()) out.text = step.text.trim();
  for (const c of step.conditions) {
    const [, kind] = STEP_FIELDS.get(c.field) || [];
    if (!kind || c.value === "") continue;
    if (kind === "bool") where[c.field] = c.value === "true";
    else if (kind === "emotion") where[c.field] = c.value;
    else {
      const v = number(c.value);
      const bound = v === null ? c.value : kind === "seconds" ? Math.round(v * 1000) : v; // the API names a bad value
      const prior = where[c.field] && typeof where[c.field] === "object" ? where[c.field] : {};
      where[c.field] = { ...prior, [c.op === "lte" ? "lte" : "gte"]: bound };
    }
  }
  if (Object.keys(where).length) out.where = where;
  if (i > 0 && step.within_turns !== "") out.within_turns = number(step.within_turns) ?? step.within_turns;
  if (i > 0 && step.within_s !== "") out.within_s = number(step.within_s) ?? step.within_s;
  for (const [k, v] of Object.entries(step.extra)) if (k !== "where" && k !== "speaker") out[k] = v;
  return out;
}

// The form as a request and the address that holds it.
function formRequest() {
  if (mode() === "sequence") {
    const q = { sequence: search.steps.map(stepToJson) };
    if ($("s-group").checked) {
      q.group_by = "call";
      if ($("s-min-matches").value) q.min_matches = number($("s-min-matches").value) ?? $("s-min-matches").value;
    }
    if ($("s-limit").value !== DEFAULT_LIMIT) q.limit = Number($("s-limit").value);
    Object.assign(q, search.jsonExtra);
    return { hash: "#/search?json=" + encodeURIComponent(JSON.stringify(q)), post: q };
  }
  const p = new URLSearchParams();
  const add = (name, v) => { if (v !== "" && v !== null && v !== undefined) p.set(name, v); };
  const ms = (v) => (v === "" ? "" : number(v) === null ? v : String(Math.round(number(v) * 1000)));
  add("q", $("s-q").value.trim());
  add("speaker", $("s-speaker").value);
  add("emotion", $("s-emotion").value);
  add("min_frustration", $("s-min-frustration").value);
  add("interrupted_other", $("s-interrupted-other").value);
  add("interrupted_by_other", $("s-interrupted-by-other").value);
  add("min_gap_before_ms", ms($("s-min-gap").value));
  add("max_gap_before_ms", ms($("s-max-gap").value));
  add("first_s", $("s-first-s").value);
  add("last_s", $("s-last-s").value);
  const set = new Set(p.keys());
  for (const [k, v] of search.extra) if (!set.has(k)) p.append(k, v);
  if ($("s-group").checked) {
    add("group_by", "call");
    add("min_matches", $("s-min-matches").value);
  } else {
    add("sort", $("s-sort").value);
  }
  if ($("s-limit").value !== DEFAULT_LIMIT) add("limit", $("s-limit").value);
  const qs = p.toString();
  return { hash: "#/search" + (qs ? "?" + qs : ""), get: p };
}

function showExtra() {
  const parts = mode() === "sequence"
    ? Object.entries(search.jsonExtra).map(([k, v]) => `${k}: ${JSON.stringify(v)}`)
    : [...search.extra].map(([k, v]) => `${k}=${v}`);
  const el = $("s-extra");
  el.hidden = !parts.length;
  if (!parts.length) return el.replaceChildren();
  const drop = text("button", "Drop these", "secondary small");
  drop.type = "button";
  drop.addEventListener("click", () => {
    search.extra = new URLSearchParams();
    search.jsonExtra = {};
    showExtra();
    $("s-q").focus();
  });
  el.replaceChildren(text("span", "Also in this search (from its link): "), text("code", parts.join(", ")), " ", drop);
}

// --- the sequence builder ------------------------------------------------------------------------
function labelled(control, id, label, cls = "field") {
  control.id = id;
  const wrap = document.createElement("div");
  wrap.className = cls;
  const l = text("label", label);
  l.htmlFor = id;
  wrap.append(l, control);
  return wrap;
}

function select(options, value) {
  const el = document.createElement("select");
  for (const [v, label] of options) {
    const o = text("option", label);
    o.value = v;
    el.append(o);
  }
  el.value = value;
  return el;
}

function numberInput(value, attrs = {}) {
  const el = document.createElement("input");
  el.type = "number";
  Object.assign(el, attrs);
  el.value = value;
  return el;
}

function renderSteps(focusId = null) {
  const list = $("s-steps");
  list.replaceChildren(...search.steps.map((step, i) => stepCard(step, i)));
  $("s-add-step").disabled = search.steps.length >= MAX_SEQUENCE_STEPS;
  $("s-add-step").textContent = search.steps.length >= MAX_SEQUENCE_STEPS
    ? `At most ${MAX_SEQUENCE_STEPS} steps` : "Add a step";
  if (focusId && $(focusId)) $(focusId).focus();
}

function stepCard(step, i) {
  const n = i + 1;
  const id = (part) => `s-step${n}-${part}`;
  const li = document.createElement("li");
  li.className = "step";
  li.setAttribute("aria-labelledby", id("title"));
  const head = document.createElement("div");
  head.className = "step-head";
  const title = text("h2", i === 0 ? "Step 1: a turn" : `Step ${n}: then a turn`);
  title.id = id("title");
  head.append(title);
  if (search.steps.length > 2) {
    const remove = text("button", "Remove", "secondary small");
    remove.type = "button";
    remove.setAttribute("aria-label", `Remove step ${n}`);
    remove.addEventListener("click", () => {
      search.steps.splice(i, 1);
      renderSteps(search.steps.length > 2 ? `s-step${Math.min(n, search.steps.length)}-speaker` : "s-add-step");
    });
    head.append(remove);
  }
  li.append(head);

  if (i > 0) {
    const within = document.createElement("div");
    within.className = "within";
    const turns = numberInput(step.within_turns, { min: 1, max: 50, step: 1, placeholder: "1" });
    const secs = numberInput(step.within_s, { min: 0, step: 1, placeholder: "any" });
    turns.addEventListener("input", () => { step.within_turns = turns.value; });
    secs.addEventListener("input", () => { step.within_s = secs.value; });
    within.append(labelled(turns, id("within-turns"), "Within (turns)"),
      labelled(secs, id("within-s"), "Within (seconds)"));
    li.append(within);
  }

  const speaker = select([["", "either speaker"], ["caller", "caller"], ["agent", "agent"]], step.speaker);
  speaker.addEventListener("change", () => { step.speaker = speaker.value; });
  const words = document.createElement("input");
  words.type = "search";
  words.autocomplete = "off";
  words.placeholder = "any words";
  words.value = step.text;
  words.addEventListener("input", () => { step.text = words.value; });
  const row = document.createElement("div");
  row.className = "step-row";
  row.append(labelled(speaker, id("speaker"), "Speaker"), labelled(words, id("text"), "Words"));
  li.append(row);

  step.conditions.forEach((c, j) => li.append(conditionRow(step, c, `${id("c")}${j + 1}`, j + 1)));
  const extraParts = Object.entries(step.extra).map(([k, v]) => `${k}: ${JSON.stringify(v)}`);
  if (extraParts.length) li.append(text("p", "Also: " + extraParts.join(", "), "hint"));
  return li;
}

function conditionRow(step, c, base, j) {
  const row = document.createElement("div");
  row.className = "condition";
  const field = select([["", j === 1 ? "— add a condition —" : "— another condition —"], ...[...STEP_FIELDS].map(([f, [label]]) => [f, label])], c.field);
  const [, kind] = STEP_FIELDS.get(c.field) || [];
  field.addEventListener("change", () => {
    const [, k] = STEP_FIELDS.get(field.value) || [];
    Object.assign(c, { field: field.value, op: k === "bool" || k === "emotion" ? "eq" : "gte",
      value: k === "bool" ? "true" : k === "emotion" ? "angry" : "" });
    renderSteps(base + "-field");
  });
  row.append(labelled(field, base + "-field", `Condition ${j}`, "field cond-field"));
  if (!kind) return row;
  let op;
  if (kind === "bool" || kind === "emotion") {
    op = text("span", "is", "op");
  } else {
    op = select([["gte", "≥ at least"], ["lte", "≤ at most"]], c.op);
    op.id = base + "-op";
    op.setAttribute("aria-label", `Condition ${j}: comparison`);
    op.addEventListener("change", () => { c.op = op.value; });
  }
  let value;
  if (kind === "bool") value = select([["true", "yes"], ["false", "no"]], c.value);
  else if (kind === "emotion") value = select(EMOTION_LABELS.map((e) => [e, e]), c.value);
  else value = numberInput(c.value, { step: "any", placeholder: kind === "seconds" ? "seconds" : "value" });
  value.id = base + "-value";
  value.setAttribute("aria-label", `Condition ${j}: value`);
  value.addEventListener(value.tagName === "SELECT" ? "change" : "input", () => { c.value = value.value; });
  const pair = document.createElement("div");
  pair.className = "cond-value";
  pair.append(op, value);
  row.append(pair);
  return row;
}

// --- running a search ----------------------------------------------------------------------------
async function searchFetch(req, cursor) {
  const headers = { Authorization: "Bearer " + state.key };
  let r;
  try {
    if (req.get) {
      const p = new URLSearchParams(req.get);
      p.set("explain", "true");
      if (cursor) p.set("cursor", cursor);
      r = await fetch("/v1/search?" + p, { headers });
    } else {
      const body = { ...req.post, explain: true };
      if (cursor) body.cursor = cursor;
      r = await fetch("/v1/search", { method: "POST", headers: { ...headers, "Content-Type": "application/json" },
        body: JSON.stringify(body) });
    }
  } catch (err) {
    throw new Error("could not reach the server (" + err.message + ")");
  }
  let data = null;
  try { data = await r.json(); } catch { /* not JSON: reported below */ }
  if (!r.ok) {
    const why = data && typeof data.error === "string" ? data.error : `HTTP ${r.status}`;
    throw new Error(r.status === 404 && !data ? "this server has no search endpoint yet" : why);
  }
  if (!data || typeof data !== "object") throw new Error("the server's answer is not a search result");
  return data;
}

function apiCallText(req) {
  if (req.get) {
    const p = new URLSearchParams(req.get);
    p.set("explain", "true");
    return `GET /v1/search?${p}`;
  }
  return "POST /v1/search\n" + JSON.stringify({ ...req.post, explain: true }, null, 2);
}

async function runSearch(req, more = false) {
  const seq = ++search.seq;
  $("search-error").hidden = true;
  $("results").setAttribute("aria-busy", "true");
  if (!more) {
    search.hash = req.hash;
    search.current = req;
    $("nav-search").href = req.hash; // the nav returns to this search
    search.pages = [];
    search.cursor = null;
    search.calls.clear();
    $("results").replaceChildren();
    $("search-more").hidden = true;
    setText($("search-summary"), "Searching…");
    $("search-json").textContent = apiCallText(req);
  }
  try {
    const page = await searchFetch(req, more ? search.cursor : null);
    if (seq !== search.seq) return;
    search.pages.push(page);
    search.cursor = page.next_cursor || null;
    const first = renderPage(page);
    summarize();
    $("search-more").hidden = !search.cursor;
    if (more && first) first.focus();
  } catch (err) {
    if (seq !== search.seq) return;
    $("search-error").textContent = "The search could not run: " + err.message;
    $("search-error").hidden = false;
    if (!more) setText($("search-summary"), "");
  } finally {
    if (seq === search.seq) {
      $("results").removeAttribute("aria-busy");
      window.miseSearches += 1; // for tests: searches answered (results or an error) so far
    }
  }
}

const plural = (n, one, many = one + "s") => `${n} ${n === 1 ? one : many}`;

function summarize() {
  const first = search.pages[0];
  const shown = search.pages.reduce((n, p) => n + (p.hits || p.sequences || p.groups || []).length, 0);
  const seq = search.current && search.current.post && Array.isArray(search.current.post.sequence);
  let line;
  if ("total_calls" in first) {
    line = plural(first.total_calls, seq ? "call has the sequence" : "call matches", seq ? "calls have the sequence"
      : "calls match");
  } else if (seq) {
    line = plural(first.total, "matching sequence");
  } else {
    line = plural(first.total ?? 0, "matching turn");
  }
  const total = first.total_calls ?? first.total ?? 0;
  if (total > shown) line += ` · showing ${shown}`;
  setText($("search-summary"), line);
  if (!total) {
    const words = search.current.get ? search.current.get.get("q") : JSON.stringify(search.current.post).includes('"text"');
    $("results").replaceChildren(text("p", words
      ? "No results. Only turns with a transcript can match words; turns still being transcribed have none yet."
      : "No results. Try fewer or looser conditions.", "empty no-results"));
  }
}

// One page of any of the four result shapes, added under its calls; returns the first new hit's link.
function renderPage(page) {
  const entries = [];
  if (Array.isArray(page.groups)) {
    for (const g of page.groups) {
      const items = g.sequences ? g.sequences.map((s) => s.hits) : (g.hits || []).map((h) => [h]);
      entries.push({ sid: g.call_sid, call: g.call, matches: g.matches, items, seq: !!g.sequences });
    }
  } else if (Array.isArray(page.sequences)) {
    for (const s of page.sequences) entries.push({ sid: s.call_sid, call: s.call, items: [s.hits], seq: true });
  } else {
    for (const h of page.hits || []) entries.push({ sid: h.call_sid, call: h.call, items: [[h]], seq: false });
  }
  let first = null;
  for (const e of entries) {
    let group = search.calls.get(e.sid);
    if (!group) {
      group = callGroup(e.sid, e.call || {});
      search.calls.set(e.sid, group);
      $("results").append(group.section);
    }
    for (const hits of e.items) {
      const li = e.seq ? sequenceItem(hits) : hitItem(hits[0]);
      group.list.append(li);
      group.shown += 1;
      first = first || li.querySelector("a");
    }
    if (e.matches !== undefined) group.matches = e.matches;
    const unit = e.seq ? "sequence" : "matching turn";
    setText(group.count, group.matches !== null && group.matches > group.shown
      ? `${plural(group.matches, unit)} · ${group.shown} shown` : plural(group.matches ?? group.shown, unit));
  }
  return first;
}

function callGroup(sid, call) {
  const section = document.createElement("section");
  section.className = "rcall";
  section.dataset.callSid = sid;
  const head = document.createElement("header");
  head.className = "rcall-head";
  const h = document.createElement("h2");
  h.id = "rc-" + sid;
  const link = text("a", who(call) === "unknown" ? "Call " + sid.slice(0, 12) + "…" : who(call));
  link.href = "#/call/" + encodeURIComponent(sid);
  link.setAttribute("aria-label", `Open call ${sid} (${who(call)})`);
  h.append(link);
  const started = (call.call_started_at || "").replace("T", " ").slice(0, 16);
  const meta = [sid.slice(0, 14) + "…", started && "started " + started,
    call.call_duration_ms ? fmtDuration(call.call_duration_ms) : "", call.call_status || ""].filter(Boolean);
  const count = text("span", "", "matches");
  head.append(h, text("span", meta.join(" · "), "meta"), count);
  const list = document.createElement("ol");
  list.className = "hits";
  section.setAttribute("aria-labelledby", h.id);
  section.append(head, list);
  return { section, list, count, shown: 0, matches: null };
}

function sequenceItem(hits) {
  const li = document.createElement("li");
  li.className = "result sequence-result";
  const steps = document.createElement("ol");
  steps.className = "seq-steps";
  steps.setAttribute("aria-label", "Sequence of " + plural(hits.length, "turn"));
  hits.forEach((h, i) => {
    const step = document.createElement("li");
    step.append(text("span", String(i + 1), "step-no"), hitBlock(h));
    steps.append(step);
  });
  li.append(steps);
  return li;
}

function hitItem(h) {
  const li = document.createElement("li");
  li.className = "result";
  li.append(hitBlock(h));
  return li;
}

const pct = (f) => Math.round(100 * f) + "%";

function hitBlock(h) {
  const t = h.turn || {};
  const box = document.createElement("div");
  box.className = "hit";
  box.dataset.hitId = h.id;
  box.dataset.callSid = h.call_sid;
  box.dataset.turnId = h.turn_id;
  const link = document.createElement("a");
  link.className = "hit-link";
  // Opens the call playing at the hit: its first matched word when the query had words, else the turn's start.
  const at = Array.isArray(h.spoken) && h.spoken.length && typeof h.spoken[0].start_ms === "number"
    ? `&t=${h.spoken[0].start_ms}` : "";
  link.href = `#/call/${encodeURIComponent(h.call_sid)}?turn=${h.turn_id}${at}`;
  const speaker = t.speaker || "?";
  link.append(text("span", speaker, "spk " + speaker), " ",
    text("span", `turn ${h.turn_id} · ${fmtS(t.start_ms || 0).replace(" s", "")}–${fmtS(t.end_ms || 0)}`, "when"));
  link.setAttribute("aria-label", `Open the call at ${speaker} turn ${h.turn_id}, ${fmtS(t.start_ms || 0)} ` +
    `to ${fmtS(t.end_ms || 0)}`);
  const tags = document.createElement("span");
  tags.className = "tags";
  if (typeof t.frustration === "number") {
    const f = text("span", "frustration " + pct(t.frustration), "tag" + (t.frustration >= 0.7 ? " tense" : ""));
    tags.append(f);
  }
  if (t.emotion && t.emotion.label) tags.append(text("span", t.emotion.label, "tag"));
  if (t.interrupted_other) tags.append(text("span", "interrupted the other", "tag alert"));
  if (t.interrupted_by_other) tags.append(text("span", "was interrupted", "tag"));
  // gap_before_ms runs from the latest *finished* turn: a barge-in into a turn still going is no dead air.
  if (typeof t.gap_before_ms === "number" && t.gap_before_ms >= 1000 && !t.overlap_ms && !t.interrupted_other) {
    tags.append(text("span", fmtS(t.gap_before_ms) + " dead air before", "tag"));
  }
  const line = document.createElement("div");
  line.className = "hit-line";
  line.append(link, tags);
  box.append(line);
  if ((typeof h.highlight === "string" && h.highlight) || (typeof t.text === "string" && t.text)) {
    const said = document.createElement("p"); // what was said, its matching words marked
    said.className = "said";
    if (typeof h.highlight === "string" && h.highlight) said.append(...highlightNodes(h.highlight));
    else said.textContent = t.text;
    if (Array.isArray(h.spoken) && h.spoken.length && typeof h.spoken[0].start_ms === "number") {
      said.append(text("span", ` (said at ${fmtS(h.spoken[0].start_ms)})`, "said-at"));
    }
    box.append(said);
  }
  if (Array.isArray(h.explain) && h.explain.length) {
    const why = document.createElement("ul");
    why.className = "explain";
    why.setAttribute("aria-label", "Conditions it met");
    why.append(...h.explain.map((e) => text("li", String(e))));
    box.append(why);
  }
  return box;
}

// "a <em>b</em> c" -> [text "a ", <mark>b</mark>, text " c"]: the turn's text never goes through HTML parsing.
function highlightNodes(s) {
  const out = [];
  let marked = false;
  for (const part of s.split(/(<\/?em>)/)) {
    if (part === "<em>") marked = true;
    else if (part === "</em>") marked = false;
    else if (part) out.push(marked ? text("mark", part) : document.createTextNode(part));
  }
  return out;
}

// --- the page ------------------------------------------------------------------------------------
function showSearch(hash) {
  showView("search");
  if (hash === search.hash && search.pages.length) { // back from a call: the results are still here
    const hit = search.lastHit && document.querySelector(`#results .hit[data-hit-id="${CSS.escape(search.lastHit)}"] a`);
    if (hit) {
      hit.scrollIntoView({ block: "center" });
      hit.focus({ preventScroll: true });
    }
    return;
  }
  const qs = hash.replace(/^#\/search\??/, "");
  const params = new URLSearchParams(qs);
  if (formRequest().hash === hash) {
    // the form already says this (it was just submitted): leave it, and the focus, as they are
  } else if (params.has("json")) {
    let q;
    try {
      q = JSON.parse(params.get("json"));
    } catch {
      q = null;
    }
    if (!q || typeof q !== "object" || Array.isArray(q)) {
      $("search-error").textContent = "The search in this address is not a JSON query.";
      $("search-error").hidden = false;
      return;
    }
    if (Array.isArray(q.sequence)) fillFromJson(q);
    else fillFromParams(jsonToParams(q));
  } else {
    fillFromParams(params);
  }
  const req = formRequest();
  if (req.hash !== hash) history.replaceState(null, "", location.pathname + location.search + req.hash);
  runSearch(req);
}

function searchBackHash() {
  return search.back;
}

function initSearch() {
  const emotion = $("s-emotion");
  emotion.replaceChildren(...[["", "any"], ...EMOTION_LABELS.map((e) => [e, e])].map(([v, label]) => {
    const o = text("option", label);
    o.value = v;
    return o;
  }));
  $("search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const req = formRequest();
    if (req.hash === location.hash) runSearch(req); // the same search again (new calls may match)
    else location.hash = req.hash; // -> route() -> showSearch()
  });
  for (const radio of [$("s-mode-turns"), $("s-mode-sequence")]) {
    radio.addEventListener("change", () => { setMode(mode()); showExtra(); });
  }
  $("s-group").addEventListener("change", syncOptions);
  $("s-add-step").addEventListener("click", () => {
    if (search.steps.length >= MAX_SEQUENCE_STEPS) return;
    search.steps.push({ ...blankStep(), within_turns: "1" });
    renderSteps(`s-step${search.steps.length}-speaker`);
  });
  $("search-more").addEventListener("click", () => {
    if (search.cursor && search.current) runSearch(search.current, true);
  });
  // A click anywhere on a hit (not only its link) opens the call at that turn, unless text is being selected.
  $("results").addEventListener("click", (ev) => {
    if (ev.target.closest("a")) return;
    const hit = ev.target.closest(".hit");
    if (!hit || String(window.getSelection())) return;
    hit.querySelector("a.hit-link").click();
  });
  window.addEventListener("hashchange", (ev) => {
    const from = new URL(ev.oldURL).hash;
    const call = location.hash.match(/^#\/call\/([^/?]+)\?turn=(\d+)/);
    if (/^#\/call\//.test(location.hash)) {
      if (/^#\/search(\?|$)/.test(from) && from === search.hash) {
        search.back = from;
        search.lastHit = call ? `${decodeURIComponent(call[1])}:${call[2]}` : null;
      } else if (!/^#\/call\//.test(from)) {
        search.back = null;
      }
    }
  });
}
