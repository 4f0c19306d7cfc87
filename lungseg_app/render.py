"""Slice rendering for the viewer: numpy → PNG data URIs (cached), and the client-side viewer HTML.

The whole axial stack is sent once as pre-rendered PNGs inside one HTML component; stepping through
slices (slider, ArrowUp/ArrowDown, PageUp/PageDown, Home/End, mouse wheel) swaps ``img.src`` in the
browser and never reruns Python.  Overlays are separate transparent PNGs stacked on top, so opacity
changes are CSS only.
"""

from __future__ import annotations

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import streamlit as st
from PIL import Image
from scipy import ndimage as ndi

WINDOWS = {  # name → (width, level)
    "Lung (W1500 / L−600)": (1500, -600),
    "Mediastinum (W350 / L50)": (350, 50),
    "Bone (W2000 / L500)": (2000, 500),
}
LAYERS = {  # layer → RGB
    "lung region": (70, 150, 255),
    "automatic tumour": (255, 60, 60),
    "manual contour": (255, 215, 0),
}
_POOL = ThreadPoolExecutor(max_workers=2)


def window_u8(arr: np.ndarray, width: float, level: float) -> np.ndarray:
    lo = level - width / 2.0
    out = (arr.astype(np.float32) - lo) * (255.0 / max(float(width), 1.0))
    return np.clip(out, 0, 255).astype(np.uint8)


def png_uri(img: Image.Image) -> str:
    b = io.BytesIO()
    img.save(b, "PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(b.getvalue()).decode("ascii")


def gray_uri(u8: np.ndarray) -> str:
    """A windowed slice as a JPEG (quality 92) data URI: for display only, visually lossless at
    this quality, and 25× faster to encode and 2–3× smaller than PNG, which is what makes a case
    open quickly; HU values are never read back from these images."""
    b = io.BytesIO()
    Image.fromarray(u8, "L").save(b, "JPEG", quality=92)
    return "data:image/jpeg;base64," + base64.b64encode(b.getvalue()).decode("ascii")


def mask_uri(mask2d: np.ndarray, rgb: tuple[int, int, int]) -> str:
    im = Image.fromarray(mask2d.astype(np.uint8), "P")
    im.putpalette([0, 0, 0, *rgb] + [0] * (256 - 2) * 3)
    b = io.BytesIO()
    im.save(b, "PNG", transparency=0, compress_level=1)
    return "data:image/png;base64," + base64.b64encode(b.getvalue()).decode("ascii")


def outline(mask: np.ndarray) -> np.ndarray:
    """In-plane boundary of a [z, y, x] mask (each axial slice on its own)."""
    if not mask.any():
        return mask
    eroded = ndi.binary_erosion(mask, structure=np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], bool), border_value=0)
    return mask & ~eroded


def encode_stack(arr: np.ndarray, width: float, level: float) -> list[str]:
    """Every axial slice windowed as a grayscale JPEG data URI."""
    return list(_POOL.map(lambda k: gray_uri(window_u8(arr[k], width, level)), range(arr.shape[0])))


def encode_overlay(mask: np.ndarray, rgb: tuple[int, int, int], style: str) -> dict[int, str]:
    """Slice index → PNG data URI for the slices where ``mask`` has voxels (filled or outline)."""
    m = outline(mask) if style == "outline" else mask
    ks = [int(k) for k in np.flatnonzero(m.reshape(m.shape[0], -1).any(axis=1))]
    return dict(zip(ks, _POOL.map(lambda k: mask_uri(m[k], rgb), ks)))


@st.cache_resource(max_entries=6, show_spinner=False)
def cached_stack(case_key: str, _arr: np.ndarray, width: float, level: float) -> list[str]:
    return encode_stack(_arr, width, level)


@st.cache_resource(max_entries=24, show_spinner=False)
def cached_overlay(case_key: str, layer: str, name: str, _mask: np.ndarray, style: str) -> dict[int, str]:
    return encode_overlay(_mask, LAYERS[layer], style)


