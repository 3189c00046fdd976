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

const OFFLINE = "Can't reach the impasto server; is it still running?";

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers.Authorization = "Bearer " + token;
  let response;
  try {
    response = await fetch(path, Object.assign({}, options, { headers }));
  } catch (_) {
    // fetch's own "Failed to fetch" says nothing to an artist, and would stay after the server is back.
    state.offline = true;
    throw Object.assign(new Error(OFFLINE), { offline: true });
  }
  if (state.offline) {
    state.offline = false;
    if ($("message").textContent === OFFLINE) showMessage("");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw Object.assign(new Error(detail), { status: response.status });
  }
  return response.status === 204 ? null : response;
}

async function apiJson(path, options = {}) {
  const response = await api(path, options);
  return response && response.json();
}

function showMessage(text) {
  const box = $("message");
  box.textContent = text || "";
  box.hidden = !text;
}

// A message about the pictures or the settings is out of date once they change; the
// server being out of reach is not, and goes when it answers again.
function clearMessage() {
  if ($("message").textContent !== OFFLINE) showMessage("");
}

// -- pictures ---------------------------------------------------------------------------

// filled: the settings the form was last filled from; jobSettings: the same when they are a
// job's ("Use these settings"), sent whole so the fields the form does not show are repeated too.
const state = { content: null, contentSize: null, styles: [], options: null, job: null, events: null, jobsKey: null,
                fromJob: null, offline: false, filled: null, jobSettings: null, ratioFilled: null };

function thumbnailUrl(file) {
  return URL.createObjectURL(file);
}

// The server decides from the contents; this only catches the obvious (a text file chosen
// by mistake) before an upload. An empty type (some systems give none) is left to the server.
function isPicture(file) {
  return !file.type || file.type.startsWith("image/");
}

function notAPicture(file) {
  showMessage(`${file.name} is not a picture: choose a PNG, JPEG, WebP, GIF, BMP or TIFF file.`);
}

// fromJob: the pictures are a job's stored inputs, so Paint can re-run that job instead of uploading them.
function setContent(file, fromJob = false) {
  if (!file) return;
  clearMessage();
  if (!isPicture(file)) return notAPicture(file);
  if (!fromJob) state.fromJob = null;
  state.content = file;
  state.contentSize = null;
  const thumb = $("content-thumb");
  thumb.onload = () => { state.contentSize = [thumb.naturalWidth, thumb.naturalHeight]; updateSteps(); };
  thumb.src = thumbnailUrl(file);
  thumb.hidden = false;
  $("content-name").textContent = file.name;
  $("content-drop").classList.add("filled");
}

function addStyles(files) {
  const max = state.options ? state.options.limits.max_styles : 5;
  clearMessage();
  for (const file of files) {
    if (!isPicture(file)) { notAPicture(file); continue; }
    if (state.styles.length >= max) {
      showMessage(`At most ${max} style pictures.`);
      break;
    }
    state.fromJob = null;
    state.styles.push({ file, weight: 1 });
  }
  renderStyles();
}

function renderStyles() {
  const list = $("style-list");
  list.replaceChildren();
  // A job's blend may weigh a picture above 1: the sliders reach its largest weight.
  const top = Math.max(1, ...state.styles.map((s) => s.weight));
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
      weight.max = String(top);
      weight.step = "0.05";
      weight.value = String(style.weight);
      weight.title = "weight in the blend";
      weight.setAttribute("aria-label", "weight of " + style.file.name);
      weight.addEventListener("input", () => { style.weight = Number(weight.value); clearMessage(); });
      item.append(weight);
    }
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove";
    remove.textContent = "×";
    remove.title = "remove";
    remove.setAttribute("aria-label", "remove " + style.file.name);
    remove.addEventListener("click", () => { clearMessage(); state.fromJob = null; state.styles.splice(index, 1); renderStyles(); });
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

// -- the plan of a run: a mirror of Settings.scale_count and scales.plan_scales/plan_iterations --------

function scaleCount(s) {
  if (!s.multiscale || s.size <= s.min_size * 0.99) return 1;
  return 1 + Math.floor(Math.log(s.size / (s.min_size * 0.99)) / Math.log(s.scale_factor));
}

function fitLongSide(width, height, side) {
  return width >= height ? [side, Math.max(1, Math.round(height * side / width))]
    : [Math.max(1, Math.round(width * side / height)), side];
}

function minSide(s) {
  return [...(s.content_layers || []), ...(s.style_layers || [])].includes("pool5") ? 32 : 16;
}

