// The deviation-map viewer of one job: the case with its z-map in NiiVue, the cluster list
// (a click moves the crosshair to the peak), the region table and centiles, and the template
// with the template-space map beside it on request. Everything is fetched from this service
// with the session cookie; the page's address names the job.
import { MULTIPLANAR_TYPE, Niivue, SHOW_RENDER, SLICE_TYPE } from "./niivue.js";

const job = Number(location.pathname.split("/")[3]);
const base = `/viewer/jobs/${job}`;
const fileUrl = (name) => `${base}/files/${encodeURIComponent(name)}`;
const $ = (id) => document.getElementById(id);

const LAYOUTS = {
  multi: SLICE_TYPE.MULTIPLANAR,
  axial: SLICE_TYPE.AXIAL,
  coronal: SLICE_TYPE.CORONAL,
  sagittal: SLICE_TYPE.SAGITTAL,
  render: SLICE_TYPE.RENDER,
};

const state = {
  manifest: null,
  report: null,
  contrast: null,
  channel: null,
  threshold: 0,
  opacity: 0.8,
  layout: "multi",
  caseView: null,
  templateView: null,
  clusters: [],
};

async function getJson(url) {
  const response = await fetch(url, { credentials: "same-origin" });
  if (!response.ok) {
    let message = `${response.status}`;
    try {
      message = `${response.status}: ${(await response.json()).message}`;
    } catch (_) {
      // the status alone
    }
    throw new Error(message);
  }
  return response.json();
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
  return td;
}

const fixed = (value, digits) => (typeof value === "number" && isFinite(value) ? value.toFixed(digits) : "–");

/// The calibrated |z| threshold of a channel, from the report.
function calibratedThreshold(channel) {
  const found = (state.report.thresholds || []).find((t) => t.channel === channel);
  return found ? found.z_threshold : 3;
}

async function newView(canvasId, locationId) {
  const nv = new Niivue({
    backColor: [0, 0, 0, 1],
    show3Dcrosshair: true,
    isColorbar: true,
    crosshairColor: [0.2, 1, 0.2, 0.8],
    crosshairWidth: 0.5,
    multiplanarShowRender: SHOW_RENDER.ALWAYS,
    multiplanarLayout: MULTIPLANAR_TYPE.GRID,
  });
  await nv.attachTo(canvasId);
  nv.onLocationChange = (data) => {
    $(locationId).textContent = data.string || "";
  };
  nv.setSliceType(LAYOUTS[state.layout]);
  return nv;
}

/// The diverging map: red-yellow above +threshold, blue below −threshold, nothing between.
function styleOverlay(nv) {
  if (nv.volumes.length < 2) return;
  const z = nv.volumes[1];
  const largest = Math.max(Math.abs(z.global_min), Math.abs(z.global_max));
  z.colormap = "warm";
  z.colormapNegative = "winter";
  z.cal_min = state.threshold;
  z.cal_max = Math.max(state.threshold + 0.5, largest);
  z.cal_minNeg = NaN;
  z.cal_maxNeg = NaN;
  nv.setOpacity(1, state.opacity);
  nv.updateGLVolume();
}

function overlayNames() {
  return state.manifest.overlays.find((o) => o.channel === state.channel);
}

async function loadCase() {
  const overlay = overlayNames();
  const volumes = [{ url: fileUrl(state.contrast), colormap: "gray" }];
  if (overlay) volumes.push({ url: fileUrl(overlay.native), colormap: "warm", colormapNegative: "winter" });
  await state.caseView.loadVolumes(volumes);
  styleOverlay(state.caseView);
}

async function loadTemplate() {
  if (!state.templateView) return;
  const overlay = overlayNames();
  const volumes = [{ url: fileUrl(state.manifest.template), colormap: "gray" }];
  if (overlay) volumes.push({ url: fileUrl(overlay.template), colormap: "warm", colormapNegative: "winter" });
  await state.templateView.loadVolumes(volumes);
  styleOverlay(state.templateView);
}

function moveTo(nv, mm) {
  if (!nv || !mm || nv.volumes.length === 0) return;
  nv.scene.crosshairPos = nv.mm2frac(mm);
  nv.drawScene();
  nv.createOnLocationChange();
}

/// Moves the crosshairs to a cluster's peak (showing the cluster's own map first).
async function goToCluster(cluster, row) {
  for (const selected of document.querySelectorAll("#clusters tr.selected")) selected.classList.remove("selected");
  if (row) row.classList.add("selected");
  if (cluster.channel !== state.channel && state.manifest.overlays.some((o) => o.channel === cluster.channel)) {
    $("channel").value = cluster.channel;
    await changeChannel(cluster.channel);
  }
  moveTo(state.caseView, cluster.peak_native_mm);
  moveTo(state.templateView, cluster.peak_template_mm);
}

async function changeChannel(channel) {
  state.channel = channel;
  state.threshold = calibratedThreshold(channel);
  $("threshold").value = state.threshold.toFixed(2);
  await Promise.all([loadCase(), loadTemplate()]);
}

function fillClusters() {
  const all = state.report.clusters || [];
  // Significant clusters first, then the strongest others (the list stays readable).
  const significant = all.filter((c) => c.significant);
  const others = all
    .filter((c) => !c.significant)
    .sort((a, b) => Math.abs(b.peak_z) - Math.abs(a.peak_z))
    .slice(0, 20);
  state.clusters = significant.concat(others);
  const body = $("clusters").querySelector("tbody");
  state.clusters.forEach((cluster, i) => {
    const row = document.createElement("tr");
    cell(row, String(i + 1));
    cell(row, cluster.channel);
    cell(row, cluster.direction);
    cell(row, fixed(cluster.volume_mm3 / 1000, 2));
    cell(row, fixed(cluster.peak_z, 2));
    cell(row, cluster.region || "–");
    cell(row, cluster.significant ? (cluster.caveat ? "yes (see caveat)" : "yes") : "no");
    row.addEventListener("click", () => goToCluster(cluster, row));
    body.appendChild(row);
  });
  if (state.clusters.length === 0) cell(body.insertRow(), "no clusters beyond the threshold").colSpan = 7;
}

