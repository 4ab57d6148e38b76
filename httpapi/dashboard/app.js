// The dashboard of a ratelimitd node: it polls the node's JSON API (the
// same admin API as `ratelimitd policy`, so the same validation and
// errors) and redraws, without reloading. Nothing is fetched from
// elsewhere.
"use strict";

const POLL_MS = 2000;
const TOKEN_KEY = "ratelimit-admin-token";
// Counters of the overview that are a problem when they grow: a full
// store evicting counters, peers not answering, a failing store.
const TROUBLE = new Set(["evictions", "replica_evictions", "peer_errors", "store_errors"]);
const $ = (sel) => document.querySelector(sel);

let token = sessionStorage.getItem(TOKEN_KEY) || "";
let previous = null; // the last overview and when it came, for rates
let policiesJSON = "";

// api calls the node; it resolves to the decoded body, or throws an Error
// carrying the API's message and field.
async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (token) headers["Authorization"] = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = { error: text.slice(0, 200) }; }
  if (!resp.ok) {
    const err = new Error((data && data.error) || resp.statusText);
    err.status = resp.status;
    err.field = data && data.field;
    throw err;
  }
  return data;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k === "style") e.style.cssText = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function showError(msg) {
  const box = $("#error");
  box.textContent = msg;
  box.hidden = !msg;
}

function explain(err) {
  if (err.status === 401) return err.message + ": enter the node's admin token above";
  return err.message;
}

function fmtRate(v) {
  if (v === null || v === undefined || !isFinite(v)) return "–";
  return v >= 100 ? v.toFixed(0) : v.toFixed(1);
}

function rate(now, prev, dt) {
  if (prev === undefined || dt <= 0 || now < prev) return null; // a restarted node resets its counters
  return (now - prev) / dt;
}

function renderOverview(ov) {
  $("#node").textContent = "node " + ov.node;
  const leader = $("#leader");
  leader.textContent = ov.leader ? "raft leader: " + ov.leader : (ov.members.length > 1 ? "no raft leader" : "single node");
  leader.className = "pill" + (ov.leader || ov.members.length <= 1 ? "" : " bad");
  leader.hidden = false;

  const rows = ov.members.map((m) => el("tr", { "data-member": m.name },
    el("td", {}, m.name + (m.self ? " (this node)" : "")),
    el("td", { class: "state-" + m.state }, m.state),
    el("td", {}, m.role || "–"),
    el("td", {}, el("span", { class: "bar", style: "width:" + Math.round(m.ring_share * 80) + "px" }), (m.ring_share * 100).toFixed(1) + "%"),
    el("td", {}, m.http_addr || "–"),
    el("td", {}, m.peer_addr || "–"),
    el("td", {}, m.gossip_addr || "–")));
  $("#members tbody").replaceChildren(...rows);
  const missing = Object.entries(ov.missing || {});
  $("#missing").textContent = missing.length ? "No counters from: " + missing.map(([n, why]) => n + " (" + why + ")").join(", ") : "";

  const now = Date.now();
  const dt = previous ? (now - previous.at) / 1000 : 0;
  const prevOv = previous ? previous.ov : null;
  const names = Object.keys(ov.policies).sort();
  $("#policy-rates tbody").replaceChildren(...names.map((name) => {
    const p = ov.policies[name];
    const q = prevOv && prevOv.policies[name] ? prevOv.policies[name] : {};
    return el("tr", { "data-policy": name }, el("td", {}, name),
      ...["allowed", "denied", "shadowed", "fallback"].map((k) => el("td", { class: "num", title: p[k] + " in all" }, fmtRate(rate(p[k], q[k], dt)))));
  }));
  const counterNames = Object.keys(ov.counters).sort();
  $("#counters").replaceChildren(...counterNames.map((k) => {
    const r = rate(ov.counters[k], prevOv ? prevOv.counters[k] : undefined, dt);
    // Counters that mean trouble stand out while they grow.
    const bad = TROUBLE.has(k) && r > 0;
    return el("div", { "data-counter": k, class: bad ? "bad" : "", title: ov.counters[k] + " in all since the nodes started" },
      el("dt", {}, k.replace(/_/g, " ")),
      el("dd", {}, fmtRate(r) + "/s ", el("span", { class: "muted" }, "(" + ov.counters[k] + ")")));
  }));
  previous = { ov, at: now };

  const sel = $("#top-policy");
  const chosen = sel.value;
  if (sel.options.length !== names.length || [...sel.options].some((o, i) => o.value !== names[i])) {
    sel.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
    sel.value = names.includes(chosen) ? chosen : (names.includes("auth") ? "auth" : names[0] || "");
  }
}

