// lungseg viewer: axial slice with overlays, coronal and sagittal reformats, all drawn from one int16
// volume fetched once per case.  Window/level, opacity, layers, zoom, pan and stepping never reach the
// server; a click (point in mm + HU) and the settled slice are sent back to Python.
import { onRender, setComponentValue, setFrameHeight } from "./streamlit.js?v=6";

const PRESETS = { lung: [1500, -600], mediastinum: [350, 40], bone: [2000, 300] };
const $ = (id) => document.getElementById(id);
const axial = $("axial"), cross = $("cross"), sliceLabel = $("slice");
const S = {
  key: null, gen: 0, g: null, vol: null, ready: null, nReady: 0, requested: new Set(),
  layers: new Map(), lesionsJson: "", base: null,
  z: 0, cx: 0, cy: 0, W: 1500, L: -600, zoom: 1, panX: 0, panY: 0, fill: false,
  hover: null, click: null, seq: 0, sentSlice: null, settleTimer: null, progress: {}, height: 880,
  lut: new Uint32Array(65536), lutKey: "", drawQueued: false, vw: 0, vh: 0,
};
const A = { canvas: $("axialimg"), ctx: null, img: null, px: null, key: "", transform: "", cross: "", pixelated: null, labelled: -1 };
A.ctx = A.canvas.getContext("2d");
const REFORMATS = [makeReformat($("coronal"), "x"), makeReformat($("sagittal"), "y")];

// ---------------------------------------------------------------- data
const worker = new Worker(new URL("./fetch-worker.js?v=6", import.meta.url), { type: "module" });
const pending = new Map();
let nextRequest = 0;
worker.onmessage = (ev) => {
  const { id, buffer, error } = ev.data, p = pending.get(id);
  pending.delete(id);
  if (error) { const e = new Error(error); if (error === "AbortError") e.name = "AbortError"; p.reject(e); } else p.resolve(buffer);
};
// a file's inflated bytes (a mask) or int16 voxels (a CT slab), fetched and inflated by the worker
function fetchGz(file, kind = "bytes") {
  return new Promise((resolve, reject) => {
    const id = nextRequest++;
    pending.set(id, { resolve, reject });
    worker.postMessage({ id, url: new URL(file, S.base).href, kind });
  }).then((buffer) => (kind === "ct" ? new Int16Array(buffer) : new Uint8Array(buffer)));
}

// CT files are fetched the slab of the shown slice first, alone, then three at a time outwards: on a
// shared line the first image does not wait for the whole stack.  Masks (small) go at once.
const net = { active: 0, queue: [] };
function fetchInTurn(task) { net.queue.push(task); pump(); }
function pump() {
  while (net.active < (S.nReady ? 3 : 1) && net.queue.length) {  // the first slab alone
    const task = net.queue.shift();
    net.active += 1;
    task().finally(() => { net.active -= 1; pump(); });
  }
}

// Decoded cases stay in the page (the last KEEP_CASES opened, by folder token: the token names the
// case's content), so reopening one paints at once and fetches nothing.
const KEEP_CASES = 2;
const kept = new Map();
function keptCase(key, g) {
  const shape = JSON.stringify(g);
  let c = kept.get(key);
  if (!c || c.shape !== shape) {
    c = { shape, vol: new Int16Array(g.nx * g.ny * g.nz), ready: new Uint8Array(g.nz), nReady: 0, masks: new Map() };
  }
  kept.delete(key); kept.set(key, c);
  while (kept.size > KEEP_CASES) kept.delete(kept.keys().next().value);
  return c;
}

