// The gan-serve page: generate, explore the latent space, upscale — through the public API only
// (GET /models, POST /generate, POST /upscale), so everything here can be scripted with curl.

const KEY_STORAGE = "gan-serve-api-key";
const MAX_JS_SEED = 2 ** 53; // seeds below this are exact in JavaScript numbers

const $ = (id) => document.getElementById(id);

// -- API calls -------------------------------------------------------------------------------------

/** An error the API answered with: its status, code and own message. */
class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** The API's `{"error": {"code", "message"}}` from a failed response's body text. */
function apiError(status, text) {
  try {
    const error = JSON.parse(text).error;
    if (error && typeof error.message === "string") return new ApiError(status, error.code, error.message);
  } catch {
    // not JSON: fall through to the raw text
  }
  return new ApiError(status, `http_${status}`, text || `HTTP ${status}`);
}

async function api(path, { method = "GET", body, accept } = {}) {
  const headers = { ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (accept) headers.Accept = accept;
  const response = await fetch(path, { method, headers, body });
  if (!response.ok) throw apiError(response.status, await response.text());
  return response;
}

/** A /generate body as JSON text; seeds go in as typed digits, exact even above 2**53. */
function generateBody(fields, seeds = {}) {
  let text = JSON.stringify(fields);
  for (const [placeholder, value] of Object.entries(seeds)) {
    const raw = /^\d+$/.test(value) ? value : JSON.stringify(value.trim() === "" ? null : numberOr(value));
    text = text.replace(JSON.stringify(placeholder), () => raw);
  }
  return text;
}

function numberOr(text) {
  const number = Number(text);
  return text.trim() !== "" && Number.isFinite(number) ? number : text;
}

// -- Errors and the API key ------------------------------------------------------------------------

function showError(error) {
  if (error instanceof ApiError && error.status === 401) {
    askForKey(error.message);
    return;
  }
  $("error-status").textContent = error instanceof ApiError ? `${error.status}` : "Error";
  $("error-message").textContent = error.message;
  $("error-code").textContent = error instanceof ApiError ? error.code : "";
  $("error").hidden = false;
  $("error").scrollIntoView({ block: "nearest" });
}

function clearError() {
  $("error").hidden = true;
}

function askForKey(message) {
  $("key-message").textContent = message;
  $("key-form").hidden = false;
  $("api-key").focus();
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
  $("api-key").value = "";
  $("key-form").hidden = true;
  loadModels();
});

// -- Models ----------------------------------------------------------------------------------------

let models = [];

function describe(model) {
  if (model.kind === "upscaler") return `${model.name} — ×${model.scale}`;
  const colour = model.channels === 1 ? "grey" : "RGB";
  const classes = model.classes ? `, ${model.classes} classes` : "";
  return `${model.name} — ${model.width}×${model.height} ${colour}${classes}`;
}

function fillModels(select, kind, preferred) {
  const previous = select.value;
  select.replaceChildren();
  for (const model of models.filter((m) => m.kind === kind)) {
    const option = new Option(describe(model) + (model.demo_weights ? " (demo weights)" : ""), model.name);
    select.add(option);
  }
  select.value = previous || preferred || "";
  if (!select.value && select.options.length) select.selectedIndex = 0;
  select.dispatchEvent(new Event("change"));
}

function selected(select) {
  return models.find((m) => m.name === select.value);
}

function showModelInfo(select, info) {
  const model = selected(select);
  info.replaceChildren();
  if (!model) return;
  if (model.demo_weights) {
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = "demo weights";
    badge.title = "untrained: the outputs only show the pipeline works";
    info.append(badge, " ");
  }
  const provider = model.provider.replace("ExecutionProvider", "");
  info.append(`${model.kind} · ${model.description || describe(model)} · runs on ${provider}`);
}