// [[w, h], ...] coarse to fine; coarse scales too thin for the network are left out, as in the run.
function planScales(width, height, s) {
  const sides = [s.size];
  let side = s.size;
  for (let i = 1; i < scaleCount(s); i++) { side /= s.scale_factor; sides.push(Math.round(side)); }
  const sizes = sides.reverse().map((long) => fitLongSide(width, height, long));
  return sizes.slice(0, -1).filter((wh) => Math.min(...wh) >= minSide(s)).concat(sizes.slice(-1));
}

function planIterations(scales, s) {
  if (scales === 1) return [s.multiscale ? s.initial_iterations : s.iterations];
  const first = Math.max(s.initial_iterations, 0), last = Math.max(s.iterations, 0);
  const out = [];
  for (let i = 0; i < scales; i++) {
    const t = i / (scales - 1);
    out.push(Math.round(first === 0 || last === 0 ? first + (last - first) * t : first * Math.pow(last / first, t)));
  }
  return out;
}

// -- settings ---------------------------------------------------------------------------

// The slider is logarithmic (1 to 1000); two significant digits are all it can aim at.
function ratioToWeight(value) {
  return Number(Math.pow(10, Number(value)).toPrecision(2));
}

// Untouched, the slider stands for the exact weights the form was filled with (it cannot aim
// at 1234, nor below 1 : 1); once moved, for the weight it points at.
function ratioMoved() {
  return $("ratio").value !== state.ratioFilled;
}

function showRatio() {
  const s = state.filled;
  const ratio = s && !ratioMoved() ? Number((s.style_weight / Math.max(s.content_weight, 1e-9)).toPrecision(2))
    : ratioToWeight($("ratio").value);
  const text = "1 : " + ratio;
  $("ratio-out").textContent = text;
  $("ratio").setAttribute("aria-valuetext", text);  // not the slider's log-scale number
}

const LAYER_NAMES = { gatys: "balanced", fine: "fine texture", coarse: "large strokes", all: "all layers" };
const FLAT_NAMES = { 0.1: "painted freely", 1: "held to the photo" };
// The run's notes advise a setting as the API names it; the page names its own control instead.
const PAGE_ADVICE = { "flat_content=1": "Flat areas: Held to the photo" };
const COLOUR_NAMES = { luminance: "the photo's (luminance)", histogram: "the photo's (histogram)" };
// The server's descriptions are for people who read papers; these are for the page.
// Each is given the size a job will use: the server's --size replaces a preset's, --max-size caps it.
const PRESET_TEXT = {
  gatys2015: () => "The original 2015 method: paints at full size only, starting from noise. Slow: it needs many steps.",
  novak2016: () => "A 2016 refinement: copies the painting's texture at every level of detail, for richer strokes.",
  fast: (size) => `A quick preview: ${size} and few steps.`,
  hq: (size) => `A large, careful picture: ${size} and many steps. Minutes with a graphics card; long on a processor alone.`,
};
const CPU_SIZE = 512;  // above this, a CPU-only server takes many minutes a picture

function layerSetOf(layers) {
  const sets = state.options.layer_sets;
  for (const [name, set] of Object.entries(sets)) {
    if (set.join(",") === (layers || []).join(",")) return name;
  }
  return "";
}

// A size over the server's limit would only be refused: the form offers the largest allowed.
function usableSize(settings) {
  return Math.min(settings.size, state.options.limits.max_size);
}

function fillSettings(settings, fromJob = false) {
  state.filled = settings;
  state.jobSettings = fromJob ? settings : null;
  $("size").value = usableSize(settings);
  $("size").max = state.options.limits.max_size;
  $("ratio").value = String(Math.log10(Math.max(1, settings.style_weight / Math.max(settings.content_weight, 1e-9))));
  state.ratioFilled = $("ratio").value;  // as the slider rounded it
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
  fillFlat(settings.flat_content);
  $("initial-iterations").value = settings.initial_iterations;
  $("iterations").value = settings.iterations;
  $("seed").value = settings.seed ?? "";
  updateSteps();
}

// A share the API was sent that the page does not offer is shown as the job's, not lost.
function fillFlat(value) {
  const flat = $("flat");
  const shown = value == null ? "" : String(value);
  if (![...flat.options].some((option) => option.value === shown)) {
    const option = document.createElement("option");
    option.value = shown;
    option.textContent = `${shown} (the job's)`;
    flat.append(option);
  }
  flat.value = shown;
}