function newCase(args) {
  worker.postMessage({ abort: true }); net.queue = [];
  S.gen += 1; S.key = args.case; S.g = args.geometry;
  const { nx, ny, nz } = S.g;
  S.case = keptCase(S.key, S.g);
  S.vol = S.case.vol; S.ready = S.case.ready; S.nReady = S.case.nReady; S.requested = new Set();
  S.layers = new Map(); S.lesionsJson = ""; layerPanelKey = ""; S.click = null; S.hover = null; S.sentSlice = null;
  S.z = Math.min(nz - 1, Math.max(0, args.start_slice | 0)); S.cx = nx >> 1; S.cy = ny >> 1;
  S.zoom = 1; S.panX = 0; S.panY = 0;
  axial.dataset.geometry = [nx, ny, S.g.spacing[0], S.g.spacing[1], nz].join(",");
  A.canvas.width = nx; A.canvas.height = ny; A.img = A.ctx.createImageData(nx, ny); A.px = new Uint32Array(A.img.data.buffer);
  A.key = ""; A.labelled = -1;
  for (const R of REFORMATS) {
    R.w = R.along === "x" ? nx : ny; R.canvas.width = R.w; R.canvas.height = nz;
    R.img = R.ctx.createImageData(R.w, nz); R.px = new Uint32Array(R.img.data.buffer); R.plane = new Int16Array(R.w * nz);
    R.key = ""; R.planeKey = ""; R.runs = new Map();
  }
  document.body.dataset.case = S.key; document.body.dataset.firstImage = ""; document.body.dataset.layers = "";
  document.body.dataset.ct = S.nReady === nz ? "ready" : "";
  $("label").textContent = args.label;
  layout();
}

async function loadSlab(s, file, gen) {
  try {
    const voxels = await fetchGz(file, "ct");
    if (gen !== S.gen) return;
    const { nx, ny, nz, slab } = S.g, n0 = nx * ny, z0 = s * slab, z1 = Math.min(nz, z0 + slab);
    S.vol.set(voxels.subarray(0, (z1 - z0) * n0), z0 * n0);
    for (let z = z0; z < z1; z++) { if (!S.ready[z]) { S.ready[z] = 1; S.nReady++; } }
    S.case.nReady = S.nReady;
    if (S.nReady === nz) document.body.dataset.ct = "ready";
    showProgress();
    requestDraw();
  } catch (e) { if (gen === S.gen && e.name !== "AbortError") { S.requested.delete(s); $("ptext").textContent = "CT: " + e.message; } }
}

async function loadMask(layer, file, gen) {
  try {
    const bits = S.case.masks.get(file) || await fetchGz(file);
    if (gen !== S.gen || layer.file !== file) return;
    S.case.masks.set(file, bits);
    layer.bits = bits; layer.loaded = file;
    document.body.dataset.layers = [...S.layers.values()].filter((l) => l.bits).map((l) => l.name).join(",");
    renderLayerPanel(); requestDraw();
  } catch (e) { if (gen === S.gen && e.name !== "AbortError") { layer.requested = null; layer.error = e.message; renderLayerPanel(); } }
}

// ---------------------------------------------------------------- drawing
// Every image canvas holds voxels at their own resolution (one canvas pixel per voxel) and is scaled
// to the screen by CSS: the browser's compositor does the scaling, and zoom and pan are a transform.
// A canvas is redrawn only when what it shows changes (its "key"), and overlays are painted from
// runs of pixels worked out once per slice and layer, so a step costs one LUT pass and one upload.
function buildLut() {
  const key = S.W + "/" + S.L;
  if (key === S.lutKey) return;
  S.lutKey = key;
  const lo = S.L - S.W / 2, k = 255 / Math.max(1, S.W), lut = S.lut;
  for (let i = 0; i < 65536; i++) {
    let g = ((i - 32768) - lo) * k; g = g < 0 ? 0 : g > 255 ? 255 : g | 0;
    lut[i] = 0xff000000 | (g << 16) | (g << 8) | g;
  }
  $("wl").textContent = `W ${Math.round(S.W)}  L ${Math.round(S.L)}`;
  for (const b of document.querySelectorAll("[data-preset]")) {
    const [w, l] = PRESETS[b.dataset.preset]; b.classList.toggle("on", w === S.W && l === S.L);
  }
}

const bit = (bits, t) => (bits[t >> 3] >> (7 - (t & 7))) & 1;