function fillClasses(select, model, spread) {
  const picker = select.closest(".class-picker");
  const previous = select.dataset.model === model?.name ? select.value : null;
  select.dataset.model = model?.name ?? "";
  picker.hidden = !model || !model.classes;
  select.replaceChildren();
  if (picker.hidden) return;
  if (spread) select.add(new Option("spread over the classes", ""));
  for (let index = 0; index < model.classes; index++) {
    const name = model.class_names ? model.class_names[index] : null;
    select.add(new Option(name ? `${index} — ${name}` : `${index}`, `${index}`));
  }
  if (previous !== null) select.value = previous;
}

async function loadModels() {
  clearError();
  try {
    const listing = await (await api("/models")).json();
    models = listing.models;
    fillModels($("gen-model"), "generator", listing.defaults.generator);
    fillModels($("explore-model"), "generator", listing.defaults.generator);
    fillModels($("up-model"), "upscaler", listing.defaults.upscaler);
    document.body.dataset.ready = "true";
  } catch (error) {
    showError(error);
    if (error instanceof ApiError && error.status === 503) setTimeout(loadModels, 2000);
  }
}

// -- Tabs ------------------------------------------------------------------------------------------

const TABS = ["generate", "explore", "upscale"];

function showTab() {
  const current = TABS.includes(location.hash.slice(1)) ? location.hash.slice(1) : "generate";
  for (const name of TABS) {
    $(name).hidden = name !== current;
    $(`tab-${name}`).setAttribute("aria-selected", String(name === current));
  }
}

window.addEventListener("hashchange", showTab);

// -- Seeds -----------------------------------------------------------------------------------------

function randomSeed() {
  const [high, low] = crypto.getRandomValues(new Uint32Array(2));
  return String((high % 2 ** 21) * 2 ** 32 + low); // below 2**53
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const field = Object.assign(document.createElement("textarea"), { value: text });
    document.body.append(field);
    field.select();
    document.execCommand("copy");
    field.remove();
  }
}

/** Pixel-art scaling: a whole multiple of the image's width close to `target` CSS pixels. */
function cellSize(width, target = 96) {
  return width * Math.max(1, Math.round(target / width));
}

function download(url, filename) {
  const link = Object.assign(document.createElement("a"), { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
}

function setBlobUrl(element, attribute, blob) {
  const old = element.getAttribute(attribute);
  if (old && old.startsWith("blob:")) URL.revokeObjectURL(old);
  element.setAttribute(attribute, URL.createObjectURL(blob));
}

// -- Generate --------------------------------------------------------------------------------------

$("gen-model").addEventListener("change", () => {
  showModelInfo($("gen-model"), $("gen-model-info"));
  fillClasses($("gen-class"), selected($("gen-model")), true);
});

$("gen-truncation").addEventListener("input", () => {
  const value = Number($("gen-truncation").value);
  $("gen-truncation-value").textContent = value > 0 ? value.toFixed(1) : "off";
});

$("gen-reroll").addEventListener("click", () => {
  $("gen-seed").value = randomSeed();
  $("generate-form").requestSubmit();
});

$("gen-copy").addEventListener("click", async () => {
  await copyText($("gen-seed").value);
  $("gen-status").textContent = `Seed ${$("gen-seed").value} copied.`;
});

$("generate-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  clearError();
  const model = selected($("gen-model"));
  const fields = { model: model?.name, n: numberOr($("gen-n").value), seed: "@seed" };
  const truncation = Number($("gen-truncation").value);
  if (truncation > 0) fields.truncation = truncation;
  if (model?.classes && $("gen-class").value !== "") fields.label = Number($("gen-class").value);
  const seedText = $("gen-seed").value.trim();
  const body = seedText === "" ? JSON.stringify({ ...fields, seed: undefined }) : generateBody(fields, { "@seed": seedText });
  $("gen-submit").disabled = true;
  $("gen-status").textContent = "Generating…";
  const started = performance.now();
  try {
    const result = await (await api("/generate", { method: "POST", body, accept: "application/json" })).json();
    $("gen-seed").value = String(result.seed);
    showImages(result, model);
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    $("gen-status").textContent = `${result.n} images from seed ${result.seed} by ${result.model} in ${seconds} s. Click one to download it.`;
  } catch (error) {
    $("gen-status").textContent = "";
    showError(error);
  } finally {
    $("gen-submit").disabled = false;
  }
});

function showImages(result, model) {
  const grid = $("gen-grid");
  grid.replaceChildren();
  grid.style.setProperty("--cell", `${cellSize(model.width)}px`);
  $("gen-picked").textContent = "";
  for (const image of result.images) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "cell";
    const label = result.labels ? ` · class ${result.labels[image.index]}` : "";
    button.title = `seed ${result.seed} · image ${image.index}${label}`;
    const img = document.createElement("img");
    img.src = `data:${image.media_type};base64,${image.data}`;
    img.alt = button.title;
    img.dataset.index = String(image.index);
    button.append(img);
    button.addEventListener("click", () => pick(result, image, button, label));
    grid.append(button);
  }
}