function currentPresetSettings() {
  const preset = $("preset").value;
  return preset ? state.options.preset_settings[preset] : state.options.defaults;
}

function collectSettings() {
  const base = state.filled || currentPresetSettings();
  const settings = {
    size: Number($("size").value),
    style_weight: ratioMoved() ? ratioToWeight($("ratio").value) * base.content_weight : base.style_weight,
    preserve_color: $("colour").value || null,
    flat_content: $("flat").value === "" ? null : Number($("flat").value),
    initial_iterations: Number($("initial-iterations").value),
    iterations: Number($("iterations").value),
    seed: $("seed").value === "" ? null : Number($("seed").value),
  };
  if ($("layers").value) settings.style_layers = state.options.layer_sets[$("layers").value];
  return state.jobSettings ? Object.assign({}, state.jobSettings, settings) : settings;
}

// What the form shows, in its own words: to tell the artist what a preset changed.
function formValues() {
  const text = (id) => { const el = $(id); return el.tagName === "SELECT" ? el.selectedOptions[0]?.textContent : el.value; };
  return {
    Size: text("size"), Seed: text("seed") || "none", "Content : style": $("ratio-out").textContent,
    "Style layers": text("layers"), Colours: text("colour"), "Flat areas": text("flat"), "Steps coarse": text("initial-iterations"),
    "Steps fine": text("iterations"),
  };
}

function showPreset() {
  const name = $("preset").value;
  if (!name) {
    $("preset-note").textContent = "The server's usual settings. A preset is a starting point: it fills in the settings below.";
    return;
  }
  const s = state.options.preset_settings[name];
  const size = usableSize(s) + " px" + (s.size > usableSize(s) ? " (the largest this server allows)" : "");
  $("preset-note").textContent = PRESET_TEXT[name] ? PRESET_TEXT[name](size) : state.options.presets[name];
}

// Which of the two step fields a run uses (finding the same plan the run will), and the size advice.
function updateSteps() {
  if (!state.options) return;
  const s = Object.assign({}, currentPresetSettings(), collectSettings());
  if (!(s.size > 0)) return;
  const [w, h] = state.contentSize || [s.size, s.size];
  const scales = planScales(w, h, s).length;
  let coarse = "", fine = "";
  if (!s.multiscale) coarse = "Not used: this preset paints at full size only, so the fine steps are all of it.";
  else if (scales === 1 && scaleCount(s) > 1) {
    fine = "Not used: this photo is too long and narrow for a smaller first pass at this size; it is painted in one pass, with the coarse steps.";
  } else if (scales === 1) {
    fine = `Not used: a picture this small (under ${Math.ceil(s.min_size * s.scale_factor * 0.99)} px) is painted in one pass, with the coarse steps.`;
  }
  for (const [id, note] of [["initial-iterations", coarse], ["iterations", fine]]) {
    $(id).disabled = Boolean(note);
    $(id + "-note").textContent = note;
    $(id + "-note").hidden = !note;
  }
  const warning = $("size-warning");
  const slow = state.options.device === "cpu" && s.size > CPU_SIZE;
  warning.hidden = !slow;
  warning.textContent = slow
    ? `This server has no graphics card: at ${s.size} px a picture may take many minutes, or more. ${CPU_SIZE} px or less is quicker.`
    : "";
}

async function loadOptions() {
  const options = await apiJson("/api/options");
  state.options = options;
  const select = $("preset");
  for (const name of Object.keys(options.presets)) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name;
    select.append(option);
  }
  fillSettings(options.defaults);
  select.addEventListener("change", () => {
    const before = formValues();
    fillSettings(currentPresetSettings());
    const after = formValues();
    const changed = Object.keys(after).filter((k) => before[k] !== after[k]).map((k) => `${k} ${before[k]} → ${after[k]}`);
    $("preset-changes").textContent = changed.length ? `The preset changed: ${changed.join("; ")}.` : "The preset changed nothing shown here.";
    showPreset();
  });
  for (const id of ["size", "initial-iterations", "iterations"]) $(id).addEventListener("input", updateSteps);
  $("settings-form").addEventListener("input", clearMessage);
}

// -- jobs -------------------------------------------------------------------------------

function setStatus(text, status = "") {
  $("status").textContent = text;
  $("status").dataset.status = status;
}