// [start, end) runs of the plane pixels p = r * w + q inside the mask, where the plane pixel (r, q) is
// the voxel t0 + r * stepR + q * stepQ; with outline, only those with a 4-neighbour outside the mask
// (or on the plane's border)
let scratch = new Int32Array(1 << 15);
function planeRuns(bits, t0, stepR, stepQ, w, h, outline) {
  let n = 0;
  const push = (a, b) => {
    if (n + 2 > scratch.length) { const s = new Int32Array(scratch.length * 2); s.set(scratch); scratch = s; }
    scratch[n++] = a; scratch[n++] = b;
  };
  for (let r = 0; r < h; r++) {
    const tr = t0 + r * stepR, row = r * w;
    let start = -1;
    for (let q = 0; q < w; q++) {
      const t = tr + q * stepQ;
      if (stepQ === 1 && (t & 7) === 0 && q + 8 <= w && bits[t >> 3] === 0) {  // 8 empty voxels at once
        if (start >= 0) { push(row + start, row + q); start = -1; }
        q += 7; continue;
      }
      let on = (bits[t >> 3] >> (7 - (t & 7))) & 1;
      if (on && outline && r > 0 && q > 0 && r < h - 1 && q < w - 1) {
        on = 1 - (bit(bits, t - stepQ) & bit(bits, t + stepQ) & bit(bits, t - stepR) & bit(bits, t + stepR));
      }
      if (on) { if (start < 0) start = q; } else if (start >= 0) { push(row + start, row + q); start = -1; }
    }
    if (start >= 0) push(row + start, row + w);
  }
  return n ? scratch.slice(0, n) : EMPTY;
}
const EMPTY = new Int32Array(0);

// a layer's runs per axial slice, kept for the case; rebuilt when the mask or outline/fill changes
function cachedAxialRuns(layer, z) {
  const mode = (S.fill ? "fill:" : "line:") + layer.loaded;
  if (layer.runsMode !== mode) { layer.runsMode = mode; layer.axialRuns = new Array(S.g.nz); }
  const { nx, ny } = S.g;
  return layer.axialRuns[z] || (layer.axialRuns[z] = planeRuns(layer.bits, z * nx * ny, nx, 1, nx, ny, !S.fill));
}

// work out every slice's runs while the browser is idle, nearest to the shown slice first, so that
// stepping never meets a slice for the first time
let prebuild = null;
function prebuildRuns() {
  if (prebuild || !S.g) return;
  const gen = S.gen;
  prebuild = requestIdleCallback(function work(deadline) {
    prebuild = null;
    if (gen !== S.gen || !S.g) return;
    const nz = S.g.nz;
    for (let d = 0; d < nz; d++) {
      for (const z of [S.z + d, S.z - d - 1]) {
        if (z < 0 || z >= nz) continue;
        for (const l of S.layers.values()) {
          if (!l.on || !l.bits || (l.runsMode === (S.fill ? "fill:" : "line:") + l.loaded && l.axialRuns[z])) continue;
          if (deadline.timeRemaining() < 2) { prebuild = requestIdleCallback(work); return; }
          cachedAxialRuns(l, z);
        }
      }
    }
  });
}

function paintRuns(px, runs, layer) {
  const a = layer.opacity, ia = 1 - a;
  const cr = layer.colour[0] * a, cg = layer.colour[1] * a, cb = layer.colour[2] * a;
  for (let k = 0; k < runs.length; k += 2) {
    for (let p = runs[k], e = runs[k + 1]; p < e; p++) {
      const v = px[p];
      px[p] = 0xff000000 | (((((v >> 16) & 255) * ia + cb) | 0) << 16) | (((((v >> 8) & 255) * ia + cg) | 0) << 8) | (((v & 255) * ia + cr) | 0);
    }
  }
}

function layersKey() {
  let k = S.fill ? "F" : "O";
  for (const l of S.layers.values()) if (l.on && l.bits) k += `|${l.name}:${l.opacity}:${l.loaded}`;
  return k;
}

