// impasto's page: plain JavaScript, no build step, no outside resources.
"use strict";

const $ = (id) => document.getElementById(id);

// A token given once in the address (?token=...) is kept for this tab, then removed
// from the address bar so it is not copied along with a screenshot or a shared link.
const token = (() => {
  const params = new URLSearchParams(location.search);
  const given = params.get("token");
  if (given) {
    sessionStorage.setItem("impasto-token", given);
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : ""));
  }
  return sessionStorage.getItem("impasto-token");
})();

// <img> and EventSource cannot send headers: they carry the token in the query.
function withToken(path) {
  if (!token) return path;
  return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw new Error(detail);
  }
  return response.status === 204 ? null : response.json();
}

function showMessage(text) {
  const box = $("message");
  box.textContent = text || "";
  box.hidden = !text;
}

// -- pictures ---------------------------------------------------------------------------

const state = { content: null, styles: [], options: null, job: null, events: null, jobsKey: null };

function thumbnailUrl(file) {
  return URL.createObjectURL(file);
}

function setContent(file) {
  if (!file) return;
  state.content = file;
  const thumb = $("content-thumb");
  thumb.src = thumbnailUrl(file);
  thumb.hidden = false;
  $("content-name").textContent = file.name;
  $("content-drop").classList.add("filled");
}

function addStyles(files) {
  const max = state.options ? state.options.limits.max_styles : 5;
  for (const file of files) {
    if (state.styles.length >= max) {
      showMessage(`At most ${max} style pictures.`);
      break;
    }
    state.styles.push({ file, weight: 1 });
  }
  renderStyles();
}

function renderStyles() {
  const list = $("style-list");
  list.replaceChildren();
  state.styles.forEach((style, index) => {
    const item = document.createElement("li");
    const img = document.createElement("img");
    img.className = "thumb small";
    img.alt = "";
    img.src = thumbnailUrl(style.file);
    const name = document.createElement("span");
    name.className = "file-name";
    name.textContent = style.file.name;
    item.append(img, name);
    if (state.styles.length > 1) {
      // A blend: each style's share of the style target.
      const weight = document.createElement("input");
      weight.type = "range";
      weight.min = "0";
      weight.max = "1";
      weight.step = "0.05";
      weight.value = String(style.weight);
      weight.title = "weight in the blend";
      weight.setAttribute("aria-label", "weight of " + style.file.name);
      weight.addEventListener("input", () => { style.weight = Number(weight.value); });
      item.append(weight);
    }
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove";
    remove.textContent = "×";
    remove.title = "remove";
    remove.setAttribute("aria-label", "remove " + style.file.name);
    remove.addEventListener("click", () => { state.styles.splice(index, 1); renderStyles(); });
    item.append(remove);
    list.append(item);
  });
  $("style-drop").classList.toggle("filled", state.styles.length > 0);
}

function wireDrop(zone, input, onFiles) {
  input.addEventListener("change", () => { onFiles([...input.files]); input.value = ""; });
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => { event.preventDefault(); zone.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    zone.addEventListener(name, () => zone.classList.remove("over"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    const files = [...event.dataTransfer.files].filter((f) => f.type.startsWith("image/"));
    if (files.length) onFiles(files);
    else showMessage("Drop picture files (PNG, JPEG, WebP, ...).");
  });
}

// -- settings ---------------------------------------------------------------------------

// The slider is logarithmic (1 to 1000); two significant digits are all it can aim at.
function ratioToWeight(value) {
  return Number(Math.pow(10, Number(value)).toPrecision(2));
}

function showRatio() {
  $("ratio-out").textContent = "1 : " + ratioToWeight($("ratio").value);
}

function layerSetOf(layers) {
  const sets = state.options.layer_sets;
  for (const [name, set] of Object.entries(sets)) {
    if (set.join(",") === layers.join(",")) return name;
  }
  return "";
}

function fillSettings(settings) {
  $("size").value = settings.size;
  $("size").max = state.options.limits.max_size;
  $("ratio").value = String(Math.log10(Math.max(1, settings.style_weight / Math.max(settings.content_weight, 1e-9))));
  showRatio();
  const layers = $("layers");
  const custom = layers.querySelector("option[value='']");
  const set = layerSetOf(settings.style_layers);
  if (!set && !custom) {
    const option = document.createElement("option");
    option.value = "";
    option.textContent = "The preset's";
    layers.prepend(option);
  }
  layers.value = set;
  $("colour").value = settings.preserve_color || "";
  $("initial-iterations").value = settings.initial_iterations;
  $("iterations").value = settings.iterations;
  $("seed").value = settings.seed ?? "";
}

function currentPresetSettings() {
  const preset = $("preset").value;
  return preset ? state.options.preset_settings[preset] : state.options.defaults;
}

function collectSettings() {
  const base = currentPresetSettings();
  const settings = {
    size: Number($("size").value),
    style_weight: ratioToWeight($("ratio").value) * base.content_weight,
    preserve_color: $("colour").value || null,
    initial_iterations: Number($("initial-iterations").value),
    iterations: Number($("iterations").value),
  };
  if ($("layers").value) settings.style_layers = state.options.layer_sets[$("layers").value];
  if ($("seed").value !== "") settings.seed = Number($("seed").value);
  return settings;
}

async function loadOptions() {
  const options = await api("/api/options");
  state.options = options;
  const select = $("preset");
  for (const [name, description] of Object.entries(options.presets)) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name;
    option.title = description;
    select.append(option);
  }
  fillSettings(options.defaults);
  select.addEventListener("change", () => {
    fillSettings(currentPresetSettings());
    select.title = select.value ? options.presets[select.value] : "";
  });
}