async function startJob(event) {
  event.preventDefault();
  showMessage("");
  if (!state.content) return showMessage("Choose a photo first.");
  if (!state.styles.length) return showMessage("Add at least one style picture.");
  const weights = state.styles.map((s) => s.weight);
  if (weights.every((w) => w === 0)) return showMessage("Give at least one style picture a weight above 0 (its slider).");
  const settings = collectSettings();
  const preset = $("preset").value;
  $("start").disabled = true;
  // The job on show may still be streaming its progress, which would write over this one's.
  if (state.events) state.events.close();
  state.events = null;
  try {
    let job = null;
    if (state.fromJob) {
      // The pictures are that job's: the server has them, so nothing is uploaded again.
      setStatus("Starting…", "queued");
      try {
        job = await apiJson(`/api/jobs/${state.fromJob}/rerun`, {
          method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ preset: preset || null, settings, style_weights: weights }),
        });
      } catch (error) {
        if (error.status !== 404) throw error;
        state.fromJob = null;  // deleted meanwhile: upload the copies the page holds
      }
    }
    if (!job) {
      setStatus("Uploading the pictures…", "queued");
      const form = new FormData();
      form.append("content", state.content, state.content.name);
      for (const style of state.styles) form.append("style", style.file, style.file.name);
      form.append("style_weights", weights.join(","));
      if (preset) form.append("preset", preset);
      form.append("settings", JSON.stringify(settings));
      job = await apiJson("/api/jobs", { method: "POST", body: form });
    }
    follow(job, true);
    refreshJobs();
  } catch (error) {
    showMessage(error.message);
    if (state.job) follow(state.job);  // and its progress again, if it is still going
    else setStatus("No job yet.");
  } finally {
    $("start").disabled = false;
  }
}

const ACTIVE = ["queued", "running"];

function statusText(job) {
  const p = job.progress;
  switch (job.status) {
    case "queued":
      return job.ahead ? `Waiting for ${job.ahead} job${job.ahead > 1 ? "s" : ""} ahead of it…` : "Waiting for its turn…";
    case "running":
      if (!p) return "Loading the network and the pictures…";
      return `Painting: step ${p.done} of ${p.total}, ${formatSeconds(p.elapsed)} so far` + timeLeftText(job) + ".";
    case "done":
      return job.seconds != null ? `Done in ${formatSeconds(job.seconds)}.` : "Done.";
    case "cancelled":
      if (job.result) return "Cancelled: the best picture so far is kept.";
      return job.started ? "Cancelled before the first picture." : "Cancelled before it started.";
    case "failed":
      return job.error ? "Failed: " + job.error : "Failed.";
    case "interrupted":
      return "Interrupted: the server stopped during this job" + (job.result ? " (its best picture so far is kept)" : "")
        + ". Run again makes a new job from its pictures.";
    default:
      return job.status;
  }
}