function pick(result, image, button, label) {
  for (const cell of $("gen-grid").children) cell.classList.toggle("picked", cell === button);
  const filename = `${result.model}-seed${result.seed}-${image.index}.${image.media_type.split("/")[1]}`;
  $("gen-picked").textContent =
    `Seed ${result.seed}, image ${image.index} of ${result.n}${label} — downloaded as ${filename} ` +
    `(the same image again: n=${result.n}, seed=${result.seed}, index ${image.index}).`;
  download(`data:${image.media_type};base64,${image.data}`, filename);
}

// -- Explore ---------------------------------------------------------------------------------------

$("explore-model").addEventListener("change", () => {
  showModelInfo($("explore-model"), $("explore-model-info"));
  fillClasses($("explore-class"), selected($("explore-model")), false);
});

for (const end of ["from", "to"]) {
  $(`explore-reroll-${end}`).addEventListener("click", () => {
    $(`explore-${end}`).value = randomSeed();
  });
}

$("explore-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  clearError();
  const model = selected($("explore-model"));
  const steps = numberOr($("explore-steps").value);
  const walk = { from: "@from", to: "@to", steps, method: $("explore-method").value };
  const common = { model: model?.name, interpolate: walk };
  if (model?.classes) common.label = Number($("explore-class").value);
  const seeds = { "@from": $("explore-from").value, "@to": $("explore-to").value };
  const strip = generateBody({ ...common, layout: "grid", columns: steps }, seeds);
  const animation = generateBody(
    { ...common, layout: "animation", format: $("explore-format").value, frame_ms: numberOr($("explore-frame-ms").value) },
    seeds,
  );
  $("explore-submit").disabled = true;
  $("explore-status").textContent = "Interpolating…";
  try {
    const [stripBlob, animationBlob] = await Promise.all(
      [strip, animation].map(async (body) => (await api("/generate", { method: "POST", body })).blob()),
    );
    setBlobUrl($("explore-strip"), "src", stripBlob);
    $("explore-strip").style.width = `${cellSize(model.width, 64) * steps}px`;
    setBlobUrl($("explore-animation"), "src", animationBlob);
    $("explore-animation").style.width = `${cellSize(model.width, 192)}px`;
    const extension = $("explore-format").value;
    setBlobUrl($("explore-download"), "href", animationBlob);
    $("explore-download").download = `${model.name}-${$("explore-from").value}-to-${$("explore-to").value}.${extension}`;
    $("explore-strip-box").hidden = false;
    $("explore-animation-box").hidden = false;
    $("explore-status").textContent =
      `${steps} frames from seed ${$("explore-from").value} to seed ${$("explore-to").value} (${walk.method}).`;
  } catch (error) {
    $("explore-status").textContent = "";
    showError(error);
  } finally {
    $("explore-submit").disabled = false;
  }
});

// -- Upscale ---------------------------------------------------------------------------------------

let upload = null; // the chosen File

$("up-model").addEventListener("change", () => showModelInfo($("up-model"), $("up-model-info")));