function renderAxial(layers) {
  const { nx, ny } = S.g, n = nx * ny, z = S.z, ready = S.ready[z];
  const key = `${z}/${S.lutKey}/${ready}/${layers}`;
  if (key === A.key) return;
  A.key = key;
  const px = A.px;
  if (ready) {
    const off = z * n, lut = S.lut, vol = S.vol;
    for (let i = 0; i < n; i++) px[i] = lut[vol[off + i] + 32768];
    for (const l of S.layers.values()) if (l.on && l.bits) paintRuns(px, cachedAxialRuns(l, z), l);
  } else px.fill(0xff1a1a1a);
  A.ctx.putImageData(A.img, 0, 0);
}

function view() {
  const { nx, ny, spacing: [sx, sy] } = S.g, w = S.vw, h = S.vh;
  const s = Math.min(w / (nx * sx), h / (ny * sy)) * S.zoom;
  return { s, ox: (w - nx * sx * s) / 2 + S.panX, oy: (h - ny * sy * s) / 2 + S.panY, sx, sy };
}

function placeAxial() {  // zoom, pan and the crosshair are transforms: no redraw, no layout
  const v = view(), pixelated = S.zoom >= 3;
  const t = `translate(${v.ox}px,${v.oy}px) scale(${v.sx * v.s},${v.sy * v.s})`;
  if (t !== A.transform) { A.transform = t; A.canvas.style.transform = t; }
  if (pixelated !== A.pixelated) { A.pixelated = pixelated; A.canvas.classList.toggle("pixelated", pixelated); }
  const c = `translate(${v.ox + (S.cx + 0.5) * v.sx * v.s - 9}px,${v.oy + (S.cy + 0.5) * v.sy * v.s - 9}px)`;
  if (c !== A.cross) { A.cross = c; cross.style.transform = c; }
  if (A.labelled !== S.z) {
    A.labelled = S.z;
    const z = S.g.origin[2] + S.z * S.g.spacing[2] * S.g.direction[8];
    sliceLabel.textContent = `Slice ${S.z + 1} / ${S.g.nz}  (z ${z.toFixed(1)} mm)`;
    axial.dataset.slice = String(S.z + 1);
  }
  if (S.ready[S.z] && !document.body.dataset.firstImage) document.body.dataset.firstImage = "1";
}

// reformat planes: width w along x (coronal) or y (sagittal), height nz with the top slice first
function makeReformat(canvas, along) {
  return { canvas, along, ctx: canvas.getContext("2d"), key: "", planeKey: "", runsKey: "", runs: new Map() };
}

function reformatPlane(R) {  // the plane's HU, read from the volume when the crosshair or the data change
  const { nx, ny, nz } = S.g, n = nx * ny, at = R.along === "x" ? S.cy : S.cx, key = `${at}/${S.nReady}`;
  if (key === R.planeKey) return;
  R.planeKey = key;
  const w = R.w, plane = R.plane, vol = S.vol;
  for (let r = 0; r < nz; r++) {
    const base = (nz - 1 - r) * n, o = r * w;
    if (R.along === "x") { const b = base + at * nx; for (let q = 0; q < w; q++) plane[o + q] = vol[b + q]; }
    else { const b = base + at; for (let q = 0; q < w; q++) plane[o + q] = vol[b + q * nx]; }
  }
}

function reformatRuns(R, layer) {
  const { nx, ny, nz } = S.g, n = nx * ny, at = R.along === "x" ? S.cy : S.cx;
  const key = `${at}/${S.fill}/${layer.loaded}`;
  const hit = R.runs.get(layer.name);
  if (hit && hit.key === key) return hit.runs;
  const t0 = (nz - 1) * n + (R.along === "x" ? at * nx : at), stepQ = R.along === "x" ? 1 : nx;
  const runs = planeRuns(layer.bits, t0, -n, stepQ, R.w, nz, !S.fill);
  R.runs.set(layer.name, { key, runs });
  return runs;
}

