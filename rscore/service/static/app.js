// rscore viewer: plain JS, no dependencies. Every server string is inserted with textContent (never as HTML).
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "rscore-api-key";
let templatesByPlugin = {};
let objectUrls = [];

function apiHeaders() {
  const key = $("key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

// fetch relative to the page (works behind a proxy sub-path); throws Error(one-line message) on non-2xx
async function api(path, init = {}) {
  const response = await fetch(path, { ...init, headers: { ...apiHeaders(), ...(init.headers || {}) } });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.error) message = `${response.status}: ${body.error}`;
    } catch (_) { /* not JSON */ }
    if (response.status === 503 && response.headers.get("Retry-After")) {
      message += ` (retry in ${response.headers.get("Retry-After")} s)`;
    }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response;
}

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.className = isError ? "error" : "muted";
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function fmt(value, digits = 3) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") return Number.isInteger(value) ? value.toLocaleString("en") : value.toPrecision(digits);
  return String(value);
}

// ---------------------------------------------------------------------------------------------- start-up
async function loadPlugins() {
  const plugins = await (await api("v1/plugins")).json();
  const select = $("plugin");
  const chosen = select.value;
  for (const option of [...select.options]) if (option.value) option.remove();
  for (const p of plugins) {
    if (p.core) continue;
    const option = el("option", `${p.name}${p.version ? " " + p.version : ""} (${p.templates} templates)`);
    option.value = p.name;
    select.appendChild(option);
  }
  if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
  const templates = await (await api("v1/templates")).json();
  templatesByPlugin = {};
  for (const t of templates) (templatesByPlugin[t.plugin] = templatesByPlugin[t.plugin] || []).push(t);
  updateExamples();
}

function updateExamples() {
  const plugin = $("plugin").value;
  const list = $("examples");
  list.replaceChildren();
  const names = plugin ? [plugin] : Object.keys(templatesByPlugin);
  for (const name of names) {
    for (const t of templatesByPlugin[name] || []) {
      for (const example of t.examples) {
        const option = el("option");
        option.value = example;
        option.label = `${t.qualified_name}: ${t.label}`;
        list.appendChild(option);
      }
    }
  }
}

async function init() {
  $("key").value = sessionStorage.getItem(KEY_STORE) || "";
  $("key").addEventListener("change", () => {
    sessionStorage.setItem(KEY_STORE, $("key").value.trim());
    loadPlugins().then(() => setStatus("")).catch((e) => setStatus(e.message, true));
  });
  $("plugin").addEventListener("change", updateExamples);
  $("form").addEventListener("submit", onSubmit);
  try {
    const health = await (await fetch("healthz")).json();
    $("version").textContent = health.version;
    $("key-row").hidden = !health.auth;
  } catch (e) {
    setStatus(`the service does not answer: ${e.message}`, true);
    return;
  }
  try {
    await loadPlugins();
    document.body.dataset.ready = "1";
  } catch (e) {
    setStatus(e.status === 401 ? "enter the API key to list plugins" : e.message, true);
  }
}

// ---------------------------------------------------------------------------------------------- segment
async function onSubmit(event) {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) { setStatus("choose an input file", true); return; }
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("query", $("query").value);
  if ($("plugin").value) form.append("plugin", $("plugin").value);
  $("submit").disabled = true;
  setStatus(`segmenting ${file.name}…`);
  const t0 = performance.now();
  try {
    const body = await (await api("v1/segment", { method: "POST", body: form })).json();
    await showResult(body);
    setStatus(`done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  } catch (e) {
    setStatus(e.message, true);
  } finally {
    $("submit").disabled = false;
  }
}

async function blobUrl(url) {
  const blob = await (await api(url)).blob();
  const objectUrl = URL.createObjectURL(blob);
  objectUrls.push(objectUrl);
  return objectUrl;
}

async function showResult(body) {
  for (const u of objectUrls) URL.revokeObjectURL(u);
  objectUrls = [];
  const doc = body.result;
  const links = body.links || {};
  $("result").hidden = false;

  const answer = $("answer");
  answer.replaceChildren();
  const match = (doc.plan && doc.plan.match) || {};
  if (doc.absent) {
    answer.appendChild(el("strong", "Not found. "));
    answer.appendChild(el("span", doc.reason || ""));
  } else {
    answer.appendChild(el("strong", `${doc.summary.instance_count} instance(s)`));
    if (doc.summary.mask_fraction !== undefined) {
      answer.appendChild(el("span", ` covering ${(100 * doc.summary.mask_fraction).toFixed(2)}% of the input`));
    }
  }
  if (doc.template) {
    const how = match.method ? ` (${match.method} match ${fmt(match.score, 2)})` : "";
    answer.appendChild(el("span", ` — template ${doc.template}${how}`, "muted"));
  }
  if (!doc.absent && typeof doc.confidence === "number") {
    answer.appendChild(el("span", ` — confidence ${fmt(doc.confidence, 2)}`, "muted"));
  }
  answer.dataset.absent = doc.absent ? "1" : "0";

  const caveats = $("caveats");
  caveats.replaceChildren();
  for (const c of doc.caveats || []) caveats.appendChild(el("li", c));
  caveats.hidden = caveats.children.length === 0;

  const warnings = doc.warnings || [];
  $("warnings").hidden = warnings.length === 0;
  $("warnings").textContent = warnings.join(" · ");

  const steps = $("steps");
  steps.replaceChildren();
  for (const step of (doc.plan && doc.plan.steps) || []) {
    const li = el("li", step.text);
    const stats = Object.entries(step.stats || {}).map(([k, v]) => `${k} = ${fmt(v)}`).join(", ");
    if (stats) li.appendChild(el("div", stats, "stats"));
    steps.appendChild(li);
  }
  if (!steps.children.length && doc.reason) steps.appendChild(el("li", doc.reason));

  const tbody = $("instances").querySelector("tbody");
  tbody.replaceChildren();
  for (const inst of doc.instances || []) {
    const tr = el("tr");
    const area = inst.area !== undefined && inst.area !== null ? `${fmt(inst.area)} ${inst.area_unit || ""}` : "";
    for (const cell of [inst.id, inst.label, fmt(inst.score, 3), fmt(inst.area_px), area, (inst.bbox || []).join(", ")]) {
      tr.appendChild(el("td", cell));
    }
    tbody.appendChild(tr);
  }
  $("instance-count").textContent = `(${(doc.instances || []).length})`;

  const downloads = $("downloads");
  downloads.replaceChildren();
  for (const [name, url] of Object.entries(links)) {
    const file = url.split("/").pop();
    const button = el("button", `${name} (${decodeURIComponent(file)})`);
    button.type = "button";
    button.dataset.name = name;
    button.addEventListener("click", async () => {
      try {
        const a = el("a");
        a.href = await blobUrl(url);
        a.download = decodeURIComponent(file);
        document.body.appendChild(a);
        a.click();
        a.remove();
      } catch (e) { setStatus(e.message, true); }
    });
    const li = el("li");
    li.appendChild(button);
    downloads.appendChild(li);
  }

  const img = $("overlay");
  const shown = links.overlay || links.mask;
  img.hidden = !shown;
  $("overlay-caption").textContent = links.overlay ? "overlay" : links.mask ? "mask" : "no image output";
  if (shown) img.src = await blobUrl(shown);
}

document.addEventListener("DOMContentLoaded", init);
