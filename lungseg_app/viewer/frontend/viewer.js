// lungseg viewer: axial slice with overlays, coronal and sagittal reformats, all drawn from one int16
// volume fetched once per case.  Window/level, opacity, layers, zoom, pan and stepping never reach the
// server; a click (point in mm + HU) and the settled slice are sent back to Python.
import { onRender, setComponentValue, setFrameHeight } from "./streamlit.js?v=7";

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
const B = { canvas: $("axialimg2"), ctx: null, img: null, px: null, key: "", transform: "", pixelated: null };  // compare view
B.ctx = B.canvas.getContext("2d");
const REFORMATS = [makeReformat($("coronal"), "x"), makeReformat($("sagittal"), "y")];

// ---------------------------------------------------------------- data
const worker = new Worker(new URL("./fetch-worker.js?v=7", import.meta.url), { type: "module" });
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
  for (const V of [A, B]) {
    V.canvas.width = nx; V.canvas.height = ny; V.img = V.ctx.createImageData(nx, ny); V.px = new Uint32Array(V.img.data.buffer);
    V.key = ""; V.transform = "";
  }
  A.labelled = -1;
  resetEditing();
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
    if (layer.bits && layer.structure && E.touched.has(layer.name)) replacedByServer(layer, layer.bits, bits);
    layer.bits = bits; layer.loaded = file; layer.rev = (layer.rev || 0) + 1; layer.axialRuns = null; layer.runsMode = "";
    layer.held = Math.max(layer.held || 0, layer.loadingVersion || 0); publishVersions();
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
  for (const l of S.layers.values()) if (l.on && l.bits) k += `|${l.name}:${l.opacity}:${l.loaded}:${l.rev || 0}`;
  if (E.compare) k += `|cmp:${E.compare.join("/")}`;
  return k;
}

// ``side``: 0 the main view, 1 the left and 2 the right of a side-by-side comparison (each shows the
// layers that are not structures plus its one structure)
function shownIn(l, side) {
  if (!l.on || !l.bits) return false;
  if (!side || !l.structure) return true;
  return l.name === E.compare[side - 1];
}
function renderAxial(V, layers, side) {
  const { nx, ny } = S.g, n = nx * ny, z = S.z, ready = S.ready[z];
  const prefix = `${z}/${S.lutKey}/${ready}/${side}`, key = `${prefix}/${layers}`;
  if (key === V.key) return;
  // during a brush stroke only the voxels around the stamps changed: redraw that box alone
  const dirty = E.dirty;
  E.dirty = null;
  if (dirty && (E.stroke || E.quick) && ready && V.prefix === prefix) { V.key = key; renderBox(V, side, dirty); return; }
  V.key = key; V.prefix = prefix;
  const px = V.px;
  if (ready) {
    const off = z * n, lut = S.lut, vol = S.vol;
    for (let i = 0; i < n; i++) px[i] = lut[vol[off + i] + 32768];
    for (const l of S.layers.values()) if (shownIn(l, side)) paintRuns(px, cachedAxialRuns(l, z), l);
  } else px.fill(0xff1a1a1a);
  V.ctx.putImageData(V.img, 0, 0);
}

// the pixels of box [y0, x0, y1, x1] (and a one-voxel rim, for outlines) worked out voxel by voxel, the same
// way as the runs do it for a whole slice
function renderBox(V, side, box) {
  const { nx, ny } = S.g, off = S.z * nx * ny, lut = S.lut, vol = S.vol, px = V.px;
  const y0 = Math.max(0, box[0] - 1), x0 = Math.max(0, box[1] - 1), y1 = Math.min(ny, box[2] + 1), x1 = Math.min(nx, box[3] + 1);
  const layers = [...S.layers.values()].filter((l) => shownIn(l, side));
  for (let y = y0; y < y1; y++) {
    for (let x = x0; x < x1; x++) {
      const p = y * nx + x, t = off + p;
      let v = lut[vol[t] + 32768];
      for (const l of layers) {
        const bits = l.bits;
        let on = (bits[t >> 3] >> (7 - (t & 7))) & 1;
        if (on && !S.fill && y > 0 && x > 0 && y < ny - 1 && x < nx - 1) {
          on = 1 - (bit(bits, t - 1) & bit(bits, t + 1) & bit(bits, t - nx) & bit(bits, t + nx));
        }
        if (!on) continue;
        const a = l.opacity, ia = 1 - a;
        v = 0xff000000 | (((((v >> 16) & 255) * ia + l.colour[2] * a) | 0) << 16)
          | (((((v >> 8) & 255) * ia + l.colour[1] * a) | 0) << 8) | (((v & 255) * ia + l.colour[0] * a) | 0);
      }
      px[p] = v;
    }
  }
  V.ctx.putImageData(V.img, 0, 0, x0, y0, x1 - x0, y1 - y0);
}