function renderReformat(R, layers) {
  const at = R.along === "x" ? S.cy : S.cx;
  const key = `${at}/${S.nReady}/${S.lutKey}/${layers}`;
  if (key === R.key) return;
  R.key = key;
  reformatPlane(R);
  const { nz } = S.g, w = R.w, px = R.px, plane = R.plane, lut = S.lut;
  for (let r = 0; r < nz; r++) {
    const o = r * w;
    if (!S.ready[nz - 1 - r]) { px.fill(0xff1a1a1a, o, o + w); continue; }
    for (let q = o, e = o + w; q < e; q++) px[q] = lut[plane[q] + 32768];
  }
  for (const l of S.layers.values()) if (l.on && l.bits) paintRuns(px, reformatRuns(R, l), l);
  R.ctx.putImageData(R.img, 0, 0);
}

function placeLines(R) {  // crosshair lines are elements over the canvas: moving them is cheap
  const { nz } = S.g, box = R.canvas.parentElement;
  const y = (((nz - 1 - S.z) + 0.5) / nz * R.h) | 0;
  const q = R.along === "x" ? (S.cx + 0.5) / S.g.nx : (S.cy + 0.5) / S.g.ny, x = (q * R.cw) | 0;
  if (y !== R.lineY) { R.lineY = y; box.querySelector(".hl").style.transform = `translateY(${y}px)`; }
  if (x !== R.lineX) { R.lineX = x; box.querySelector(".vl").style.transform = `translateX(${x}px)`; }
}

function draw() {
  S.drawQueued = false;
  if (!S.g) return;
  buildLut();
  const layers = layersKey();
  renderAxial(layers);
  placeAxial();
  // while W/L is dragged only the axial view follows each move; the reformats catch up on release
  for (const R of REFORMATS) { if (!S.wlDragging) renderReformat(R, layers); placeLines(R); }
  prebuildRuns();
}
function requestDraw() { if (!S.drawQueued) { S.drawQueued = true; requestAnimationFrame(draw); } }

// ---------------------------------------------------------------- layout and panels
function layout() {
  if (!S.g) return;
  const W = window.innerWidth, H = S.height;
  const mainH = H - 40, sideW = Math.max(240, Math.min(440, Math.round(W * 0.3)));
  const size = Math.max(200, Math.min(W - sideW - 14, mainH));
  axial.style.width = size + "px"; axial.style.height = size + "px"; S.vw = size; S.vh = size;
  const { nx, ny, nz, spacing: [sx, sy, sz] } = S.g;
  for (const [R, wmm] of [[REFORMATS[0], nx * sx], [REFORMATS[1], ny * sy]]) {
    let w = sideW - 8, h = Math.round(w * nz * sz / wmm);
    const cap = Math.round(mainH * 0.34);
    if (h > cap) { w = Math.round(w * cap / h); h = cap; }
    R.canvas.style.width = w + "px"; R.canvas.style.height = h + "px"; R.cw = w; R.h = h; R.lineX = R.lineY = null;
  }
  A.transform = ""; A.cross = "";
  setFrameHeight(H);
  requestDraw();
}

let layerPanelKey = "";
function renderLayerPanel() {
  // rebuilt only when a layer appears, loads or fails: a rerun must not replace a slider being dragged
  const key = JSON.stringify([...S.layers.values()].map((l) => [l.name, l.detail, l.file, !!l.bits, l.error]));
  if (key === layerPanelKey) return;
  layerPanelKey = key;
  const box = $("layers");
  box.textContent = "";
  for (const l of S.layers.values()) {
    const row = document.createElement("div"); row.className = "row"; row.dataset.layer = l.name;
    const cb = document.createElement("input"); cb.type = "checkbox"; cb.checked = l.on; cb.setAttribute("aria-label", "show " + l.name);
    cb.onchange = () => { l.on = cb.checked; requestDraw(); };
    const sw = document.createElement("span"); sw.className = "sw"; sw.style.background = `rgb(${l.colour.join(",")})`;
    const name = document.createElement("span"); name.textContent = l.name + (l.detail ? ` (${l.detail})` : "");
    const op = document.createElement("input"); op.type = "range"; op.min = "0"; op.max = "1"; op.step = "0.05"; op.value = String(l.opacity);
    op.setAttribute("aria-label", l.name + " opacity");
    op.oninput = () => { l.opacity = parseFloat(op.value); requestDraw(); };
    const st = document.createElement("span"); st.className = "muted";
    st.textContent = l.bits ? "" : l.error ? "failed" : l.file ? "loading…" : "computing…";
    row.append(cb, sw, name, op, st); box.append(row);
  }
}

