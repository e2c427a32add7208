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

// the CLI's units (rscore/units.py): m² below 1 ha, ha up to 100 ha, km² above; mm² -> cm² from 1 cm²; no exponent
function figure(value) {
  return Math.abs(value) >= 100 ? Math.round(value).toLocaleString("en") : Number(value.toPrecision(3)).toString();
}

function areaText(value, unit) {
  if (value === null || value === undefined) return "";
  if (unit === "m2") {
    if (value >= 1e6) return `${figure(value / 1e6)} km²`;
    if (value >= 1e4) return `${figure(value / 1e4)} ha`;
    return `${figure(value)} m²`;
  }
  if (unit === "mm2" && value >= 100) return `${figure(value / 100)} cm²`;
  return `${figure(value)} ${(unit || "").replace("2", "²")}`;
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
  // a video: ask for input.mp4 too (the frames without the overlay), to draw the tracks here with toggles
  if (chosen.length === 1 && VIDEO_FILE.test(file.name)) form.append("options", JSON.stringify({ input_video: true }));
  form.append("query", $("query").value);
  if ($("plugin").value) form.append("plugin", $("plugin").value);
  $("submit").disabled = true;
  setStatus(chosen.length === 1 ? `segmenting ${file.name}…` : `segmenting a series of ${chosen.length} files…`);
  const t0 = performance.now();
  try {
    const body = await (await api("v1/segment", { method: "POST", body: form })).json();
    if (inputUrl) URL.revokeObjectURL(inputUrl);
    inputUrl = chosen.length === 1 && /^image\/(png|jpeg|gif|webp|bmp)$/.test(file.type) ? URL.createObjectURL(file) : null;
    await showResult({ ...body, fromForm: true });
    setStatus(`done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  } catch (e) {
    setStatus(e.message, true);
  } finally {
    $("submit").disabled = false;
  }
}

const VIDEO_FILE = /\.(mp4|m4v|mov|avi|mkv|webm|mpe?g|wmv|flv|ts|mts|3gp)$/i;

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
  showPluginHint(doc, body.fromForm === true);

  const steps = $("steps");
  steps.replaceChildren();
  for (const step of (doc.plan && doc.plan.steps) || []) {
    const li = el("li", step.text);
    const stats = Object.entries(step.stats || {}).map(([k, v]) => `${k} = ${fmt(v)}`).join(", ");
    if (stats) li.appendChild(el("div", stats, "stats"));
    steps.appendChild(li);
  }
  if (!steps.children.length && doc.reason) steps.appendChild(el("li", doc.reason));

  showInstanceTable(doc);
  $("instance-count").textContent = `(${(doc.instances || []).length})`;
  showClasses(doc);

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

// A DICOM series' instance on its slices, numbered as the series numbers them (the slice PNGs' names):
// [{slice, box (x0, y0, x1, y1 on that slice's own image, end-exclusive), area}] from per_slice (a 3-D component,
// rscore_surgical.components3d) or the flat attributes of an instance on one slice; null for other results
function sliceBoxes(attrs) {
  const number = (a) => a.series_slice ?? a.slice;
  if (Array.isArray(attrs.per_slice) && attrs.per_slice.length) {
    return attrs.per_slice.filter((e) => Array.isArray(e.bbox_in_slice))
      .map((e) => ({ slice: number(e), box: e.bbox_in_slice, area: e.area_px }));
  }
  if (Array.isArray(attrs.bbox_in_slice)) return [{ slice: number(attrs), box: attrs.bbox_in_slice, area: null }];
  return null;
}

// a 3-D component spanning several slices: a 3-D box and no flat box on one slice (the CLI's rule)
const isComponent = (attrs) => Array.isArray(attrs.bbox_3d) && !attrs.bbox_in_slice;

const PLAIN_HEAD = ["#", "label", "score", "area (px)", "area", "bbox (x0, y0, x1, y1)"];
const COMPONENT_HEAD = ["#", "label", "score", "slices", "box on them (x0, y0, x1, y1)", "voxels", "volume",
                        "centroid mm (LPS)"];

// the instance table. A DICOM series' 3-D components as the CLI lists them: the slices they span, the box on them,
// voxels, volume in mL, centroid in patient mm (each slice's own box in the box cell's tooltip and drawn by the slice
// browser); other results: box, pixels and area (an instance on one DICOM slice: its box on that slice)
function showInstanceTable(doc) {
  const instances = doc.instances || [];
  const components = instances.some((i) => isComponent(i.attributes || {}));
  const head = $("instances").querySelector("thead tr");
  head.replaceChildren(...(components ? COMPONENT_HEAD : PLAIN_HEAD).map((h) => el("th", h)));
  $("instances").dataset.kind = components ? "components" : "instances";
  const tbody = $("instances").querySelector("tbody");
  tbody.replaceChildren();
  for (const inst of instances) {
    const tr = el("tr");
    tr.dataset.id = String(inst.id);
    const attrs = inst.attributes || {};
    const boxes = sliceBoxes(attrs);
    let cells;
    if (components) {
      const flat = inst.bbox || [];
      const [x0, y0, z0, x1, y1, z1] = attrs.bbox_3d || [flat[0], flat[1], 0, flat[2], flat[3], 1];
      const [first, last] = attrs.series_slice_range || [z0, z1 - 1];
      const volume = typeof attrs.volume_ml === "number" ? `${figure(attrs.volume_ml)} mL` : "";
      const centre = (attrs.centroid_mm || []).map((v) => v.toFixed(1)).join(", ");
      cells = [inst.id, inst.label, fmt(inst.score, 3), first === last ? String(first) : `${first}-${last}`,
               [x0, y0, x1, y1].join(", "), fmt(inst.area_px), volume, centre];
    } else {
      const box = attrs.bbox_in_slice ? `slice ${boxes[0].slice}: ${attrs.bbox_in_slice.join(", ")}`
        : (inst.bbox || []).join(", ");
      cells = [inst.id, inst.label, fmt(inst.score, 3), fmt(inst.area_px), areaText(inst.area, inst.area_unit), box];
    }
    for (const cell of cells) tr.appendChild(el("td", cell));
    if (boxes && boxes.length) {
      // a row shows its instance where it is largest (its first such slice)
      const largest = boxes.reduce((best, e) => ((e.area ?? 0) > (best.area ?? 0) ? e : best), boxes[0]);
      tr.dataset.slice = String(largest.slice);
      tr.dataset.slices = boxes.map((e) => e.slice).join(" ");
      if (components) {
        tr.children[4].title = boxes.map((e) => `slice ${e.slice}: ${e.box.join(", ")}`
          + (e.area === null ? "" : ` (${fmt(e.area)} px)`)).join("\n");
      }
    }
    tbody.appendChild(tr);
  }
}

// "any plugin" chosen and a plugin's template answered: the answer came without that plugin's reader and files (a
// GeoTIFF read as a plain picture: no map; a DICOM series: no SEG, NIfTI or slice browser). Say so, with a button
// that runs the same file and query again with that plugin.
function showPluginHint(doc, fromForm) {
  const hint = $("plugin-hint");
  const owner = !doc.plugin && typeof doc.template === "string" && doc.template.includes(":")
    ? doc.template.split(":")[0] : null;
  const installed = owner && [...$("plugin").options].some((o) => o.value === owner);
  hint.hidden = !installed;
  if (!installed) return;
  hint.dataset.plugin = owner;
  hint.querySelector("span").textContent = `answered by ${owner}'s template without a plugin chosen: the ${owner} `
    + `plugin's own steps and files (e.g. a GeoTIFF's map; DICOM SEG, NIfTI, the slice browser) come with "${owner}" `
    + "in the Plugin list.";
  const again = hint.querySelector("button");
  again.textContent = `run again with ${owner}`;
  again.hidden = !(fromForm && $("file").files.length);
  again.onclick = () => { $("plugin").value = owner; updateExamples(); $("form").requestSubmit(); };
}

// per-class totals: a DICOM series' volume per segment (mL), a raster's area per class with its share
function showClasses(doc) {
  const tbody = $("classes").querySelector("tbody");
  tbody.replaceChildren();
  for (const [name, row] of Object.entries(doc.classes || {})) {
    if (!row || typeof row !== "object") continue;
    let amount = null;
    if (typeof row.volume_ml === "number") amount = `${figure(row.volume_ml)} mL (${fmt(row.voxels)} voxels)`;
    else if (typeof row.area_km2 === "number") {
      amount = areaText(row.area_km2 * 1e6, "m2") + (typeof row.share === "number" ? ` (${(100 * row.share).toFixed(1)} %)` : "");
    }
    if (amount === null) continue;
    const tr = el("tr");
    tr.append(el("td", name), el("td", amount));
    tbody.appendChild(tr);
  }
  $("classes-section").hidden = tbody.children.length === 0;
}

// ------------------------------------------------------------------------------------------- what to look at
function resetViews() {
  if (leafletMap) { leafletMap.remove(); leafletMap = null; }
  for (const id of ["map", "player", "video-canvas", "legend", "events", "timeline", "opacity-row", "input-preview",
                    "slice-row", "instances-canvas", "slice-boxes"]) {
    $(id).hidden = true;
  }
  $("input-preview").classList.remove("base");
  $("instances-canvas").classList.remove("on-slice");
  $("video-canvas").style.opacity = "";
  videoGeneration++;
  $("instances-canvas").style.opacity = "";
  $("stack").hidden = false;
  $("player").removeAttribute("src");
  $("overlay").style.opacity = "";
  $("legend").replaceChildren();
  $("events").replaceChildren();
  $("timeline").replaceChildren();
  $("slice-boxes").replaceChildren();
  $("slice-boxes").setAttribute("hidden", "");
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
  if (links.input_video && links.masks) {  // the plain input with the tracks drawn here: toggles, opacity
    img.hidden = true;
    $("stack").hidden = true;
    await showVideoTracks(doc, links);
    if (links.events) await showEvents(links.events);
    return;
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
    await showSlices(doc, body.id, links, slices);
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

// the segments of the slice PNGs are burnt in. When the server has the series plain (view/slice/{k}: image.nii.gz
// in the PNGs' window) and result.json every instance's mask, the browser shows the plain slice and draws each
// instance over it here from its RLE (the series stacked along the rows), with an opacity slider and a checkbox per
// instance; otherwise the slice PNGs as they are
// INSTANCE_COLOURS without the yellow that highlights a picked row's box
const SLICE_COLOURS = [[255, 64, 64], [64, 200, 255], [140, 255, 90], [230, 90, 255], [255, 150, 60]];

async function plainSlices(doc, id, links, names, first) {
  const instances = doc.instances || [];
  const height = instances.length ? (instances[0].rle || {}).size?.[0] : 0;
  if (!id || !links.nifti_image || !instances.length || instances.length > 500 || !height || height % names.length
      || !instances.every((i) => i.rle && i.rle.size && i.rle.size[0] === height)) return null;
  const url = (i) => `v1/results/${encodeURIComponent(id)}/view/slice/${i}`;
  let firstUrl;
  try {
    firstUrl = await blobUrl(url(first));
  } catch (e) {
    if (e.status === 404) return null;  // no image volume (a colour series, -O nifti_image=false): the PNGs
    throw e;
  }
  const runs = instances.map((inst) => rleCounts(inst.rle.counts));
  return { url, firstUrl, height, rows: height / names.length, runs };
}

async function showSlices(doc, id, links, names) {
  const img = $("overlay");
  const slider = $("slice");
  const win = ((doc.provenance || {}).display_windows || {}).slice_pngs || {};
  const windowText = win.center !== undefined && win.center !== null
    ? `window ${win.name || ""} (centre ${fmt(win.center)}, width ${fmt(win.width)})` : "stretched";
  const number = (name) => Number(name.slice("slice_png_".length));  // the slice's index in the series
  // each instance's box on each slice it lies on (per_slice of a 3-D component; the flat box of a one-slice one)
  const onSlices = {};
  for (const inst of doc.instances || []) {
    for (const e of sliceBoxes(inst.attributes || {}) || []) {
      (onSlices[e.slice] = onSlices[e.slice] || []).push([inst.id, e.box]);
    }
  }
  let picked = null;
  const cache = {};
  const withSegments = names.findIndex((n) => onSlices[number(n)]);
  const start = Math.max(0, withSegments);
  const plain = await plainSlices(doc, id, links, names, start);
  const canvas = $("instances-canvas");
  let shown = null, current = start;
  const drawSegments = () => {
    const image = new ImageData(img.naturalWidth || 1, img.naturalHeight || 1);
    if (img.naturalHeight === plain.rows) {
      doc.instances.forEach((inst, n) => {
        if (shown.has(inst.id)) {
          const colour = SLICE_COLOURS[n % SLICE_COLOURS.length];
          paintRuns(image, plain.runs[n], plain.height, current * plain.rows, plain.rows, colour);
        }
      });
    }
    canvas.width = image.width;
    canvas.height = image.height;
    canvas.getContext("2d").putImageData(image, 0, 0);
  };
  if (plain) {
    cache[names[start]] = plain.firstUrl;
    canvas.classList.add("on-slice");
    canvas.hidden = false;
    shown = instanceToggles(doc, drawSegments);
    bindOpacity((v) => { canvas.style.opacity = String(v); });
  }
  const show = async (i) => {
    const name = names[i];
    cache[name] = cache[name] || await blobUrl(plain ? plain.url(i) : links[name]);
    img.src = cache[name];
    img.dataset.slice = name.slice("slice_png_".length);
    const k = number(name);
    const here = onSlices[k] || [];
    const pickedHere = here.some(([id]) => id === picked);
    $("overlay-caption").textContent = `slice ${name.slice("slice_png_".length)} (${i + 1} of ${names.length}), ${windowText}`
      + (plain ? "; each instance in its colour (tick the rows to show or hide them)" : "")
      + (here.length ? `; ${here.length} instance box(es) on it` : "")
      + (picked === null ? "" : pickedHere ? `; #${picked} highlighted` : `; #${picked} is not on this slice`);
    await img.decode().catch(() => {});
    current = i;
    if (plain) drawSegments();
    drawSliceBoxes(img, here, picked);
    for (const tr of $("instances").querySelectorAll("tbody tr[data-slices]")) {
      tr.classList.toggle("off-slice", !tr.dataset.slices.split(" ").includes(String(k)));
    }
  };
  slider.min = "0";
  slider.max = String(names.length - 1);
  slider.value = String(start);
  slider.oninput = () => show(Number(slider.value)).catch((e) => setStatus(e.message, true));
  $("slice-row").hidden = names.length < 2;
  // a row of the instance table shows its slice (where the instance is largest), its box highlighted there and on
  // every other slice it spans
  const indexOf = Object.fromEntries(names.map((n, i) => [String(number(n)), i]));
  for (const tr of $("instances").querySelectorAll("tbody tr[data-slice]")) {
    const i = indexOf[tr.dataset.slice];
    if (i === undefined) continue;
    tr.classList.add("pick");
    tr.title = `show slice ${tr.dataset.slice} (where it is largest) with its box`;
    tr.addEventListener("click", () => {
      picked = Number(tr.dataset.id);
      for (const row of $("instances").querySelectorAll("tbody tr")) row.classList.toggle("picked", row === tr);
      slider.value = String(i);
      slider.oninput();
    });
  }
  await show(Number(slider.value));
}

// the boxes of the instances on the shown slice, in the slice's own pixels (end-exclusive boxes: a pixel's edges),
// over the slice PNG; the picked instance's box highlighted
function drawSliceBoxes(img, here, picked) {
  const svg = $("slice-boxes");
  const NS = svg.namespaceURI;  // SVG's (the page loads nothing from the internet: no URL in its assets)
  svg.replaceChildren();
  const w = img.naturalWidth, h = img.naturalHeight;
  if (!w || !h || !here.length) { svg.setAttribute("hidden", ""); return; }
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const order = [...here].sort((a, b) => (a[0] === picked) - (b[0] === picked));  // the picked one on top
  for (const [id, [x0, y0, x1, y1]] of order) {
    const g = document.createElementNS(NS, "g");
    g.dataset.id = String(id);
    if (id === picked) g.classList.add("picked");
    const rect = document.createElementNS(NS, "rect");
    for (const [k, v] of [["x", x0], ["y", y0], ["width", x1 - x0], ["height", y1 - y0]]) {
      rect.setAttribute(k, String(v));
    }
    const label = document.createElementNS(NS, "text");
    label.setAttribute("x", String(x0));
    label.setAttribute("y", String(Math.max(y0 - 2, 10 * h / Math.max(img.clientHeight, 1))));
    label.setAttribute("font-size", String(12 * h / Math.max(img.clientHeight, 1)));
    label.textContent = `#${id}`;
    g.append(rect, label);
    svg.appendChild(g);
  }
  svg.removeAttribute("hidden");  // an SVG element has no .hidden property: the attribute itself
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

// paint the rows top..top+rows of a column-major RLE mask of `height` rows (runs from rleCounts) into `image`
// (`width` columns, `rows` rows) in colour [r, g, b]: a whole picture (top 0, rows = height) or one slice of a
// DICOM series stacked along the rows
function paintRuns(image, runs, height, top, rows, [r, g, b]) {
  const w = image.width, bottom = top + rows;
  let pos = 0, on = false;
  for (const run of runs) {
    if (on) {
      for (let a = pos; a < pos + run;) {
        const col = Math.floor(a / height), row = a - col * height;
        const stop = Math.min(pos + run, (col + 1) * height);
        for (let y = Math.max(row, top), y1 = Math.min(row + stop - a, bottom); y < y1; y++) {
          const o = 4 * ((y - top) * w + col);
          image.data[o] = r; image.data[o + 1] = g; image.data[o + 2] = b; image.data[o + 3] = 150;
        }
        a = stop;
      }
    }
    pos += run;
    on = !on;
  }
}

// a checkbox in the first cell of each instance row: ticked shows the instance; returns the set of shown ids
function instanceToggles(doc, redraw) {
  const shown = new Set(doc.instances.map((i) => i.id));
  for (const tr of $("instances").querySelectorAll("tbody tr")) {
    const id = Number(tr.dataset.id);
    const box = el("input");
    box.type = "checkbox";
    box.checked = true;
    box.title = "show this instance";
    box.addEventListener("click", (e) => e.stopPropagation());  // not a click on the row (which turns the slice)
    box.addEventListener("change", () => { if (box.checked) shown.add(id); else shown.delete(id); redraw(); });
    tr.firstChild.prepend(box);
  }
  return shown;
}

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
  const draw = () => {
    const image = new ImageData(w, h);
    doc.instances.forEach((inst, n) => {
      if (!inst.rle || !shown.has(inst.id)) return;
      paintRuns(image, rleCounts(inst.rle.counts), h, 0, h, INSTANCE_COLOURS[n % INSTANCE_COLOURS.length]);
    });
    canvas.getContext("2d").putImageData(image, 0, 0);
  };
  const shown = instanceToggles(doc, draw);
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
  // a row of the instance table shows where the instance is: the map zooms to its box, drawn as a frame
  let picked = null;
  for (const tr of $("instances").querySelectorAll("tbody tr")) {
    const box = (view.instances || {})[tr.dataset.id];
    if (!box) continue;
    tr.classList.add("pick");
    tr.title = "show this instance on the map";
    tr.addEventListener("click", () => {
      if (picked) picked.remove();
      picked = L.rectangle(box, { color: "#1f6feb", weight: 2, fill: false, interactive: false,
                                    className: "rscore-picked" }).addTo(map);
      map.fitBounds(box, { maxZoom: map.getBoundsZoom(bounds) + 4, padding: [20, 20] });
    });
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

// a video result with input.mp4 (option input_video, which the form asks for): the input plays and each frame's
// masks (masks.json, COCO RLE per processed frame; frame j of the input is record j) are drawn on a canvas over it
// in their track's colour, on every frame the player presents (requestVideoFrameCallback; seeks and time updates
// where it is missing); a checkbox per instance row (a track) and the opacity slider
let videoGeneration = 0;

async function showVideoTracks(doc, links) {
  const player = $("player");
  const canvas = $("video-canvas");
  const masks = await (await api(links.masks)).json();
  const frames = masks.frames || [];
  const { width, height } = masks.video;
  canvas.width = width;
  canvas.height = height;
  player.src = await blobUrl(links.input_video);
  player.hidden = false;
  canvas.hidden = false;
  const trackOf = Object.fromEntries((doc.instances || []).map((i) => [i.id, (i.attributes || {}).track_id]));
  let shown = new Set();
  let rate = 0, drawn = -2;
  const draw = (mediaTime, force = false) => {
    if (!rate && player.duration > 0 && Number.isFinite(player.duration)) rate = frames.length / player.duration;
    const j = rate ? Math.min(frames.length - 1, Math.max(0, Math.round(mediaTime * rate))) : 0;
    if (j === drawn && !force) return;
    drawn = j;
    const image = new ImageData(width, height);
    const on = new Set([...shown].map((id) => trackOf[id]));
    for (const inst of (frames[j] || {}).instances || []) {
      if (!on.has(inst.track_id) || !inst.rle) continue;
      paintRuns(image, rleCounts(inst.rle.counts), height, 0, height, trackColour(inst.track_id));
    }
    canvas.getContext("2d").putImageData(image, 0, 0);
    canvas.dataset.frame = String(j);
  };
  shown = instanceToggles(doc, () => draw(player.currentTime, true));
  const generation = ++videoGeneration;  // a later result stops this one's drawing
  const current = () => generation === videoGeneration;
  const perFrame = "requestVideoFrameCallback" in HTMLVideoElement.prototype;
  if (perFrame) {
    const onFrame = (_, meta) => {
      if (!current()) return;
      draw(meta.mediaTime);
      player.requestVideoFrameCallback(onFrame);
    };
    player.requestVideoFrameCallback(onFrame);
  }
  for (const event of perFrame ? ["loadeddata", "seeked"] : ["loadeddata", "seeked", "timeupdate"]) {
    player.addEventListener(event, () => { if (current()) draw(player.currentTime); });
  }
  bindOpacity((v) => { canvas.style.opacity = String(v); });
  $("overlay-caption").textContent = "the input video with each track in its colour "
    + "(tick the rows to show or hide them)";
}

async function showEvents(url) {
  const doc = await (await api(url)).json();
  const list = $("events");
  const player = $("player");
  const tracks = (doc.events || []).filter((e) => e.event === "track");
  const seek = (t) => { player.currentTime = t; player.play().catch(() => {}); };
  for (const event of tracks) {
    const li = el("li");
    const button = el("button", `#${event.track_id} ${event.label}: ${fmt(event.first_s, 3)}–${fmt(event.last_s, 3)} s`);
    button.type = "button";
    button.addEventListener("click", () => seek(event.first_s));
    li.appendChild(button);
    list.appendChild(li);
  }
  list.hidden = list.children.length === 0;
  if (tracks.length) await showTimeline(tracks, seek);
}

// the colour the overlay video gives a track (rscore.video.writers.track_colour: golden-ratio hue steps, HSV s 0.85 v 1)
function trackColour(id) {
  const h = (id * 0.618033988749895) % 1, s = 0.85, i = Math.floor(h * 6), f = h * 6 - i;
  const p = 1 - s, q = 1 - s * f, t = 1 - s * (1 - f);
  const [r, g, b] = [[1, t, p], [q, 1, p], [p, 1, t], [p, q, 1], [t, p, 1], [1, p, q]][i % 6];
  return [r, g, b].map((v) => Math.trunc(v * 255));
}

// the events on a timeline under the player: one lane per track, a bar from its first to its last frame, a playhead
// that follows the video; a click on a lane (its bar included) seeks to that time, the list below to a track's start
async function showTimeline(tracks, seek) {
  const player = $("player");
  if (!(player.duration > 0)) {
    await new Promise((resolve) => {
      player.addEventListener("loadedmetadata", resolve, { once: true });
      player.addEventListener("error", resolve, { once: true });
    });
  }
  const duration = player.duration;
  if (!(duration > 0) || !Number.isFinite(duration)) return;
  const box = $("timeline");
  const pct = (t) => `${Math.max(0, Math.min(100, (100 * t) / duration)).toFixed(3)}%`;
  tracks.slice(0, 40).forEach((event) => {
    const lane = el("div", null, "lane");
    lane.appendChild(el("span", `#${event.track_id}`, "lane-name"));
    const rail = el("div", null, "rail");
    rail.addEventListener("click", (e) => {
      const r = rail.getBoundingClientRect();
      seek(duration * Math.max(0, Math.min(1, (e.clientX - r.left) / r.width)));
    });
    const bar = el("div", null, "bar");
    bar.dataset.track = String(event.track_id);
    bar.title = `#${event.track_id} ${event.label}: ${fmt(event.first_s, 3)}–${fmt(event.last_s, 3)} s`;
    const [r, g, b] = trackColour(event.track_id);
    bar.style.background = `rgb(${r}, ${g}, ${b})`;
    bar.style.left = pct(event.first_s);
    // at least one frame wide, so that a one-frame event can be seen and clicked
    bar.style.width = `max(3px, ${pct(Math.max(0, event.last_s - event.first_s))})`;
    rail.appendChild(bar);
    lane.appendChild(rail);
    box.appendChild(lane);
  });
  const head = el("div", null, "playhead");
  box.appendChild(head);
  const place = () => { head.style.left = `calc(3.2rem + (100% - 3.2rem) * ${(player.currentTime / duration).toFixed(5)})`; };
  player.addEventListener("timeupdate", place);
  player.addEventListener("seeked", place);
  place();
  box.hidden = false;
}

document.addEventListener("DOMContentLoaded", init);