function view() {
  const { nx, ny, spacing: [sx, sy] } = S.g, w = S.vw, h = S.vh;
  const s = Math.min(w / (nx * sx), h / (ny * sy)) * S.zoom;
  return { s, ox: (w - nx * sx * s) / 2 + S.panX, oy: (h - ny * sy * s) / 2 + S.panY, sx, sy };
}

function placeAxial() {  // zoom, pan and the crosshair are transforms: no redraw, no layout
  const v = view(), pixelated = S.zoom >= 3;
  const t = `translate(${v.ox}px,${v.oy}px) scale(${v.sx * v.s},${v.sy * v.s})`;
  for (const V of (E.compare ? [A, B] : [A])) {  // the second view is linked: same transform
    if (t !== V.transform) { V.transform = t; V.canvas.style.transform = t; }
    if (pixelated !== V.pixelated) { V.pixelated = pixelated; V.canvas.classList.toggle("pixelated", pixelated); }
  }
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
  const key = `${at}/${S.fill}/${layer.loaded}/${layer.rev || 0}`;
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
  renderAxial(A, layers, E.compare ? 1 : 0);
  if (E.compare) renderAxial(B, layers, 2);
  placeAxial();
  // while W/L is dragged or a stroke painted only the axial view follows each move; the reformats catch up on release
  for (const R of REFORMATS) { if (!S.wlDragging && !E.stroke && !E.quick) renderReformat(R, layers); placeLines(R); }
  prebuildRuns();
}
function requestDraw() { if (!S.drawQueued) { S.drawQueued = true; requestAnimationFrame(draw); } }

// ---------------------------------------------------------------- layout and panels
function layout() {
  if (!S.g) return;
  const W = window.innerWidth, H = S.height;
  const mainH = H - 40, sideW = Math.max(240, Math.min(440, Math.round(W * 0.3)));
  const mainH2 = mainH - 30;  // the tool bar
  const size = Math.max(200, Math.min(E.compare ? (W - sideW - 20) / 2 : W - sideW - 14, mainH2)) | 0;
  for (const el of [axial, $("axial2")]) { el.style.width = size + "px"; el.style.height = size + "px"; }
  $("axial2").style.display = E.compare ? "block" : "none";
  S.vw = size; S.vh = size;
  const { nx, ny, nz, spacing: [sx, sy, sz] } = S.g;
  for (const [R, wmm] of [[REFORMATS[0], nx * sx], [REFORMATS[1], ny * sy]]) {
    let w = sideW - 8, h = Math.round(w * nz * sz / wmm);
    const cap = Math.round(mainH * 0.34);
    if (h > cap) { w = Math.round(w * cap / h); h = cap; }
    R.canvas.style.width = w + "px"; R.canvas.style.height = h + "px"; R.cw = w; R.h = h; R.lineX = R.lineY = null;
  }
  A.transform = ""; A.cross = ""; B.transform = "";
  setFrameHeight(H);
  requestDraw();
}

let layerPanelKey = "";
function renderLayerPanel() {
  // rebuilt only when a layer appears, loads, fails or changes its decision: a rerun must not replace a
  // slider being dragged
  // (a new version of the structure being edited only changes its row's text: no rebuild per edit)
  const key = JSON.stringify([E.active, [...S.layers.values()].map((l) => [l.name, l.detail, !!l.file, !!l.bits, l.error,
    l.structure && l.structure.decision])]);
  if (key === layerPanelKey) {
    for (const row of $("layers").querySelectorAll(".row")) {
      const l = S.layers.get(row.dataset.layer), nm = row.querySelector(".nm"), text = l && layerText(l);
      if (l && nm.textContent !== text) nm.textContent = text;
    }
    return;
  }
  layerPanelKey = key;
  const box = $("layers");
  box.textContent = "";
  const h = document.createElement("div"); h.className = "cap"; h.textContent = "Layers and structures"; box.append(h);
  for (const l of S.layers.values()) {
    const row = document.createElement("div"); row.className = "row" + (E.active === l.name ? " active" : "");
    row.dataset.layer = l.name;
    const cb = document.createElement("input"); cb.type = "checkbox"; cb.checked = l.on; cb.setAttribute("aria-label", "show " + l.name);
    cb.onchange = () => {  // a structure not drawn yet is asked for
      l.on = cb.checked; requestDraw();
      if (l.on && l.structure && !l.file) queue({ type: "show", name: l.name });
    };
    const sw = document.createElement("span"); sw.className = "sw"; sw.style.background = `rgb(${l.colour.join(",")})`;
    const name = document.createElement("span"); name.className = "nm";
    const st = l.structure;
    name.textContent = layerText(l);
    const op = document.createElement("input"); op.type = "range"; op.min = "0"; op.max = "1"; op.step = "0.05"; op.value = String(l.opacity);
    op.setAttribute("aria-label", l.name + " opacity");
    op.oninput = () => { l.opacity = parseFloat(op.value); requestDraw(); };
    const acts = document.createElement("span"); acts.className = "acts";
    if (st) {
      if (st.decision) {
        const mark = document.createElement("span"); mark.className = st.decision === "accepted" ? "acc" : "rej";
        mark.textContent = st.decision === "accepted" ? "✓ accepted" : "✗ rejected"; mark.dataset.decision = st.decision; acts.append(mark);
      }
      acts.append(actButton("Edit", `edit ${l.name}`, () => setActive(l.name)),
        actButton("Accept", `accept ${l.name}`, () => queue({ type: "decide", name: l.name, accepted: true })),
        actButton("Reject", `reject ${l.name}`, () => queue({ type: "decide", name: l.name, accepted: false })));
    }
    row.append(cb, sw, name, op, acts); box.append(row);
  }
  renderCompareChoices();
}
function layerText(l) {
  const st = l.structure;
  return l.name + (l.detail ? ` (${l.detail})` : "") + (st ? ` · ${st.kind} · ${st.provenance}${st.version ? " v" + st.version : ""}` : "")
    + (l.bits ? "" : l.error ? " · failed" : l.file ? " · loading…" : st && !st.shown ? "" : " · computing…");
}
function actButton(text, label, onclick) {
  const b = document.createElement("button"); b.textContent = text; b.setAttribute("aria-label", label); b.onclick = onclick;
  return b;
}