function renderLesions(rows, source) {
  const box = $("lesions");
  box.textContent = "";
  if (!rows.length) return;
  const h = document.createElement("div"); h.className = "cap"; h.textContent = `Lesions (${source})`; box.append(h);
  for (const r of rows) {
    const b = document.createElement("button"); b.dataset.lesion = r.lesion;
    b.textContent = `${r.lesion} · ${r.side} · ${r.volume_ml} ml · slice ${r.slice + 1}`;
    b.onclick = () => goTo(r.slice, r.y, r.x);
    const row = document.createElement("div"); row.className = "row"; row.append(b); box.append(row);
  }
}

function showProgress() {
  const p = S.progress || {}, el = $("progress"), nz = S.g ? S.g.nz : 0;
  const ctPart = S.g && S.nReady < nz ? ` · CT ${Math.round(100 * S.nReady / nz)} %` : "";
  const done = (p.done !== false) && !ctPart;
  el.classList.toggle("done", done);
  $("pfill").style.width = Math.round(100 * (p.fraction ?? 1)) + "%";
  $("ptext").textContent = (p.text || "") + ctPart;
}

// ---------------------------------------------------------------- interaction
function setSlice(z) {
  if (!S.g) return;
  const nz = S.g.nz, k = Math.max(0, Math.min(nz - 1, z));
  if (k === S.z) return;
  S.z = k; requestDraw();  // key repeats within one frame draw once
  clearTimeout(S.settleTimer);
  S.settleTimer = setTimeout(() => { if (S.sentSlice !== S.z) emit("slice"); }, 400);
}
function goTo(z, y, x) {
  if (y != null && x != null) { S.cy = y; S.cx = x; }
  setSlice(z); requestDraw();
}

function voxelAt(ev) {
  const r = axial.getBoundingClientRect(), v = view();
  const i = Math.floor((ev.clientX - r.left - v.ox) / (v.sx * v.s)), j = Math.floor((ev.clientY - r.top - v.oy) / (v.sy * v.s));
  if (i < 0 || j < 0 || i >= S.g.nx || j >= S.g.ny) return null;
  return [S.z, j, i];
}
function huAt(zyx) { return S.ready[zyx[0]] ? S.vol[(zyx[0] * S.g.ny + zyx[1]) * S.g.nx + zyx[2]] : null; }
function toMm([k, j, i]) {  // LPS mm of a voxel centre: origin + direction · (index · spacing)
  const { origin: o, direction: D, spacing: sp } = S.g, ijk = [i * sp[0], j * sp[1], k * sp[2]];
  return [0, 1, 2].map((r) => o[r] + D[3 * r] * ijk[0] + D[3 * r + 1] * ijk[1] + D[3 * r + 2] * ijk[2]);
}
function emit(reason) {
  S.seq += 1; S.sentSlice = S.z;
  setComponentValue({ case: S.key, reason, slice: S.z, hu: S.hover ? S.hover.hu : null,
    voxel: S.hover ? S.hover.zyx : null, click: S.click, seq: S.seq });
}
function updateHover(ev) {
  const zyx = voxelAt(ev), hu = zyx ? huAt(zyx) : null;
  S.hover = zyx && hu !== null ? { zyx, hu } : null;
  $("hu").textContent = S.hover ? `HU ${hu} at (x ${zyx[2]}, y ${zyx[1]})` : "";
}

const KEYS = { ArrowUp: 1, ArrowRight: 1, ArrowDown: -1, ArrowLeft: -1, PageUp: 10, PageDown: -10 };
document.addEventListener("keydown", (ev) => {
  if (!S.g || (ev.target && ev.target.tagName === "INPUT")) return;
  if (ev.key in KEYS) setSlice(S.z + KEYS[ev.key]);
  else if (ev.key === "Home") setSlice(0);
  else if (ev.key === "End") setSlice(S.g.nz - 1);
  else return;
  ev.preventDefault();
});