function formatSeconds(seconds) {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

// Seconds left: the time so far per unit of work, each step's work being its scale's pixels.
function estimateSecondsLeft(job) {
  const p = job.progress;
  if (!p || !p.steps || !p.step || p.elapsed < 1) return null;
  const plan = planScales(job.content.size[0], job.content.size[1], job.settings);
  if (plan.length !== p.scales) return null;  // not the plan the run made: no guess rather than a wrong one
  const iterations = planIterations(plan.length, job.settings);
  const work = plan.map(([w, h], i) => w * h * iterations[i]);
  const total = work.reduce((a, b) => a + b, 0);
  const done = work.slice(0, p.scale - 1).reduce((a, b) => a + b, 0) + work[p.scale - 1] * p.step / p.steps;
  return done > 0 && total >= done ? p.elapsed * (total - done) / done : null;
}

function timeLeftText(job) {
  const left = estimateSecondsLeft(job);
  return left == null ? "" : `, about ${formatSeconds(Math.max(1, left))} left`;
}

// The settings an artist tells jobs apart by, in the page's words.
function describeSettings(job) {
  const s = job.settings;
  const parts = [];
  if (job.request && job.request.preset) parts.push("preset " + job.request.preset);
  parts.push(`${s.size} px`);
  parts.push("content : style 1 : " + Number((s.style_weight / Math.max(s.content_weight, 1e-9)).toPrecision(2)));
  parts.push("layers " + (LAYER_NAMES[state.options ? layerSetOf(s.style_layers) : ""] || (s.style_layers || []).join(",")));
  parts.push("colours " + (COLOUR_NAMES[s.preserve_color] || (s.preserve_color ? s.preserve_color : "the painting's")));
  if (s.flat_content != null) parts.push("flat areas " + (FLAT_NAMES[s.flat_content] || s.flat_content));
  const [w, h] = job.content.size;
  parts.push("steps " + planIterations(planScales(w, h, s).length, s).join("→"));
  parts.push(s.seed == null ? "random seed" : "seed " + s.seed);
  if (job.styles.length > 1) parts.push("blend " + job.styles.map((x) => x.weight).join(" : "));
  return parts.join(" · ");
}

function scrollToResult() {
  const card = $("result-title").closest("section");
  if (card.scrollIntoView) card.scrollIntoView({ block: "nearest", behavior: "smooth" });
}

function follow(job, scroll = false) {
  if (state.events) state.events.close();
  state.events = null;
  showJob(job);
  if (scroll) scrollToResult();
  if (!ACTIVE.includes(job.status)) return;
  const events = new EventSource(withToken(job.links.events));
  state.events = events;
  events.addEventListener("job", (message) => {
    const update = JSON.parse(message.data);
    if (state.events !== events) return;
    showJob(update);
    if (!ACTIVE.includes(update.status)) {
      events.close();
      refreshJobs();
    }
  });
  events.addEventListener("deleted", () => {
    events.close();
    if (state.job && state.job.id === job.id) resetResult();
  });
  // The browser reconnects by itself; a job that ended meanwhile arrives as one event.
  events.onerror = () => { if (events.readyState === EventSource.CLOSED) state.events = null; };
}

function resetResult() {
  if (state.events) state.events.close();
  state.events = null;
  state.job = null;
  const picture = $("picture");
  picture.hidden = true;
  picture.removeAttribute("src");
  delete picture.dataset.src;
  $("stage-empty").hidden = false;
  $("progress").max = 1;
  $("progress").value = 0;
  setStatus("No job yet.");
  for (const id of ["result-settings", "losses", "scale-info"]) $(id).textContent = "";
  for (const id of ["cancel", "rerun", "reuse"]) $(id).hidden = true;
  showLink($("download"), null);
  showLink($("download-gif"), null);
}

function showJob(job) {
  state.job = job;
  const picture = $("picture");
  const p = job.progress;
  const finished = !ACTIVE.includes(job.status);
  const source = job.links.result && finished ? job.links.result + "?v=" + (job.finished || 0) : job.links.preview;
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
  picture.classList.toggle("final", Boolean(job.links.result && finished));
  picture.alt = job.status === "done" ? "the result" : "the picture so far";

  const progress = $("progress");
  progress.max = p ? p.total : 1;
  progress.value = p ? p.done : 0;
  setStatus(statusText(job), job.status);
  const names = [job.content.name, ...job.styles.map((s) => s.name)].join(" + ");
  $("result-settings").textContent = `${names} · ${describeSettings(job)}`;
  // What the run decided for itself that changes the look (a flat background painted), as sentences.
  const notes = job.notes || [];
  $("notes").hidden = !notes.length;
  const worded = notes.map((note) => Object.entries(PAGE_ADVICE).reduce((text, [api, page]) => text.replaceAll(api, page), note));
  $("notes").textContent = worded.map((note) => note[0].toUpperCase() + note.slice(1) + ".").join(" ");
  $("scale-info").textContent = p ? `Scale ${p.scale} of ${p.scales} (${p.size[0]}×${p.size[1]} px)` : "";
  const losses = (p && p.losses) || job.losses;
  $("losses").textContent = losses
    ? "Losses (lower is closer): " + Object.entries(losses).map(([k, v]) => `${k} ${Number(v).toPrecision(3)}`).join(" · ")
    : "";
  $("cancel").hidden = !ACTIVE.includes(job.status);
  $("rerun").hidden = !finished;
  $("reuse").hidden = false;
  showLink($("download"), job.links.result && finished ? job.links.result + "?download=1" : null);
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
    return { ok: true, job: await apiJson(path, { method }) };
  } catch (error) {
    showMessage(error.message);
    return { ok: false };
  }
}

async function cancelJob(job) {
  const { ok, job: update } = await act(job.links.self + "/cancel");
  if (ok && state.job && state.job.id === update.id) showJob(update);
  refreshJobs();
}

async function rerunJob(id) {
  const { ok, job } = await act(`/api/jobs/${id}/rerun`);
  if (ok) { follow(job, true); refreshJobs(); }
}