// -- jobs -------------------------------------------------------------------------------

async function startJob(event) {
  event.preventDefault();
  showMessage("");
  if (!state.content) return showMessage("Choose a photo first.");
  if (!state.styles.length) return showMessage("Add at least one style picture.");
  const form = new FormData();
  form.append("content", state.content, state.content.name);
  for (const style of state.styles) form.append("style", style.file, style.file.name);
  form.append("style_weights", state.styles.map((s) => s.weight).join(","));
  if ($("preset").value) form.append("preset", $("preset").value);
  form.append("settings", JSON.stringify(collectSettings()));
  $("start").disabled = true;
  try {
    const job = await api("/api/jobs", { method: "POST", body: form });
    follow(job);
    refreshJobs();
  } catch (error) {
    showMessage(error.message);
  } finally {
    $("start").disabled = false;
  }
}

const ACTIVE = ["queued", "running"];
const STATUS_TEXT = {
  queued: "Waiting for its turn…",
  running: "Painting…",
  done: "Done.",
  cancelled: "Cancelled: the best picture so far is kept.",
  failed: "Failed.",
  interrupted: "Interrupted: the server stopped during this job. Run it again?",
};

function follow(job) {
  if (state.events) state.events.close();
  state.events = null;
  showJob(job);
  if (!ACTIVE.includes(job.status)) return;
  const events = new EventSource(withToken(job.links.events));
  state.events = events;
  events.addEventListener("job", (message) => {
    const update = JSON.parse(message.data);
    showJob(update);
    if (!ACTIVE.includes(update.status)) {
      events.close();
      refreshJobs();
    }
  });
  // The browser reconnects by itself; a job that ended meanwhile arrives as one event.
  events.onerror = () => { if (events.readyState === EventSource.CLOSED) state.events = null; };
}

function showJob(job) {
  state.job = job;
  const picture = $("picture");
  const p = job.progress;
  const source = job.links.result && !ACTIVE.includes(job.status)
    ? job.links.result + "?v=" + (job.finished || 0)
    : job.links.preview;
  if (source) {
    const url = withToken(source);
    if (picture.dataset.src !== url) {
      picture.dataset.src = url;
      picture.src = url;
    }
    picture.hidden = false;
    $("stage-empty").hidden = true;
  } else {
    picture.hidden = true;
    picture.removeAttribute("src");
    delete picture.dataset.src;
    $("stage-empty").hidden = false;
  }
  picture.classList.toggle("final", Boolean(job.links.result && !ACTIVE.includes(job.status)));
  picture.alt = job.status === "done" ? "the result" : "the picture so far";

  const progress = $("progress");
  progress.max = p ? p.total : 1;
  progress.value = p ? p.done : 0;
  let text = STATUS_TEXT[job.status];
  if (job.status === "running" && p) {
    text = `Painting: scale ${p.scale} of ${p.scales} (${p.size[0]}×${p.size[1]}), iteration ${p.done} of ${p.total}, ${p.elapsed.toFixed(0)} s`;
  } else if (job.status === "done" && job.seconds != null) {
    text = `Done in ${job.seconds.toFixed(1)} s.`;
  } else if (job.status === "failed" && job.error) {
    text = "Failed: " + job.error;
  }
  $("status").textContent = text;
  $("status").dataset.status = job.status;
  const losses = (p && p.losses) || job.losses;
  $("losses").textContent = losses
    ? Object.entries(losses).map(([k, v]) => `${k} ${Number(v).toPrecision(3)}`).join(" · ")
    : "";
  $("cancel").hidden = !ACTIVE.includes(job.status);
  $("rerun").hidden = ACTIVE.includes(job.status);
  showLink($("download"), job.links.result && !ACTIVE.includes(job.status) ? job.links.result + "?download=1" : null);
  showLink($("download-gif"), job.links.gif ? job.links.gif + "?download=1" : null);
}