axial.addEventListener("wheel", (ev) => {
  ev.preventDefault();
  if (!S.g) return;
  if (ev.ctrlKey) {
    const r = axial.getBoundingClientRect(), f = ev.deltaY < 0 ? 1.15 : 1 / 1.15;
    zoomAbout(f, ev.clientX - r.left, ev.clientY - r.top);
  } else setSlice(S.z + (ev.deltaY < 0 ? 1 : -1));
}, { passive: false });

function zoomAbout(f, mx, my) {
  const v = view(), z = Math.max(0.5, Math.min(12, S.zoom * f)), k = z / S.zoom;
  // keep the point under the cursor fixed: new offset = m - (m - o)·k
  const w = S.vw, h = S.vh, { nx, ny } = S.g, s1 = v.s * k;
  const ox = mx - (mx - v.ox) * k, oy = my - (my - v.oy) * k;
  S.zoom = z; S.panX = ox - (w - nx * v.sx * s1) / 2; S.panY = oy - (h - ny * v.sy * s1) / 2;
  requestDraw();
}

let drag = null;
axial.addEventListener("contextmenu", (ev) => ev.preventDefault());
axial.addEventListener("pointerdown", (ev) => {
  if (!S.g) return;
  axial.focus({ preventScroll: true });
  const mode = ev.button === 2 || (ev.button === 0 && ev.ctrlKey) ? "wl" : ev.button === 1 ? "pan" : "press";
  drag = { mode, x: ev.clientX, y: ev.clientY, W: S.W, L: S.L, panX: S.panX, panY: S.panY };
  axial.setPointerCapture(ev.pointerId);
  ev.preventDefault();
});
axial.addEventListener("pointermove", (ev) => {
  if (!S.g) return;
  updateHover(ev);
  if (!drag) return;
  const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
  if (drag.mode === "press" && Math.hypot(dx, dy) > 4) drag.mode = "pan";
  if (drag.mode === "wl") {
    const k = Math.max(1, drag.W / 300);
    S.wlDragging = true;
    S.W = Math.max(1, Math.round(drag.W + dx * k)); S.L = Math.round(drag.L + dy * k); requestDraw();
  } else if (drag.mode === "pan") { S.panX = drag.panX + dx; S.panY = drag.panY + dy; requestDraw(); }
});
axial.addEventListener("pointercancel", () => {
  if (drag && drag.mode === "wl") { S.wlDragging = false; requestDraw(); }
  drag = null;
});
axial.addEventListener("pointerup", (ev) => {
  if (!drag) return;
  const mode = drag.mode; drag = null;
  if (mode === "wl") { S.wlDragging = false; requestDraw(); }
  if (mode !== "press") return;
  const zyx = voxelAt(ev);
  if (!zyx) return;
  updateHover(ev);
  S.cy = zyx[1]; S.cx = zyx[2];
  S.click = { zyx, mm: toMm(zyx).map((v) => Math.round(v * 1000) / 1000), hu: huAt(zyx) };
  requestDraw(); emit("click");
});

for (const { canvas, along } of REFORMATS) {
  canvas.addEventListener("click", (ev) => {
    if (!S.g) return;
    const r = canvas.getBoundingClientRect(), fx = (ev.clientX - r.left) / r.width, fy = (ev.clientY - r.top) / r.height;
    const z = S.g.nz - 1 - Math.floor(fy * S.g.nz);
    if (along === "x") S.cx = Math.min(S.g.nx - 1, Math.floor(fx * S.g.nx)); else S.cy = Math.min(S.g.ny - 1, Math.floor(fx * S.g.ny));
    setSlice(z); requestDraw();
  });
}
for (const b of document.querySelectorAll("[data-preset]")) b.onclick = () => { [S.W, S.L] = PRESETS[b.dataset.preset]; requestDraw(); };
$("zoomin").onclick = () => zoomAbout(1.25, S.vw / 2, S.vh / 2);
$("zoomout").onclick = () => zoomAbout(1 / 1.25, S.vw / 2, S.vh / 2);
$("zoomfit").onclick = () => { S.zoom = 1; S.panX = 0; S.panY = 0; requestDraw(); };
$("fill").onchange = (ev) => { S.fill = ev.target.checked; requestDraw(); };
window.addEventListener("resize", layout);