def context_images(arr: np.ndarray, spacing_xyz, y0: int, x0: int, width: float, level: float,
                   masks: list[tuple[np.ndarray, tuple[int, int, int]]]) -> tuple[str, str]:
    """Coronal (at row y0) and sagittal (at column x0) reformats, superior at the top, physical aspect."""
    sx, sy, sz = spacing_xyz

    def render(plane: np.ndarray, planes_m: list, px_mm: float) -> str:
        rgb = np.repeat(window_u8(plane, width, level)[..., None], 3, axis=-1).astype(np.float32)
        for m, colour in planes_m:
            rgb[m] = 0.55 * rgb[m] + 0.45 * np.array(colour, np.float32)
        img = Image.fromarray(np.flipud(rgb.astype(np.uint8)), "RGB")
        h = max(1, int(round(plane.shape[0] * sz / px_mm)))
        return png_uri(img.resize((plane.shape[1], h), Image.BILINEAR))

    cor = render(arr[:, y0, :], [(m[:, y0, :], c) for m, c in masks], sx)
    sag = render(arr[:, :, x0], [(m[:, :, x0], c) for m, c in masks], sy)
    return cor, sag


def viewer_html(*, case_key: str, slices: list[str], overlays: list[dict], start: int, token: str,
                shape_zyx, spacing_xyz, z_mm: list[float], coronal: str, sagittal: str,
                x0: int, y0: int, display_px: int = 560) -> tuple[str, int]:
    """The viewer component's HTML and its height in pixels."""
    nz, ny, nx = shape_zyx
    sx, sy, sz = spacing_xyz
    w_mm, h_mm = nx * sx, ny * sy
    scale = display_px / max(w_mm, h_mm)
    aw, ah = int(round(w_mm * scale)), int(round(h_mm * scale))
    cw = 300
    ch = int(round(nz * sz * cw / w_mm))
    sw = 300
    sh = int(round(nz * sz * sw / (ny * sy)))
    height = max(ah, ch + sh + 60) + 80
    payload = {
        "key": case_key, "n": nz, "start": int(start), "token": token, "slices": slices, "overlays": overlays,
        "z": [round(float(z), 1) for z in z_mm], "ch": ch, "sh": sh, "x0": x0, "y0": y0, "nx": nx, "ny": ny,
    }
    data = json.dumps(payload).replace("</", "<\\/")
    html = _TEMPLATE.replace("__DATA__", data).replace("__AW__", str(aw)).replace("__AH__", str(ah)) \
        .replace("__CW__", str(cw)).replace("__CH__", str(ch)).replace("__SW__", str(sw)).replace("__SH__", str(sh)) \
        .replace("__COR__", coronal).replace("__SAG__", sagittal)
    return html, height