async function deleteJob(job) {
  const names = [job.content.name, ...job.styles.map((s) => s.name)].join(" + ");
  if (!confirm(`Delete this job (${names}) and its picture?`)) return;
  const { ok } = await act(`/api/jobs/${job.id}`, "DELETE");
  if (ok && state.job && state.job.id === job.id) resetResult();
  refreshJobs();
}

async function fetchFile(path, name) {
  const blob = await (await api(path)).blob();
  return new File([blob], name, { type: blob.type || "image/png" });
}

// The job's pictures and settings into the form: change one thing, press Paint.
async function useSettings(job) {
  showMessage("");
  try {
    const content = await fetchFile(job.links.content, job.content.name);
    const styles = await Promise.all(job.styles.map((s, i) => fetchFile(`${job.links.self}/inputs/style-${i}`, s.name)));
    const preset = job.request && job.request.preset;
    $("preset").value = preset && state.options.presets[preset] ? preset : "";
    showPreset();
    $("preset-changes").textContent = "";
    setContent(content, true);
    state.styles = styles.map((file, i) => ({ file, weight: job.styles[i].weight }));
    renderStyles();
    fillSettings(job.settings, true);
    state.fromJob = job.id;
    $("settings-title").scrollIntoView({ block: "nearest", behavior: "smooth" });
  } catch (error) {
    showMessage("Could not load this job's pictures: " + error.message);
  }
}

function formatTime(seconds) {
  return new Date(seconds * 1000).toLocaleString([], { dateStyle: "short", timeStyle: "short" });
}

async function refreshJobs() {
  let jobs;
  try {
    jobs = await apiJson("/api/jobs");
  } catch (error) {
    showMessage(error.message);
    return null;
  }
  // The job on show was deleted elsewhere (another tab, the clean-up): nothing of it is left to show.
  if (state.job && !ACTIVE.includes(state.job.status) && !jobs.some((j) => j.id === state.job.id)) resetResult();
  // Redrawn only when something changed, so thumbnails are not fetched again every few seconds.
  const key = JSON.stringify(jobs.map((j) => [j.id, j.status, j.finished, j.ahead]));
  if (key === state.jobsKey) return jobs;
  state.jobsKey = key;
  const list = $("jobs");
  list.replaceChildren();
  $("jobs-empty").hidden = jobs.length > 0;
  for (const job of jobs.slice(0, 24)) {
    const item = document.createElement("li");
    item.dataset.status = job.status;
    item.dataset.id = job.id;
    const img = document.createElement("img");
    img.className = "thumb small";
    img.alt = "";
    img.loading = "lazy";
    img.src = withToken(job.links.result ? job.links.result + "?v=" + (job.finished || 0) : job.links.content);
    const info = document.createElement("div");
    info.className = "job-info";
    const badge = document.createElement("span");
    badge.className = "badge " + job.status;
    badge.textContent = job.status === "queued" && job.ahead ? `queued (${job.ahead} ahead)` : job.status;
    const when = document.createElement("span");
    when.className = "muted";
    const names = [job.content.name, ...job.styles.map((s) => s.name)].join(" + ");
    when.textContent = `${formatTime(job.created)} · ${names}`;
    const settings = document.createElement("span");
    settings.className = "muted job-settings";
    settings.textContent = describeSettings(job);
    info.append(badge, when, settings);
    const buttons = document.createElement("div");
    buttons.className = "job-buttons";
    buttons.append(button("Show", () => follow(job, true)));
    buttons.append(button("Use these settings", () => useSettings(job)));
    if (ACTIVE.includes(job.status)) {
      buttons.append(button("Cancel", () => cancelJob(job)));
    } else {
      buttons.append(button("Run again", () => rerunJob(job.id)));
      buttons.append(button("Delete", () => deleteJob(job)));
    }
    item.append(img, info, buttons);
    list.append(item);
  }
  return jobs;
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
  $("cancel").addEventListener("click", () => state.job && cancelJob(state.job));
  $("rerun").addEventListener("click", () => state.job && rerunJob(state.job.id));
  $("reuse").addEventListener("click", () => state.job && useSettings(state.job));
  try {
    await loadOptions();
  } catch (error) {
    showMessage(error.message);
    $("start").disabled = true;
    return;
  }
  const jobs = (await refreshJobs()) || [];
  // The job painting now, else the next in line (the list is newest first).
  const next = jobs.find((job) => job.status === "running") || jobs.filter((job) => job.status === "queued").pop();
  if (next) follow(next);
  // Other tabs and API clients add jobs too.
  setInterval(() => { if (!document.hidden) refreshJobs(); }, 5000);
}

main();