// ---------------------------------------------------------------- arguments from Python
// While a case opens, Python passes only the job's status file; the browser polls it (a small static
// file) and applies it like arguments, then tells Python once the job has finished.
const poll = { folder: null, timer: null, n: 0 };
function stopPolling() { clearTimeout(poll.timer); poll.folder = null; }
function pollStatus(args) {
  if (poll.folder === args.folder) return;
  stopPolling();
  poll.folder = args.folder;
  if (args.folder !== S.key) {  // another case is opening: nothing on screen belongs to it yet
    const b = document.body.dataset; b.firstImage = ""; b.layers = ""; b.ct = ""; b.case = "";
  }
  const folder = args.folder, url = new URL(args.status, S.base), outer = args;
  const tick = async () => {
    if (poll.folder !== folder) return;
    try {
      const r = await fetch(url + "?n=" + (poll.n += 1), { cache: "no-store" });
      if (r.ok && poll.folder === folder) {
        const st = await r.json();
        if (st.geometry) apply({ ...st, files: outer.files, height: outer.height });
        else { $("label").textContent = st.label || ""; S.progress = st.progress || {}; showProgress(); }
        if (st.done || st.error) {
          if (st.error) $("ptext").textContent = st.error;
          stopPolling(); S.seq += 1;
          setComponentValue({ case: folder, reason: st.error ? "failed" : "opened", slice: null, seq: S.seq });
          return;
        }
      }
    } catch (e) { /* the next tick retries */ }
    if (poll.folder === folder) poll.timer = setTimeout(tick, 250);
  };
  tick();
}

function apply(args) {
  if (args.height !== S.height) { S.height = args.height; if (S.g) layout(); }
  if (args.case !== S.key) newCase(args);
  setFrameHeight(S.height);
  const first = Math.floor(S.z / S.g.slab);
  const wanted = [...args.ct.keys()].filter((s) => args.ct[s] && !S.requested.has(s) && !S.ready[s * S.g.slab]);
  for (const s of wanted.sort((a, b) => Math.abs(a - first) - Math.abs(b - first) || a - b)) {
    S.requested.add(s);
    const gen = S.gen;
    fetchInTurn(() => (gen === S.gen ? loadSlab(s, args.ct[s], gen) : Promise.resolve()));
  }
  const names = new Set();
  for (const a of args.layers) {
    names.add(a.name);
    let l = S.layers.get(a.name);
    if (!l) { l = { name: a.name, colour: a.colour, opacity: a.opacity, on: true, bits: null, file: null, requested: null }; S.layers.set(a.name, l); }
    l.detail = a.detail; l.file = a.file;
    if (a.file && l.requested !== a.file) { l.requested = a.file; loadMask(l, a.file, S.gen); }
  }
  for (const n of [...S.layers.keys()]) if (!names.has(n)) S.layers.delete(n);
  const files = new Set(args.layers.map((a) => a.file));
  for (const f of [...S.case.masks.keys()]) if (!files.has(f)) S.case.masks.delete(f);  // a replaced mask (a new click) goes
  renderLayerPanel();
  const lj = JSON.stringify([args.lesions, args.lesion_source]);
  if (lj !== S.lesionsJson) { S.lesionsJson = lj; renderLesions(args.lesions, args.lesion_source); }
  S.progress = args.progress || {};
  showProgress();
  requestDraw();
}

onRender((args) => {
  if (!args.case || !args.folder) { if (!S.g) setFrameHeight(0); return; }
  S.base = new URL(`../${args.files}/${args.folder}/`, window.location.href);
  if (args.status) { setFrameHeight(args.height); pollStatus(args); return; }
  stopPolling();
  if (args.geometry) apply(args);
});