function renderLesions(rows, source, decisions) {
  const box = $("lesions");
  box.textContent = "";
  if (!rows.length) return;
  const h = document.createElement("div"); h.className = "cap"; h.textContent = `Lesions (${source})`; box.append(h);
  for (const r of rows) {
    const b = document.createElement("button"); b.dataset.lesion = r.lesion;
    b.textContent = `${r.lesion} · ${r.side} · ${r.volume_ml} ml · slice ${r.slice + 1}`;
    b.onclick = () => goTo(r.slice, r.y, r.x);
    const row = document.createElement("div"); row.className = "row"; row.append(b);
    if (r.structure) {  // a lesion of the automatic contour: decided on its own
      const d = (decisions || {})[r.lesion];
      if (d) { const m = document.createElement("span"); m.className = d === "accepted" ? "acc" : "rej"; m.textContent = d === "accepted" ? "✓" : "✗"; m.dataset.decision = d; row.append(m); }
      for (const [text, ok] of [["Accept", true], ["Reject", false]]) {
        const a = actButton(text, `${text.toLowerCase()} lesion ${r.lesion}`, () => queue({ type: "decide", name: r.structure, lesions: [r.lesion], accepted: ok }));
        a.className = "dec"; row.append(a);
      }
    }
    box.append(row);
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

function voxelAt(ev, fractional = false) {  // fractional: the point in voxel units, for painting
  const r = axial.getBoundingClientRect(), v = view();
  const fi = (ev.clientX - r.left - v.ox) / (v.sx * v.s), fj = (ev.clientY - r.top - v.oy) / (v.sy * v.s);
  const i = Math.floor(fi), j = Math.floor(fj);
  if (i < 0 || j < 0 || i >= S.g.nx || j >= S.g.ny) return null;
  return fractional ? [S.z, fj - 0.5, fi - 0.5] : [S.z, j, i];
}
function huAt(zyx) { return S.ready[zyx[0]] ? S.vol[(zyx[0] * S.g.ny + zyx[1]) * S.g.nx + zyx[2]] : null; }
function toMm([k, j, i]) {  // LPS mm of a voxel centre: origin + direction · (index · spacing)
  const { origin: o, direction: D, spacing: sp } = S.g, ijk = [i * sp[0], j * sp[1], k * sp[2]];
  return [0, 1, 2].map((r) => o[r] + D[3 * r] * ijk[0] + D[3 * r + 1] * ijk[1] + D[3 * r + 2] * ijk[2]);
}
function emit(reason) {
  S.seq += 1; S.sentSlice = S.z;
  const now = performance.now();
  for (const m of E.outbox) if (!E.sentAt.has(m.id)) E.sentAt.set(m.id, now);  // the save time starts here
  E.sentEvents = E.events.length;
  setComponentValue({ case: S.key, reason, slice: S.z, hu: S.hover ? S.hover.hu : null,
    voxel: S.hover ? S.hover.zyx : null, click: S.click, seq: S.seq, outbox: E.outbox, activity: E.events });
}
function updateHover(ev) {
  const zyx = voxelAt(ev), hu = zyx ? huAt(zyx) : null;
  S.hover = zyx && hu !== null ? { zyx, hu } : null;
  $("hu").textContent = S.hover ? `HU ${hu} at (x ${zyx[2]}, y ${zyx[1]})` : "";
}

const KEYS = { ArrowUp: 1, ArrowRight: 1, ArrowDown: -1, ArrowLeft: -1, PageUp: 10, PageDown: -10 };
const TOOL_KEYS = { n: "nav", c: "segment", b: "brush", e: "erase", t: "hu", f: "outline" };
document.addEventListener("keydown", (ev) => {
  if (!S.g || (ev.target && (ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT"))) return;
  note("key");
  const k = ev.key.toLowerCase();
  if ((ev.ctrlKey || ev.metaKey) && (k === "z" || k === "y")) { if (k === "y" || ev.shiftKey) redo(); else undo(); }
  else if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  else if (k in TOOL_KEYS) setTool(TOOL_KEYS[k]);
  else if (k === "[" || k === "]") setRadius(E.radiusMm + (k === "]" ? 0.5 : -0.5));
  else if (k === "i") interpolate();
  else if (ev.key === "?") toggleHelp();
  else if (ev.key === "Escape") toggleHelp(false);
  else if (ev.key in KEYS) setSlice(S.z + KEYS[ev.key]);
  else if (ev.key === "Home") setSlice(0);
  else if (ev.key === "End") setSlice(S.g.nz - 1);
  else return;
  ev.preventDefault();
});

for (const el of [axial, $("axial2")]) el.addEventListener("wheel", (ev) => {
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
  if (ev.button === 0 && !ev.ctrlKey && PAINTING.has(E.tool)) {
    const zyx = voxelAt(ev, true);
    if (zyx && startStroke(zyx)) { axial.setPointerCapture(ev.pointerId); ev.preventDefault(); return; }
  }
  const mode = ev.button === 2 || (ev.button === 0 && ev.ctrlKey) ? "wl" : ev.button === 1 ? "pan" : "press";
  drag = { mode, x: ev.clientX, y: ev.clientY, W: S.W, L: S.L, panX: S.panX, panY: S.panY };
  axial.setPointerCapture(ev.pointerId);
  ev.preventDefault();
});
axial.addEventListener("pointermove", (ev) => {
  if (!S.g) return;
  updateHover(ev);
  moveRing(ev);
  if (E.stroke) { noteEvery("pointer"); const zyx = voxelAt(ev, true); if (zyx) continueStroke(zyx); return; }
  if (!drag) return;
  const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
  if (drag.mode === "press" && Math.hypot(dx, dy) > 4) drag.mode = "pan";
  if (drag.mode === "wl") {
    const k = Math.max(1, drag.W / 300);
    S.wlDragging = true;
    S.W = Math.max(1, Math.round(drag.W + dx * k)); S.L = Math.round(drag.L + dy * k); requestDraw();
  } else if (drag.mode === "pan") { S.panX = drag.panX + dx; S.panY = drag.panY + dy; requestDraw(); }
});
axial.addEventListener("pointerleave", () => { $("brushring").setAttribute("r", "0"); });
axial.addEventListener("pointercancel", () => {
  if (E.stroke) endStroke();
  if (drag && drag.mode === "wl") { S.wlDragging = false; requestDraw(); }
  drag = null;
});
axial.addEventListener("pointerup", (ev) => {
  if (E.stroke) { endStroke(); return; }
  if (!drag) return;
  const mode = drag.mode; drag = null;
  if (mode === "wl") { S.wlDragging = false; requestDraw(); }
  if (mode !== "press") return;
  const zyx = voxelAt(ev);
  if (!zyx) return;
  updateHover(ev);
  S.cy = zyx[1]; S.cx = zyx[2];
  requestDraw();
  if (E.tool !== "segment") return;  // navigation: a click only moves the crosshair
  S.click = { zyx, mm: toMm(zyx).map((v) => Math.round(v * 1000) / 1000), hu: huAt(zyx) };
  emit("click");
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
  acknowledge(args);
  const names = new Set();
  for (const a of args.layers) {
    names.add(a.name);
    let l = S.layers.get(a.name);
    if (!l) {
      l = { name: a.name, colour: a.colour, opacity: a.opacity, on: a.structure ? a.structure.shown : true, bits: null, file: null, requested: null, version: -1 };
      S.layers.set(a.name, l);
    }
    l.detail = a.detail; l.file = a.file; l.structure = a.structure || null;
    if (!a.file || l.requested === a.file) continue;
    // a structure this page edits already holds what the server stored: fetch only a version made elsewhere
    // (interpolation, a new structure, another tab), never while edits of it are on their way
    if (l.structure && l.bits && (a.structure.version <= l.version || E.outbox.some((m) => m.name === l.name))) continue;
    l.requested = a.file; l.version = a.structure ? a.structure.version : -1; l.loadingVersion = l.version; loadMask(l, a.file, S.gen);
  }
  for (const n of [...S.layers.keys()]) if (!names.has(n)) S.layers.delete(n);
  const files = new Set(args.layers.map((a) => a.file));
  for (const f of [...S.case.masks.keys()]) if (!files.has(f)) S.case.masks.delete(f);  // a replaced mask (a new click) goes
  renderLayerPanel();
  const lj = JSON.stringify([args.lesions, args.lesion_source, args.lesion_decisions]);
  if (lj !== S.lesionsJson) { S.lesionsJson = lj; renderLesions(args.lesions, args.lesion_source, args.lesion_decisions); }
  if (args.presets && JSON.stringify(args.presets) !== E.presetsJson) setPresets(args.presets);
  if (args.active && args.active !== E.offered) { E.offered = args.active; if (S.layers.has(args.active)) setActive(args.active); }
  showEditing();
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

// ---------------------------------------------------------------- editing
// Painting changes the structure's bits in the page at once (the next frame shows it); each stroke becomes
// one undo step and one message: the slice's added and removed voxels in their bounding box as packed bits
// (the wire format of lungseg/structures.py).  Messages wait in an outbox that goes with every value sent
// to Python until Python says (args.ack) it has stored them as a new version: a value that Streamlit
// replaces before a rerun read it loses nothing.
var E;
function resetEditing() {
  E = { tool: E ? E.tool : "nav", radiusMm: E ? E.radiusMm : 5, preset: E ? E.preset : null, presets: E ? E.presets : {},
    presetsJson: E ? E.presetsJson : "", active: null, offered: E ? E.offered : null, stroke: null, undo: [], redo: [],
    outbox: [], nextId: E ? E.nextId : Date.now(), sentAt: new Map(), saves: E ? E.saves : [], events: [], sentEvents: 0,
    lastNote: {}, edited: new Map(), touched: new Set(), compare: null, timer: null, error: "" };
}
resetEditing();
const UNDO_STEPS = 100;
const PAINTING = new Set(["brush", "erase", "hu", "outline"]);

function setTool(tool) {
  E.tool = tool;
  for (const b of document.querySelectorAll("[data-tool]")) b.classList.toggle("on", b.dataset.tool === tool);
  document.body.dataset.tool = tool;
  axial.style.cursor = PAINTING.has(tool) ? "none" : "crosshair";
  $("brushring").setAttribute("r", "0");
  showEditing();
}
function setRadius(mm) {
  E.radiusMm = Math.max(0.5, Math.min(50, Math.round(mm * 2) / 2));
  $("radius").value = String(E.radiusMm);
}
function setPresets(presets) {
  E.presetsJson = JSON.stringify(presets); E.presets = presets;
  const sel = $("preset"); sel.textContent = "";
  for (const [name, [lo, hi]] of Object.entries(presets)) {
    const o = document.createElement("option"); o.value = name; o.textContent = `${name} (${lo} to ${hi} HU)`; sel.append(o);
  }
  if (!(E.preset in presets)) E.preset = Object.keys(presets)[0] || null;
  sel.value = E.preset || "";
}
function setActive(name) {
  E.active = name; layerPanelKey = ""; renderLayerPanel(); showEditing();
}
function activeLayer() { const l = E.active ? S.layers.get(E.active) : null; return l && l.bits && l.structure ? l : null; }
function showEditing() {
  $("editing").textContent = E.active ? `editing ${E.active}` : PAINTING.has(E.tool) ? "choose a structure to edit (Edit)" : "";
  const waiting = E.outbox.length;
  $("saved").textContent = E.error ? E.error : waiting ? `saving ${waiting}…` : E.saves.length ? "saved" : "";
  $("undo").disabled = !E.undo.length; $("redo").disabled = !E.redo.length;
  document.body.dataset.outbox = String(waiting);
  document.body.dataset.undo = String(E.undo.length);
}

// activity for the editing-effort measure: the time of a pointer press, a key or an edit (a move only
// once a second), sent with the next value, or after 15 s (browser-only work such as stepping does not
// cost a rerun per event)
const ACTIVITY_FLUSH_MS = 15000;
function note(kind) {
  E.events.push([Math.round((performance.timeOrigin + performance.now())) / 1000, kind]);
  if (!E.timer) E.timer = setTimeout(() => { E.timer = null; if (E.events.length > E.sentEvents) emit("activity"); }, ACTIVITY_FLUSH_MS);
}
function noteEvery(kind) {
  const now = performance.now();
  if (!(now - (E.lastNote[kind] || 0) < 1000)) { E.lastNote[kind] = now; note(kind); }
}

// ---- painting on the shown slice
function sliceBits(l, z) {  // the slice as one byte per voxel
  const { nx, ny } = S.g, n = nx * ny, out = new Uint8Array(n), t0 = z * n, bits = l.bits;
  for (let p = 0; p < n; p++) { const t = t0 + p; out[p] = (bits[t >> 3] >> (7 - (t & 7))) & 1; }
  return out;
}
function setVoxel(bits, t, on) { if (on) bits[t >> 3] |= 0x80 >> (t & 7); else bits[t >> 3] &= ~(0x80 >> (t & 7)); }

function startStroke(zyx) {
  const l = activeLayer();
  if (!l) { showEditing(); return false; }
  if (!S.ready[S.z]) return false;
  E.stroke = { l, z: S.z, before: sliceBits(l, S.z), last: null, path: [], tool: E.tool };
  if (E.tool === "outline") { E.stroke.path.push([zyx[2], zyx[1]]); drawLasso(); }
  else stampTo(zyx);
  return true;
}
function continueStroke(zyx) {
  if (E.stroke.tool === "outline") {
    const [px, py] = E.stroke.path[E.stroke.path.length - 1], x = zyx[2], y = zyx[1];
    if (Math.hypot(x - px, y - py) >= 0.5) { E.stroke.path.push([x, y]); drawLasso(); }
    return;
  }
  stampTo(zyx);
}
// discs of the brush radius (in mm, so an ellipse in voxels) along the segment from the last point
function stampTo(zyx) {
  const st = E.stroke, [, y, x] = zyx, last = st.last || [y, x];
  const { spacing: [sx, sy] } = S.g, r = E.radiusMm, step = Math.max(0.25, Math.min(r / sx, r / sy) / 2);
  const d = Math.hypot(y - last[0], x - last[1]), n = Math.max(1, Math.ceil(d / step));
  for (let k = st.last ? 1 : 0; k <= n; k++) stamp(last[0] + (y - last[0]) * k / n, last[1] + (x - last[1]) * k / n);
  st.last = [y, x];
  touchSlice(st.l, st.z);
}
function stamp(cy, cx) {
  const st = E.stroke, { nx, ny, spacing: [sx, sy] } = S.g, r = E.radiusMm, t0 = st.z * nx * ny;
  const on = st.tool !== "erase", range = st.tool === "hu" ? E.presets[E.preset] : null;
  const ry = r / sy, rx = r / sx, bits = st.l.bits, vol = S.vol;
  const b = [Math.max(0, Math.floor(cy - ry)), Math.max(0, Math.floor(cx - rx)), Math.min(ny, Math.ceil(cy + ry) + 1), Math.min(nx, Math.ceil(cx + rx) + 1)];
  const d = E.dirty;
  E.dirty = d ? [Math.min(d[0], b[0]), Math.min(d[1], b[1]), Math.max(d[2], b[2]), Math.max(d[3], b[3])] : b;
  for (let j = Math.max(0, Math.ceil(cy - ry)); j <= Math.min(ny - 1, Math.floor(cy + ry)); j++) {
    const dy = (j - cy) * sy, half = Math.sqrt(Math.max(0, r * r - dy * dy)) / sx;
    for (let i = Math.max(0, Math.ceil(cx - half)); i <= Math.min(nx - 1, Math.floor(cx + half)); i++) {
      const t = t0 + j * nx + i;
      if (range && (vol[t] < range[0] || vol[t] > range[1])) continue;
      setVoxel(bits, t, on);
    }
  }
}
// the outline filled with the even-odd rule at voxel centres (a closed freehand outline)
function fillOutline(st) {
  const pts = st.path, { nx, ny } = S.g, t0 = st.z * nx * ny;
  if (pts.length < 3) return;
  for (let j = 0; j < ny; j++) {
    const xs = [];
    for (let a = 0, b = pts.length - 1; a < pts.length; b = a++) {
      const [xa, ya] = pts[a], [xb, yb] = pts[b];
      if ((ya > j) !== (yb > j)) xs.push(xa + (j - ya) * (xb - xa) / (yb - ya));
    }
    xs.sort((p, q) => p - q);
    for (let k = 0; k + 1 < xs.length; k += 2) {
      for (let i = Math.max(0, Math.ceil(xs[k])); i <= Math.min(nx - 1, Math.floor(xs[k + 1])); i++) setVoxel(st.l.bits, t0 + j * nx + i, true);
    }
  }
  touchSlice(st.l, st.z);
}
function touchSlice(l, z) {
  if (l.axialRuns) l.axialRuns[z] = null;
  l.rev = (l.rev || 0) + 1;
  requestDraw();
}
function endStroke() {
  const st = E.stroke;
  if (st.tool === "outline") { fillOutline(st); $("lasso").setAttribute("points", ""); }
  E.stroke = null;
  const after = sliceBits(st.l, st.z), added = [], removed = [];
  for (let p = 0; p < after.length; p++) if (after[p] !== st.before[p]) (after[p] ? added : removed).push(p);
  requestDraw();  // the reformats catch up
  if (!added.length && !removed.length) return;
  const step = { name: st.l.name, assisted: st.tool === "hu",
    slices: [{ z: st.z, added: Int32Array.from(added), removed: Int32Array.from(removed) }] };
  E.undo.push(step); if (E.undo.length > UNDO_STEPS) E.undo.shift();
  E.redo = [];
  send(step, false);
}
function drawLasso() {
  const v = view();
  $("lasso").setAttribute("points", E.stroke.path.map(([x, y]) => `${v.ox + (x + 0.5) * v.sx * v.s},${v.oy + (y + 0.5) * v.sy * v.s}`).join(" "));
}
function moveRing(ev) {
  if (!PAINTING.has(E.tool) || E.tool === "outline") return;
  const r = axial.getBoundingClientRect(), v = view();
  const ring = $("brushring");
  ring.setAttribute("cx", ev.clientX - r.left); ring.setAttribute("cy", ev.clientY - r.top);
  ring.setAttribute("r", String(E.radiusMm * v.s));
}

// ---- undo / redo: a step's voxels set back locally at once, and sent as an edit of their own
function applyStep(step, reverse) {
  const l = S.layers.get(step.name);
  if (!l || !l.bits) return false;
  const { nx, ny } = S.g, n = nx * ny;
  for (const sl of step.slices) {
    for (const p of sl.added) setVoxel(l.bits, sl.z * n + p, !reverse);
    for (const p of sl.removed) setVoxel(l.bits, sl.z * n + p, reverse);
    if (l.axialRuns) l.axialRuns[sl.z] = null;
  }
  if (step.slices.length === 1 && step.slices[0].z === S.z) {  // only the box of the step is redrawn
    const sl = step.slices[0];
    let y0 = ny, x0 = nx, y1 = 0, x1 = 0;
    for (const list of [sl.added, sl.removed]) for (const p of list) {
      const y = (p / nx) | 0, x = p - y * nx;
      if (y < y0) y0 = y; if (y >= y1) y1 = y + 1; if (x < x0) x0 = x; if (x >= x1) x1 = x + 1;
    }
    const d = E.dirty;
    E.dirty = d ? [Math.min(d[0], y0), Math.min(d[1], x0), Math.max(d[2], y1), Math.max(d[3], x1)] : [y0, x0, y1, x1];
  }
  l.rev = (l.rev || 0) + 1;
  if (step.slices.length === 1 && S.z !== step.slices[0].z) setSlice(step.slices[0].z);
  requestDraw();
  return true;
}
function undo() {
  const step = E.undo.pop();
  if (!step) return;
  quickly();
  if (applyStep(step, true)) { E.redo.push(step); send(step, true); }
  showEditing();
}
function redo() {
  const step = E.redo.pop();
  if (!step) return;
  quickly();
  if (applyStep(step, false)) { E.undo.push(step); send(step, false); }
  showEditing();
}
// the next frames draw the axial view only; the reformats catch up once undo / redo presses pause
function quickly() {
  E.quick = true;
  clearTimeout(E.quickTimer);
  E.quickTimer = setTimeout(() => { E.quick = false; requestDraw(); }, 150);
}
// a version made by the server (interpolation) replacing what this page shows: one undo step
function replacedByServer(l, before, after) {
  const { nx, ny, nz } = S.g, n = nx * ny, slices = [];
  for (let z = 0; z < nz; z++) {
    let added = null, removed = null;
    for (let p = 0; p < n; p++) {
      const t = z * n + p, a = (before[t >> 3] >> (7 - (t & 7))) & 1, b = (after[t >> 3] >> (7 - (t & 7))) & 1;
      if (a !== b) { if (b) (added = added || []).push(p); else (removed = removed || []).push(p); }
    }
    if (added || removed) slices.push({ z, added: Int32Array.from(added || []), removed: Int32Array.from(removed || []) });
  }
  if (!slices.length) return;
  E.undo.push({ name: l.name, assisted: true, slices }); if (E.undo.length > UNDO_STEPS) E.undo.shift();
  E.redo = [];
  showEditing();
}

// ---- the wire format: per slice, the box of the changed voxels and its added / removed voxels as
// base64 of packed bits (row-major, first voxel in the most significant bit)
function b64(bytes) {
  let s = "";
  for (let k = 0; k < bytes.length; k += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(k, k + 0x8000));
  return btoa(s);
}
function sliceDelta(sl, reverse) {
  const { nx } = S.g, added = reverse ? sl.removed : sl.added, removed = reverse ? sl.added : sl.removed;
  let y0 = Infinity, x0 = Infinity, y1 = -1, x1 = -1;
  for (const list of [added, removed]) for (const p of list) {
    const y = (p / nx) | 0, x = p - y * nx;
    if (y < y0) y0 = y; if (y > y1) y1 = y; if (x < x0) x0 = x; if (x > x1) x1 = x;
  }
  const w = x1 - x0 + 1, h = y1 - y0 + 1;
  const pack = (list) => {
    if (!list.length) return "";
    const out = new Uint8Array(Math.ceil(w * h / 8));
    for (const p of list) { const y = (p / nx) | 0, t = (y - y0) * w + (p - y * nx - x0); out[t >> 3] |= 0x80 >> (t & 7); }
    return b64(out);
  };
  return { axis: "axial", index: sl.z, box: [y0, x0, y1 + 1, x1 + 1], added: pack(added), removed: pack(removed) };
}
function send(step, reverse) {
  for (const sl of step.slices) { const e = E.edited.get(step.name) || new Set(); e.add(sl.z); E.edited.set(step.name, e); }
  E.touched.add(step.name);
  note("edit");
  queue({ type: "edit", name: step.name, assisted: !!step.assisted, deltas: step.slices.map((sl) => sliceDelta(sl, reverse)) });
}
// the value goes to Streamlit after the frame showing the edit is painted: the parent page's handling of
// it runs on the same thread and would otherwise delay that frame
// One value at a time is on its way: messages made meanwhile (rapid undos) go together once Python has
// answered, so a burst of edits costs a few reruns, not one each (re-sent after 3 s without an answer).
function queue(message) {
  E.outbox.push({ id: E.nextId++, ...message });
  showEditing();
  flush();
}
function flush() {
  if (E.emitQueued || !E.outbox.length || (E.inFlight && performance.now() - E.inFlight < 3000)) return;
  E.emitQueued = true;
  requestAnimationFrame(() => setTimeout(() => {
    E.emitQueued = false;
    E.inFlight = performance.now();
    emit("edit");
    clearTimeout(E.resend);
    E.resend = setTimeout(flush, 3100);
  }, 0));
}
function interpolate() {
  const l = activeLayer();
  const slices = l ? [...(E.edited.get(l.name) || [])].sort((a, b) => a - b) : [];
  if (!l || slices.length < 2) { E.error = "interpolation needs two or more edited slices of the structure being edited"; showEditing(); E.error = ""; return; }
  E.touched.add(l.name);
  note("edit");
  queue({ type: "interpolate", name: l.name, slices });
}

// Python's acknowledgement: the outbox up to args.ack is stored; the time from a message leaving to its
// acknowledgement is kept for the benchmark (window.__saves)
function acknowledge(args) {
  const ack = args.ack || { id: 0 };
  const now = performance.now();
  while (E.outbox.length && E.outbox[0].id <= ack.id) {
    const m = E.outbox.shift(), t = E.sentAt.get(m.id);
    if (t !== undefined) { E.saves.push({ type: m.type, ms: now - t }); E.sentAt.delete(m.id); }
  }
  if (E.inFlight && !E.outbox.some((m) => E.sentAt.has(m.id))) { E.inFlight = 0; clearTimeout(E.resend); }
  for (const [name, v] of Object.entries(ack.versions || {})) {
    const l = S.layers.get(name);
    if (l && v > l.version) { l.version = v; l.held = Math.max(l.held || 0, v); }
  }
  publishVersions();
  if (!E.inFlight && E.outbox.length) flush();
  if (ack.error && ack.error !== E.lastError) { E.lastError = ack.error; E.error = ack.error; }
  if (E.sentEvents) { E.events = E.events.slice(E.sentEvents); E.sentEvents = 0; }
  window.__saves = E.saves;
}

// the structure's bits as the page shows them, for tests: base64 of the packed [z, y, x] bits
window.__viewerMask = (name) => { const l = S.layers.get(name); return l && l.bits ? b64(l.bits) : null; };

// ---- the side-by-side comparison: two linked views of the same slice, zoom, pan and window
function renderCompareChoices() {
  const names = [...S.layers.values()].filter((l) => l.structure).map((l) => l.name);
  for (const [id, k] of [["cmpA", 0], ["cmpB", 1]]) {
    const sel = $(id), keep = sel.value;
    sel.textContent = "";
    for (const n of names) { const o = document.createElement("option"); o.value = n; o.textContent = n; sel.append(o); }
    sel.value = names.includes(keep) ? keep : names[Math.min(k, names.length - 1)] || "";
  }
  if (E.compare) readCompare();
}
function readCompare() {
  E.compare = $("cmp").checked ? [$("cmpA").value, $("cmpB").value] : null;
  $("cap1").textContent = E.compare ? E.compare[0] : ""; $("cap2").textContent = E.compare ? E.compare[1] : "";
  layout();
}
$("cmp").onchange = readCompare; $("cmpA").onchange = readCompare; $("cmpB").onchange = readCompare;
{
  const v2 = $("axial2");
  let d2 = null;
  v2.addEventListener("pointerdown", (ev) => { d2 = { x: ev.clientX, y: ev.clientY, panX: S.panX, panY: S.panY }; v2.setPointerCapture(ev.pointerId); });
  v2.addEventListener("pointermove", (ev) => { if (d2) { S.panX = d2.panX + ev.clientX - d2.x; S.panY = d2.panY + ev.clientY - d2.y; requestDraw(); } });
  v2.addEventListener("pointerup", () => { d2 = null; });
}

function toggleHelp(show) {
  const box = $("helpbox");
  box.hidden = show === undefined ? !box.hidden : !show;
}
for (const b of document.querySelectorAll("[data-tool]")) b.onclick = () => setTool(b.dataset.tool);
$("radius").onchange = () => setRadius(parseFloat($("radius").value) || E.radiusMm);
$("preset").onchange = () => { E.preset = $("preset").value; };
$("undo").onclick = undo; $("redo").onclick = redo; $("interp").onclick = interpolate;
$("helpbtn").onclick = () => toggleHelp();
setTool("nav");

// the version of each structure the page's bits hold (for tests and benchmarks)
function publishVersions() {
  document.body.dataset.versions = [...S.layers.values()].filter((l) => l.structure && l.bits).map((l) => `${l.name}:${l.held || 0}`).join(",");
}
document.addEventListener("pointerdown", () => { if (S.g) note("pointer"); }, true);