function renderTop(top) {
  const list = $("#top-list");
  list.replaceChildren(...top.keys.map((k) => el("li", { "data-key": k.key },
    el("span", { class: "key" }, k.key + (k.truncated ? "…" : "")), " ",
    el("span", { class: "muted" }, k.count + (k.error ? " ±" + k.error : "") + " denied"))));
  const missing = Object.keys(top.missing || {});
  $("#top-note").textContent = top.keys.length === 0 ? "No denials in this window." :
    top.denied + " denials in all, counted on " + top.nodes.length + " node(s)" + (missing.length ? "; no answer from " + missing.join(", ") : "");
}

function renderPolicies(list) {
  const json = JSON.stringify(list);
  if (json === policiesJSON) return; // unchanged: keep the rows (and a click in flight)
  policiesJSON = json;
  $("#policy-table tbody").replaceChildren(...list.map((p) => {
    const ov = Object.entries(p.overrides || {}).map(([k, v]) => k + "=" + v).join(", ");
    const edit = el("button", { type: "button", class: "link", "data-edit": p.name }, "edit");
    edit.addEventListener("click", () => fillForm(p));
    return el("tr", { "data-policy": p.name }, el("td", {}, p.name), el("td", {}, p.algorithm),
      el("td", { class: "num" }, p.limit), el("td", { class: "num" }, p.window_ms + " ms"), el("td", { class: "num" }, p.burst || 0),
      el("td", {}, p.failure_mode), el("td", {}, p.shadow ? "yes" : "no"), el("td", {}, ov || "–"), el("td", {}, edit));
  }));
}

function fillForm(p) {
  $("#f-name").value = p.name;
  $("#f-algorithm").value = p.algorithm;
  $("#f-limit").value = p.limit;
  $("#f-window").value = p.window_ms;
  $("#f-burst").value = p.burst || 0;
  $("#f-failure").value = p.failure_mode;
  $("#f-shadow").checked = !!p.shadow;
  $("#f-overrides").value = Object.entries(p.overrides || {}).map(([k, v]) => k + "=" + v).join("\n");
  setStatus("", "");
  $("#f-name").scrollIntoView({ block: "nearest" });
}

function setStatus(msg, cls) {
  const s = $("#f-status");
  s.textContent = msg;
  s.className = cls;
}

function formPolicy() {
  const num = (id) => $(id).value === "" ? undefined : Number($(id).value);
  const overrides = {};
  for (const line of $("#f-overrides").value.split("\n")) {
    const t = line.trim();
    if (!t) continue;
    const i = t.lastIndexOf("=");
    if (i <= 0) throw Object.assign(new Error("overrides: want key=limit, got " + JSON.stringify(t)), { field: "overrides" });
    overrides[t.slice(0, i).trim()] = Number(t.slice(i + 1).trim());
  }
  return {
    algorithm: $("#f-algorithm").value, limit: num("#f-limit"), window_ms: num("#f-window"), burst: num("#f-burst") || 0,
    failure_mode: $("#f-failure").value, shadow: $("#f-shadow").checked, overrides,
  };
}

async function save(ev) {
  ev.preventDefault();
  const name = $("#f-name").value.trim();
  try {
    const p = await api("PUT", "/v1/policies/" + encodeURIComponent(name), formPolicy());
    setStatus("saved " + p.name + ": limit " + p.limit + " per " + p.window_ms + " ms", "ok");
    refreshPolicies();
  } catch (err) {
    setStatus("not saved: " + explain(err) + (err.field ? " (field " + err.field + ")" : ""), "bad");
  }
}

async function remove() {
  const name = $("#f-name").value.trim();
  if (!name || !confirm("Delete policy " + name + "?")) return;
  try {
    await api("DELETE", "/v1/policies/" + encodeURIComponent(name));
    setStatus("deleted " + name, "ok");
    refreshPolicies();
  } catch (err) {
    setStatus("not deleted: " + explain(err), "bad");
  }
}

async function refreshPolicies() {
  try {
    renderPolicies((await api("GET", "/v1/policies")).policies);
  } catch (err) { /* the poll reports it */ }
}

async function poll() {
  try {
    renderOverview(await api("GET", "/v1/overview"));
    const policy = $("#top-policy").value;
    if (policy) renderTop(await api("GET", "/v1/top?policy=" + encodeURIComponent(policy) + "&window=" + $("#top-window").value + "&n=10"));
    renderPolicies((await api("GET", "/v1/policies")).policies);
    showError("");
    $("#updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) {
    showError(explain(err));
  }
}

function start() {
  $("#token").value = token;
  $("#token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("#token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, token);
    previous = null;
    poll();
  });
  $("#policy-form").addEventListener("submit", save);
  $("#f-delete").addEventListener("click", remove);
  $("#top-policy").addEventListener("change", poll);
  $("#top-window").addEventListener("change", poll);
  poll();
  setInterval(poll, POLL_MS);
}

document.addEventListener("DOMContentLoaded", start);