function fillRegions() {
  const body = $("regions").querySelector("tbody");
  const regions = state.report.regions || [];
  if (regions.length === 0) cell(body.insertRow(), "no atlas regions in this database").colSpan = 5;
  for (const region of regions) {
    const row = body.insertRow();
    cell(row, region.name);
    cell(row, fixed(region.intensity_mean_z, 2));
    cell(row, `${fixed(100 * region.intensity_fraction_beyond, 1)} %`);
    cell(row, fixed(region.logjac_mean_z, 2));
    cell(row, `${fixed(100 * region.logjac_fraction_beyond, 1)} %`);
  }
}

function fillCentiles() {
  const centiles = (state.report.regional && state.report.regional.centiles) || [];
  if (centiles.length === 0) return;
  $("centiles-section").hidden = false;
  const body = $("centiles").querySelector("tbody");
  for (const placed of centiles) {
    const row = body.insertRow();
    cell(row, placed.measure);
    cell(row, fixed(placed.value, 1));
    cell(row, fixed(placed.centile, 1));
    cell(row, fixed(placed.z, 2));
    cell(row, placed.flagged ? "yes" : "");
  }
  for (const chart of state.manifest.charts) {
    const image = document.createElement("img");
    image.src = fileUrl(chart);
    image.alt = chart;
    $("charts").appendChild(image);
  }
}

function fillHeader() {
  const report = state.report;
  $("job").textContent = `(job ${job})`;
  const sex = report.sex ? `, sex ${report.sex}` : "";
  $("summary").textContent =
    `age ${fixed(report.age_years, 1)} y${sex}, template bracket ${report.bracket}; ` +
    `calibrated |z| thresholds: ${(report.thresholds || []).map((t) => `${t.channel} ${fixed(t.z_threshold, 2)}`).join(", ")}`;
  const reliable = !report.reliability || report.reliability.reliable;
  const warnings = report.warnings || [];
  if (!reliable || warnings.length > 0) {
    $("warning").hidden = false;
    // One warning per line: they come from different checks and read as a list.
    const lead = reliable ? [] : ["No map or cluster should be read as a finding."];
    $("warning").textContent = lead.concat(warnings.map((w) => `• ${w}`)).join("\n");
  }
}

function fillControls() {
  for (const image of state.manifest.images) {
    $("contrast").add(new Option(image.contrast, image.name));
  }
  for (const overlay of state.manifest.overlays) {
    $("channel").add(new Option(`${overlay.channel} z`, overlay.channel));
  }
  $("show-template").disabled = !state.manifest.template;
  $("opacity").value = String(state.opacity);
  $("threshold").value = state.threshold.toFixed(2);
  $("contrast").addEventListener("change", async (event) => {
    state.contrast = event.target.value;
    await loadCase();
  });
  $("channel").addEventListener("change", (event) => changeChannel(event.target.value));
  $("threshold").addEventListener("change", (event) => {
    const value = Number(event.target.value);
    if (!isFinite(value) || value < 0) return;
    state.threshold = value;
    styleOverlay(state.caseView);
    if (state.templateView) styleOverlay(state.templateView);
  });
  $("opacity").addEventListener("input", (event) => {
    state.opacity = Number(event.target.value);
    styleOverlay(state.caseView);
    if (state.templateView) styleOverlay(state.templateView);
  });
  $("layout").addEventListener("change", (event) => {
    state.layout = event.target.value;
    for (const nv of [state.caseView, state.templateView]) if (nv) nv.setSliceType(LAYOUTS[state.layout]);
  });
  $("sign-out").addEventListener("click", async () => {
    // The session ends on the server; the page is emptied so no image stays on screen.
    await fetch("/viewer/session/end", { method: "POST", credentials: "same-origin" });
    document.body.dataset.state = "signed-out";
    document.body.replaceChildren(Object.assign(document.createElement("p"), { textContent: "Signed out." }));
  });
  $("show-template").addEventListener("change", async (event) => {
    $("template-figure").hidden = !event.target.checked;
    if (event.target.checked && !state.templateView) {
      state.templateView = await newView("template-view", "template-location");
      await loadTemplate();
    }
    for (const nv of [state.caseView, state.templateView]) if (nv) nv.resizeListener();
  });
}

async function start() {
  [state.manifest, state.report] = await Promise.all([getJson(`${base}/manifest`), getJson(fileUrl("report.json"))]);
  if (state.manifest.images.length === 0) throw new Error("the case's images are not in the archive");
  state.contrast = state.manifest.images[0].name;
  state.channel = state.manifest.overlays.length > 0 ? state.manifest.overlays[0].channel : null;
  state.threshold = calibratedThreshold(state.channel);
  fillHeader();
  fillControls();
  fillClusters();
  fillRegions();
  fillCentiles();
  state.caseView = await newView("case-view", "case-location");
  await loadCase();
}

// For tests and the browser console: the views and the listed clusters.
window.pedinormViewer = {
  get caseView() {
    return state.caseView;
  },
  get templateView() {
    return state.templateView;
  },
  get clusters() {
    return state.clusters;
  },
};

start().then(
  () => {
    document.body.dataset.state = "ready";
  },
  (error) => {
    $("error").hidden = false;
    $("error").textContent = `The viewer could not load: ${error.message}`;
    document.body.dataset.state = "error";
  },
);
