// rscore viewer: plain JS, no dependencies. Every server string is inserted with textContent (never as HTML).
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "rscore-api-key";
let templatesByPlugin = {};
let objectUrls = [];
let leafletMap = null;
let inputUrl = null;  // the uploaded file, when the browser can show it (PNG, JPEG...), under the overlay

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
    loadPlugins().then(() => { setStatus(""); return loadJobs(); }).catch((e) => setStatus(e.message, true));
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
  $("jobs-refresh").addEventListener("click", () => loadJobs());
  try {
    await loadPlugins();
    document.body.dataset.ready = "1";
  } catch (e) {
    setStatus(e.status === 401 ? "enter the API key to list plugins" : e.message, true);
    return;
  }
  await loadJobs();
}

// ---------------------------------------------------------------------------------------------- batch jobs
let jobsTimer = null;
const ACTIVE = new Set(["queued", "running"]);

async function loadJobs() {
  clearTimeout(jobsTimer);
  const status = $("jobs-status");
  let listing;
  try {
    listing = await (await api("v1/jobs?limit=50")).json();
  } catch (e) {
    status.textContent = `jobs: ${e.message}`;
    return;
  }
  const tbody = $("jobs").querySelector("tbody");
  tbody.replaceChildren();
  for (const job of listing.jobs) {
    const tr = el("tr");
    tr.dataset.job = job.id;
    tr.dataset.state = job.state;
    const counts = Object.entries(job.counts).map(([state, n]) => `${n} ${state}`).join(", ");
    const when = job.submitted ? new Date(job.submitted).toLocaleString() : "";
    for (const cell of [when, job.flow, job.plugin ? `${job.query} (${job.plugin})` : job.query, job.state,
                        `${job.inputs}: ${counts}`]) {
      tr.appendChild(el("td", cell));
    }
    const open = el("button", "results");
    open.type = "button";
    open.className = "link";
    open.addEventListener("click", () => toggleJob(tr, job).catch((e) => setStatus(e.message, true)));
    const td = el("td");
    td.appendChild(open);
    tr.appendChild(td);
    tbody.appendChild(tr);
  }
  $("jobs").hidden = listing.jobs.length === 0;
  status.textContent = listing.jobs.length ? `runner: ${listing.runner}; flows: ${listing.flows.join(", ")}`
    : `no batch jobs yet (POST v1/jobs; runner ${listing.runner}, flows: ${listing.flows.join(", ")})`;
  $("jobs").dataset.ready = "1";
  if (listing.jobs.some((j) => ACTIVE.has(j.state))) jobsTimer = setTimeout(loadJobs, 2000);
}

// the job's inputs under its row: state, error, and a button that shows each result in the viewer above
async function toggleJob(tr, summary) {
  const next = tr.nextElementSibling;
  if (next && next.classList.contains("job-items")) { next.remove(); return; }
  const job = await (await api(summary.url)).json();
  const row = el("tr");
  row.className = "job-items";
  row.dataset.job = job.id;
  const td = el("td");
  td.colSpan = 6;
  const list = el("ul");
  for (const [name, url] of Object.entries(job.links || {})) list.appendChild(downloadItem(`${name} (job)`, url));
  for (const item of job.items) {
    const li = el("li");
    li.dataset.state = item.state;
    li.appendChild(el("span", `${item.input}: ${item.state}`));
    if (item.error) li.appendChild(el("span", ` — ${item.error}`, "error"));
    if (item.result_id && item.links.result) {
      const show = el("button", item.absent ? "show (absent)" : `show (${item.instance_count} instance(s))`);
      show.type = "button";
      show.className = "link";
      show.dataset.result = item.result_id;
      show.addEventListener("click", () => showJobItem(item).catch((e) => setStatus(e.message, true)));
      li.append(" ", show);
    }
    list.appendChild(li);
  }
  td.appendChild(list);
  row.appendChild(td);
  tr.after(row);
}