function showLink(link, path) {
  link.hidden = !path;
  if (path) link.href = withToken(path);
  else link.removeAttribute("href");
}

async function act(path, method = "POST") {
  showMessage("");
  try {
    return await api(path, { method });
  } catch (error) {
    showMessage(error.message);
    return null;
  }
}

async function cancelJob() {
  if (!state.job) return;
  const job = await act(state.job.links.self + "/cancel");
  if (job) showJob(job);
}

async function rerunJob(id) {
  const job = await act(`/api/jobs/${id}/rerun`);
  if (job) { follow(job); refreshJobs(); }
}

async function deleteJob(id) {
  await act(`/api/jobs/${id}`, "DELETE");
  refreshJobs();
}

function formatTime(seconds) {
  return new Date(seconds * 1000).toLocaleString([], { dateStyle: "short", timeStyle: "short" });
}

async function refreshJobs() {
  let jobs;
  try {
    jobs = await api("/api/jobs");
  } catch (error) {
    return showMessage(error.message);
  }
  // Redrawn only when something changed, so thumbnails are not fetched again every few seconds.
  const key = JSON.stringify(jobs.map((j) => [j.id, j.status, j.finished]));
  if (key === state.jobsKey) return;
  state.jobsKey = key;
  const list = $("jobs");
  list.replaceChildren();
  $("jobs-empty").hidden = jobs.length > 0;
  for (const job of jobs.slice(0, 24)) {
    const item = document.createElement("li");
    item.dataset.status = job.status;
    const img = document.createElement("img");
    img.className = "thumb small";
    img.alt = "";
    img.loading = "lazy";
    img.src = withToken(job.links.result ? job.links.result + "?v=" + (job.finished || 0) : job.links.content);
    const info = document.createElement("div");
    info.className = "job-info";
    const badge = document.createElement("span");
    badge.className = "badge " + job.status;
    badge.textContent = job.status;
    const when = document.createElement("span");
    when.className = "muted";
    const names = [job.content.name, ...job.styles.map((s) => s.name)].join(" + ");
    when.textContent = `${formatTime(job.created)} · ${job.settings.size} px · ${names}`;
    info.append(badge, when);
    const buttons = document.createElement("div");
    buttons.className = "job-buttons";
    const open = button("Show", () => follow(job));
    buttons.append(open);
    if (ACTIVE.includes(job.status)) {
      buttons.append(button("Cancel", async () => { await act(job.links.self + "/cancel"); refreshJobs(); }));
    } else {
      buttons.append(button("Run again", () => rerunJob(job.id)));
      buttons.append(button("Delete", () => deleteJob(job.id)));
    }
    item.append(img, info, buttons);
    list.append(item);
  }
}

function button(text, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.addEventListener("click", onClick);
  return b;
}

// -- start ------------------------------------------------------------------------------

async function main() {
  wireDrop($("content-drop"), $("content-input"), (files) => setContent(files[0]));
  wireDrop($("style-drop"), $("style-input"), addStyles);
  $("ratio").addEventListener("input", showRatio);
  $("settings-form").addEventListener("submit", startJob);
  $("cancel").addEventListener("click", cancelJob);
  $("rerun").addEventListener("click", () => state.job && rerunJob(state.job.id));
  try {
    await loadOptions();
  } catch (error) {
    showMessage(error.message);
    $("start").disabled = true;
    return;
  }
  await refreshJobs();
  const running = (await api("/api/jobs")).find((job) => ACTIVE.includes(job.status));
  if (running) follow(running);
  // Other tabs and API clients add jobs too.
  setInterval(() => { if (!document.hidden) refreshJobs(); }, 5000);
}

main();
