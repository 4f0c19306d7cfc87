"""Viewer: axial stack stepped client-side, windows, overlays, lesion table, coronal/sagittal context."""

import numpy as np
import streamlit as st

from lungseg_app import gate, render, review_panel, state

st.set_page_config(page_title="lungseg viewer", layout="wide")
user = gate.require_user()
case = state.current()
if case is None:
    st.title("Viewer")
    st.info("No case open: open one on the Home page.")
    st.page_link("app.py", label="← Home")
    st.stop()

vol = case.volume
arr = vol.array
nz = arr.shape[0]

with st.sidebar:
    st.markdown(f"**{case.label}**")
    preset = st.selectbox("Window", list(render.WINDOWS) + ["Custom"], key="win_preset")
    if preset == "Custom":
        width = st.number_input("Width (HU)", 1, 5000, 1500, step=50, key="win_w")
        level = st.number_input("Level (HU)", -1500, 3000, -600, step=10, key="win_l")
    else:
        width, level = render.WINDOWS[preset]
    st.divider()
    style = st.radio("Overlay style", ["outline", "filled"], horizontal=True, key="ov_style")
    layers = []
    avail = {
        "lung region": case.lungs.lung_region,
        "automatic tumour": case.automatic.mask if case.automatic else None,
        "manual contour": case.manual.mask if case.manual else None,
    }
    for name, mask in avail.items():
        if mask is None:
            st.caption(f"{name}: not available")
            continue
        on = st.toggle(name, value=True, key=f"show_{name}")
        op = st.slider(f"{name} opacity", 0.0, 1.0, 0.5 if name == "lung region" else 0.9, 0.05,
                       key=f"op_{name}", disabled=not on, label_visibility="collapsed")
        if on:
            layers.append((name, mask, op))
    if case.manual:
        st.caption(f"Manual contour: {case.manual.name}")
    for n in case.notes:
        st.caption(n)

st.title(f"{case.label}")

what, rows = "automatic tumour", list(case.lesions)
jump = st.session_state.get("jump") or {"slice": nz // 2, "token": f"{case.key}:open"}
if rows:
    st.markdown(f"**Lesions** ({what})")
    table = [{"lesion": r["lesion"], "side": r["side"], "volume (ml)": r["volume_ml"],
              "longest axial diameter (mm)": r["longest_axial_diameter_mm"],
              "slices": f"{r['first_slice'] + 1}–{r['last_slice'] + 1}", "centre slice": r["centroid_slice"] + 1}
             for r in rows]
    st.dataframe(table, hide_index=True, width="content")
    cols = st.columns(min(len(rows), 8) or 1)
    for i, r in enumerate(rows[:8]):
        if cols[i].button(f"Go to lesion {r['lesion']} (slice {r['centroid_slice'] + 1})", key=f"jump_{i}"):
            jump = {"slice": int(r["centroid_slice"]), "token": f"{case.key}:lesion{r['lesion']}:{np.random.randint(1 << 30)}"}
            st.session_state["jump"] = jump
else:
    st.caption("No lesions to list (no tumour model result and no manual contour).")

# context planes through the first lesion, else the middle of the lung region, else the image centre
if rows:
    k0 = rows[0]["centroid_slice"]
    ref = case.automatic.mask if case.automatic else case.manual.mask if case.manual else None
    yx = np.argwhere(ref[k0]) if ref is not None else np.empty((0, 2))
    y0, x0 = (int(yx[:, 0].mean()), int(yx[:, 1].mean())) if len(yx) else (arr.shape[1] // 2, arr.shape[2] // 2)
else:
    lr = case.lungs.lung_region
    yx = np.argwhere(lr.any(axis=0)) if lr.any() else np.empty((0, 2))
    y0, x0 = (int(yx[:, 0].mean()), int(yx[:, 1].mean())) if len(yx) else (arr.shape[1] // 2, arr.shape[2] // 2)

with st.spinner("Rendering slices…"):
    slices = render.cached_stack(case.key, arr, float(width), float(level))
    overlays = []
    for name, mask, op in layers:
        tag = case.manual.name if name == "manual contour" and case.manual else ""
        overlays.append({"name": name, "opacity": op, "frames": render.cached_overlay(case.key, name, tag or "", mask, style)})
    cor, sag = render.context_images(arr, vol.spacing, y0, x0, float(width), float(level),
                                     [(m, render.LAYERS[n]) for n, m, _ in layers if n != "lung region"])
html, height = render.viewer_html(case_key=case.key, slices=slices, overlays=overlays, start=jump["slice"],
                                  token=jump["token"], shape_zyx=arr.shape, spacing_xyz=vol.spacing,
                                  z_mm=list(vol.slice_z_mm()), coronal=cor, sagittal=sag, x0=x0, y0=y0)
st.iframe(html, height=height)
legend = " · ".join(f"<span style='color:rgb{render.LAYERS[n]}'>■</span> {n}" for n, _, _ in layers)
if legend:
    st.markdown(legend, unsafe_allow_html=True)

st.divider()
review_panel.show(case, user)