function choose(file) {
  if (!file) return;
  upload = file;
  $("up-drop-text").textContent = `${file.name} (${Math.ceil(file.size / 1024)} KB) — drop or tap to choose another`;
  $("up-submit").disabled = false;
}

$("up-file").addEventListener("change", () => choose($("up-file").files[0]));
for (const type of ["dragenter", "dragover"]) {
  $("up-drop").addEventListener(type, (event) => {
    event.preventDefault();
    $("up-drop").classList.add("over");
  });
}
$("up-drop").addEventListener("dragleave", () => $("up-drop").classList.remove("over"));
$("up-drop").addEventListener("drop", (event) => {
  event.preventDefault();
  $("up-drop").classList.remove("over");
  choose(event.dataTransfer.files[0]);
});

function setProgress(text, fraction) {
  $("up-progress-box").hidden = false;
  $("up-status").textContent = text;
  const bar = $("up-progress");
  if (fraction === null) bar.removeAttribute("value");
  else bar.value = fraction;
}

/** POST the image with XMLHttpRequest: unlike fetch, it reports upload and download progress. */
function sendForUpscale(file, query) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", `/upscale?${query}`);
    request.responseType = "blob";
    request.setRequestHeader("Content-Type", file.type || "application/octet-stream");
    for (const [name, value] of Object.entries(authHeaders())) request.setRequestHeader(name, value);
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) setProgress(`Uploading… ${Math.round((100 * event.loaded) / event.total)} %`, event.loaded / event.total);
    };
    request.upload.onload = () => setProgress("Upscaling…", null);
    request.onprogress = (event) => {
      if (event.lengthComputable) setProgress("Receiving…", event.loaded / event.total);
    };
    request.onload = async () => {
      if (request.status === 200) resolve(request);
      else reject(apiError(request.status, await request.response.text()));
    };
    request.onerror = () => reject(new Error("the request failed: is the service still running?"));
    request.send(file);
  });
}

$("upscale-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!upload) return;
  clearError();
  const query = new URLSearchParams({ model: $("up-model").value });
  if ($("up-tile").value !== "") query.set("tile", $("up-tile").value);
  $("up-submit").disabled = true;
  setProgress("Uploading…", 0);
  const started = performance.now();
  try {
    const response = await sendForUpscale(upload, query);
    const [width, height] = response.getResponseHeader("X-Output-Size").split("x").map(Number);
    await showComparison(upload, response.response, width, height);
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    const tiles = response.getResponseHeader("X-Tiles");
    $("up-summary").textContent =
      `${response.getResponseHeader("X-Input-Size")} → ${width}×${height}, ${tiles} tile${tiles === "1" ? "" : "s"}, ${seconds} s`;
    $("up-progress-box").hidden = true;
  } catch (error) {
    $("up-progress-box").hidden = true;
    showError(error);
  } finally {
    $("up-submit").disabled = false;
  }
});

async function showComparison(file, blob, width, height) {
  const after = $("up-after");
  const before = $("up-before");
  setBlobUrl(before, "src", file);
  setBlobUrl(after, "src", blob);
  await Promise.all([after.decode(), before.decode()]);
  // 1:1: the output at its own pixel size, the input enlarged to match without smoothing.
  $("up-compare").style.width = `${width}px`;
  $("up-compare").style.height = `${height}px`;
  const stem = file.name.replace(/\.[^.]+$/, "") || "image";
  setBlobUrl($("up-download"), "href", blob);
  $("up-download").download = `${stem}-x${selected($("up-model"))?.scale ?? ""}.png`;
  $("up-download").textContent = `Download ${width}×${height} PNG (${Math.ceil(blob.size / 1024)} KB)`;
  $("up-result").hidden = false;
  $("up-controls").hidden = false;
  split();
}

function split() {
  $("up-compare").style.setProperty("--split", `${$("up-slider").value}%`);
}

$("up-slider").addEventListener("input", split);

// -- Start -----------------------------------------------------------------------------------------

$("gen-seed").value = randomSeed();
$("explore-from").value = randomSeed();
$("explore-to").value = randomSeed();
showTab();
loadModels();