_TEMPLATE = r"""<!doctype html><html><head><meta charset="utf-8"><style>
html,body{margin:0;padding:0;background:#0e1117;color:#e6e6e6;font:14px system-ui,-apple-system,Segoe UI,Roboto,sans-serif}
#wrap{display:flex;gap:16px;align-items:flex-start}
#axial{position:relative;width:__AW__px;height:__AH__px;background:#000;outline:none;cursor:crosshair}
#axial img{position:absolute;left:0;top:0;width:100%;height:100%;image-rendering:auto;pointer-events:none}
.ctx{position:relative;background:#000;margin-bottom:6px}
.ctx img{width:100%;height:100%;display:block}
.line{position:absolute;left:0;right:0;height:0;border-top:1px solid #00ff9c;pointer-events:none}
.vline{position:absolute;top:0;bottom:0;width:0;border-left:1px dashed rgba(255,255,255,.35);pointer-events:none}
#bar{display:flex;gap:12px;align-items:center;margin-top:8px;width:__AW__px}
#slider{flex:1}
#label{min-width:150px;font-variant-numeric:tabular-nums}
.lr{position:absolute;top:4px;font-size:12px;color:#ccc;text-shadow:0 0 2px #000}
.small{font-size:12px;color:#aaa}
</style></head><body>
<div id="wrap">
 <div>
  <div id="axial" tabindex="0" aria-label="axial slice">
   <img id="ct" alt="axial CT slice">
   <span class="lr" style="left:6px">R</span><span class="lr" style="right:6px">L</span>
  </div>
  <div id="bar">
   <input id="slider" type="range" min="1" max="1" value="1" aria-label="axial slice number">
   <span id="label" data-testid="slice-label"></span>
  </div>
  <div class="small" id="help">↑/↓ or wheel: ±1 slice · PgUp/PgDn: ±10 · Home/End</div>
 </div>
 <div>
  <div class="small">Coronal</div>
  <div class="ctx" id="cor" style="width:__CW__px;height:__CH__px"><img src="__COR__" alt="coronal"><div class="line" id="corline"></div></div>
  <div class="small">Sagittal</div>
  <div class="ctx" id="sag" style="width:__SW__px;height:__SH__px"><img src="__SAG__" alt="sagittal"><div class="line" id="sagline"></div></div>
 </div>
</div>
<script>
const D = __DATA__;
const ax = document.getElementById('axial'), ct = document.getElementById('ct');
const slider = document.getElementById('slider'), label = document.getElementById('label');
slider.max = D.n;
const layers = D.overlays.map(o => {
  const im = document.createElement('img'); im.alt = o.name; im.dataset.layer = o.name;
  im.style.opacity = o.opacity; ax.insertBefore(im, ax.querySelector('.lr')); return [o, im];
});
window.__lat = window.__lat || []; window.__pending = null;
ct.onload = () => { if (window.__pending !== null) { const t0 = window.__pending; window.__pending = null;
  requestAnimationFrame(() => { window.__lat.push(performance.now() - t0); window.__painted = ct.dataset.k; }); }
  else { window.__painted = ct.dataset.k; } };
const store = (() => { try { return window.sessionStorage; } catch (e) { return null; } })();
const skey = 'lungseg-slice-' + D.key;
let k = D.start;
try { const s = JSON.parse(store && store.getItem(skey) || 'null'); if (s && s.token === D.token) k = s.k; } catch (e) {}
function show(j) {
  k = Math.max(0, Math.min(D.n - 1, j));
  ct.dataset.k = k; ct.src = D.slices[k];
  for (const [o, im] of layers) { const f = o.frames[k]; if (f) { im.src = f; im.style.display = ''; } else { im.style.display = 'none'; } }
  slider.value = k + 1;
  label.textContent = 'Slice ' + (k + 1) + ' / ' + D.n + '  (z ' + D.z[k] + ' mm)';
  const topc = (D.n - 1 - k + 0.5) / D.n;
  document.getElementById('corline').style.top = (topc * D.ch) + 'px';
  document.getElementById('sagline').style.top = (topc * D.sh) + 'px';
  if (store) try { store.setItem(skey, JSON.stringify({k: k, token: D.token})); } catch (e) {}
}
function step(d, ev) { window.__pending = ev && ev.timeStamp ? performance.now() : performance.now(); show(k + d); }
slider.addEventListener('input', () => { window.__pending = performance.now(); show(parseInt(slider.value, 10) - 1); });
function onKey(ev) {
  const t = ev.target, tag = t && t.tagName ? t.tagName.toLowerCase() : '';
  if (t && t.ownerDocument !== document && (tag === 'input' || tag === 'textarea' || tag === 'select' || t.isContentEditable || (t.getAttribute && t.getAttribute('role') === 'slider'))) return;
  const m = {ArrowUp: 1, ArrowRight: 1, ArrowDown: -1, ArrowLeft: -1, PageUp: 10, PageDown: -10};
  if (ev.key in m) { ev.preventDefault(); step(m[ev.key], ev); }
  else if (ev.key === 'Home') { ev.preventDefault(); window.__pending = performance.now(); show(0); }
  else if (ev.key === 'End') { ev.preventDefault(); window.__pending = performance.now(); show(D.n - 1); }
}
window.addEventListener('keydown', onKey, true);
// keys also work while focus is elsewhere on the page (same-origin component iframe)
try { const P = window.parent; if (P && P !== window) {
  if (P.__lungsegKey) P.document.removeEventListener('keydown', P.__lungsegKey, true);
  const h = (ev) => { if (!window.frameElement || !window.frameElement.isConnected) { try { P.document.removeEventListener('keydown', h, true); } catch (e) {} return; } try { onKey(ev); } catch (e) {} };
  P.__lungsegKey = h;
  P.document.addEventListener('keydown', P.__lungsegKey, true);
} } catch (e) {}
ax.addEventListener('wheel', (ev) => { ev.preventDefault(); step(ev.deltaY < 0 ? 1 : -1, ev); }, {passive: false});
show(k);
ax.focus({preventScroll: true});
</script></body></html>"""