function downloadItem(label, url) {
  const li = el("li");
  const a = el("button", label);
  a.type = "button";
  a.className = "link";
  a.addEventListener("click", async () => {
    try {
      const link = el("a");
      link.href = await blobUrl(url);
      link.download = decodeURIComponent(url.split("/").pop());
      document.body.appendChild(link);
      link.click();
      link.remove();
    } catch (e) { setStatus(e.message, true); }
  });
  li.appendChild(a);
  return li;
}

async function showJobItem(item) {
  const doc = await (await api(item.links.result)).json();
  if (inputUrl) URL.revokeObjectURL(inputUrl);
  inputUrl = null;  // the input is on the server: the overlay is what there is to see
  await showResult({ id: item.result_id, links: item.links, result: doc });
  setStatus(`batch result: ${item.input}`);
  $("result").scrollIntoView();
}

// ---------------------------------------------------------------------------------------------- segment
async function onSubmit(event) {
  event.preventDefault();
  const chosen = [...$("file").files];
  if (!chosen.length) { setStatus("choose an input file", true); return; }
  const file = chosen[0];
  const form = new FormData();
  // one file (an image, a GeoTIFF, a video, a DICOM file or a DICOM series as a .zip) is "file"; several files are
  // the files of one DICOM series, sent as "files"
  if (chosen.length === 1) form.append("file", file, file.name);
  else for (const f of chosen) form.append("files", f, f.name);
  form.append("query", $("query").value);
  if ($("plugin").value) form.append("plugin", $("plugin").value);
  $("submit").disabled = true;
  setStatus(chosen.length === 1 ? `segmenting ${file.name}…` : `segmenting a series of ${chosen.length} files…`);
  const t0 = performance.now();
  try {
    const body = await (await api("v1/segment", { method: "POST", body: form })).json();
    if (inputUrl) URL.revokeObjectURL(inputUrl);
    inputUrl = chosen.length === 1 && /^image\/(png|jpeg|gif|webp|bmp)$/.test(file.type) ? URL.createObjectURL(file) : null;
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

  const conf = doc.confidence;
  const withheld = (doc.caveats || []).some((c) => c.startsWith("confidence withheld:"));
  $("trust").textContent = conf === null || conf === undefined
    ? (withheld ? "confidence: withheld - the input is outside what the rule was made for (see the caveats)"
      : "confidence: not stated by this strategy")
    : `confidence: ${Number(conf).toFixed(2)}`;
  const caveats = $("caveats");
  caveats.replaceChildren(...(doc.caveats || []).map((c) => el("li", c)));
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
    tr.dataset.id = String(inst.id);
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

  await showPicture(body, doc, links);
}

// ------------------------------------------------------------------------------------------- what to look at
function resetViews() {
  if (leafletMap) { leafletMap.remove(); leafletMap = null; }
  for (const id of ["map", "player", "legend", "events", "opacity-row", "input-preview", "slice-row", "instances-canvas"]) {
    $(id).hidden = true;
  }
  $("input-preview").classList.remove("base");
  $("instances-canvas").style.opacity = "";
  $("stack").hidden = false;
  $("player").removeAttribute("src");
  $("overlay").style.opacity = "";
  $("legend").replaceChildren();
  $("events").replaceChildren();
}

async function showPicture(body, doc, links) {
  resetViews();
  const img = $("overlay");
  if (links.mask_cog && window.L) {  // a georeferenced raster: an interactive map
    img.hidden = true;
    $("stack").hidden = true;
    try {
      await showMap(body.id, links);
      $("overlay-caption").textContent = "map: classes over the input's hillshade, polygons with their attributes";
      return;
    } catch (e) {
      $("stack").hidden = false;
      setStatus(`the map could not be drawn: ${e.message}`, true);
    }
  }
  if (links.overlay_video) {
    img.hidden = true;
    $("stack").hidden = true;
    const player = $("player");
    player.src = await blobUrl(links.overlay_video);
    player.hidden = false;
    $("overlay-caption").textContent = "overlay video: each track tinted and labelled";
    if (links.events) await showEvents(links.events);
    return;
  }
  const slices = Object.keys(links).filter((k) => k.startsWith("slice_png_")).sort();
  if (slices.length) {  // DICOM: browse the windowed slices with the segments
    img.hidden = false;
    await showSlices(doc, links, slices);
    return;
  }
  const shown = links.overlay || links.map_png || links.mask || links.keyframe;
  img.hidden = !shown;
  $("overlay-caption").textContent = links.overlay ? "overlay" : links.map_png ? "map" : links.mask ? "mask"
    : links.keyframe ? "keyframe" : "no image output";
  if (shown) img.src = await blobUrl(shown);
  const withMasks = (doc.instances || []).filter((i) => i.rle && i.rle.size).length;
  if (shown && inputUrl && withMasks && withMasks <= 500) {  // the input with each instance drawn, toggled
    await showInstances(doc);
    return;
  }
  if (shown && inputUrl && links.overlay) {  // the input under the overlay: the slider fades between them
    $("input-preview").src = inputUrl;
    $("input-preview").hidden = false;
    bindOpacity((v) => { img.style.opacity = String(v); });
  }
}

async function showSlices(doc, links, names) {
  const img = $("overlay");
  const slider = $("slice");
  const win = ((doc.provenance || {}).display_windows || {}).slice_pngs || {};
  const windowText = win.center !== undefined && win.center !== null
    ? `window ${win.name || ""} (centre ${fmt(win.center)}, width ${fmt(win.width)})` : "stretched";
  const cache = {};
  const show = async (i) => {
    const name = names[i];
    cache[name] = cache[name] || await blobUrl(links[name]);
    img.src = cache[name];
    img.dataset.slice = name.slice("slice_png_".length);
    $("overlay-caption").textContent = `slice ${name.slice("slice_png_".length)} (${i + 1} of ${names.length}), ${windowText}`;
  };
  slider.min = "0";
  slider.max = String(names.length - 1);
  const onSlice = (a, k) => a.series_slice === k || (a.per_slice || []).some((e) => e.series_slice === k);  // 3-D
  const withSegments = names.findIndex((n) => (doc.instances || []).some(
    (inst) => onSlice(inst.attributes || {}, Number(n.slice("slice_png_".length)))));
  slider.value = String(Math.max(0, withSegments));
  slider.oninput = () => show(Number(slider.value)).catch((e) => setStatus(e.message, true));
  $("slice-row").hidden = names.length < 2;
  await show(Number(slider.value));
}

// COCO compressed RLE (pycocotools' string form) -> run lengths; runs alternate 0s and 1s, column-major
function rleCounts(text) {
  const counts = [];
  let p = 0;
  while (p < text.length) {
    let x = 0, k = 0, more = 1;
    while (more) {
      const c = text.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20;
      p++; k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

const INSTANCE_COLOURS = [[255, 64, 64], [64, 200, 255], [255, 200, 0], [140, 255, 90], [230, 90, 255], [255, 150, 60]];

async function showInstances(doc) {
  const preview = $("input-preview");
  preview.src = inputUrl;
  await preview.decode();
  $("overlay").hidden = true;
  const [h, w] = doc.instances.find((i) => i.rle).rle.size;
  const canvas = $("instances-canvas");
  canvas.width = w;
  canvas.height = h;
  canvas.hidden = false;
  preview.hidden = false;
  preview.classList.add("base");
  const shown = new Set(doc.instances.map((i) => i.id));
  const draw = () => {
    const image = new ImageData(w, h);
    doc.instances.forEach((inst, n) => {
      if (!inst.rle || !shown.has(inst.id)) return;
      const [r, g, b] = INSTANCE_COLOURS[n % INSTANCE_COLOURS.length];
      let pos = 0, on = false;
      for (const run of rleCounts(inst.rle.counts)) {
        if (on) {
          for (let i = pos; i < pos + run; i++) {
            const o = 4 * ((i % h) * w + Math.floor(i / h));
            image.data[o] = r; image.data[o + 1] = g; image.data[o + 2] = b; image.data[o + 3] = 150;
          }
        }
        pos += run;
        on = !on;
      }
    });
    canvas.getContext("2d").putImageData(image, 0, 0);
  };
  for (const tr of $("instances").querySelectorAll("tbody tr")) {
    const id = Number(tr.dataset.id);
    const box = el("input");
    box.type = "checkbox";
    box.checked = true;
    box.title = "show this instance";
    box.addEventListener("change", () => { if (box.checked) shown.add(id); else shown.delete(id); draw(); });
    tr.firstChild.prepend(box);
  }
  draw();
  bindOpacity((v) => { canvas.style.opacity = String(v); });
  $("overlay-caption").textContent = "the input with each instance in its colour (tick the rows to show or hide them)";
}

function bindOpacity(apply) {
  const slider = $("opacity");
  slider.value = "100";
  slider.oninput = () => apply(Number(slider.value) / 100);
  $("opacity-row").hidden = false;
}

async function showMap(id, links) {
  const view = await (await api(`v1/results/${encodeURIComponent(id)}/view/map`)).json();
  const box = $("map");
  box.hidden = false;
  const map = L.map(box, { attributionControl: false, zoomSnap: 0.25 });
  leafletMap = map;
  const bounds = L.latLngBounds(view.bounds);
  const layers = {};
  if (view.base) layers["basemap (hillshade / image of the input)"] = L.imageOverlay(view.base, bounds).addTo(map);
  const classes = L.imageOverlay(view.overlay, bounds, { opacity: 0.75, className: "rscore-classes" }).addTo(map);
  layers[`classes (${view.raster})`] = classes;
  bindOpacity((v) => classes.setOpacity(v));
  $("opacity").value = "75";
  if (links.polygons_geojson) {
    const data = await (await api(links.polygons_geojson)).json();
    const colours = Object.fromEntries(view.legend.map((e) => [e.name, e.colour]));
    layers.polygons = L.geoJSON(data, {
      style: (f) => ({ color: colours[f.properties.class] || "#d32f2f", weight: 1, fillOpacity: 0.15 }),
      onEachFeature: (f, layer) => {
        const p = f.properties;
        const box = el("div");
        box.appendChild(el("strong", p.class));
        for (const [k, v] of [["area", p.area_m2 === null ? null : `${fmt(p.area_m2)} m²`], ["mean score", fmt(p.mean_score)],
                              ["pixels", fmt(p.area_px)]]) {
          if (v !== null && v !== "") box.appendChild(el("div", `${k}: ${v}`));
        }
        layer.bindPopup(box);
      },
    }).addTo(map);
  }
  L.control.layers(null, layers, { collapsed: false }).addTo(map);
  L.control.scale({ imperial: false }).addTo(map);
  map.fitBounds(bounds);
  const legend = $("legend");
  for (const entry of view.legend) {
    const li = el("li");
    const swatch = el("span", null, "swatch");
    swatch.style.background = entry.colour;
    li.append(swatch, el("span", entry.name));
    legend.appendChild(li);
  }
  legend.appendChild(el("li", `CRS of the data: ${view.crs} (drawn in Web Mercator)`, "muted"));
  legend.hidden = false;
  box.dataset.ready = "1";
}

async function showEvents(url) {
  const doc = await (await api(url)).json();
  const list = $("events");
  for (const event of doc.events || []) {
    if (event.event !== "track") continue;
    const li = el("li");
    const button = el("button", `#${event.track_id} ${event.label}: ${fmt(event.first_s, 3)}–${fmt(event.last_s, 3)} s`);
    button.type = "button";
    button.addEventListener("click", () => { $("player").currentTime = event.first_s; $("player").play(); });
    li.appendChild(button);
    list.appendChild(li);
  }
  list.hidden = list.children.length === 0;
}

document.addEventListener("DOMContentLoaded", init);
