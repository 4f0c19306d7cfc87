"""lungseg home page (minimal until the viewer lands): the offline demo case with its lung mask."""

import numpy as np
import streamlit as st

from lungseg.lungs import isolate
from lungseg.phantom import synthetic_chest_ct

st.set_page_config(page_title="lungseg", layout="wide")
st.title("lungseg — lung isolation demo")


@st.cache_resource
def demo():
    phantom = synthetic_chest_ct()
    return phantom, isolate(phantom.ct)


phantom, result = demo()
k = st.slider("Axial slice", 0, phantom.ct.shape[0] - 1, phantom.ct.shape[0] // 2)
img = np.clip((phantom.ct.array[k] + 1350) / 1500, 0, 1)
rgb = np.stack([img] * 3, axis=-1)
rgb[result.lung_region[k]] = 0.6 * rgb[result.lung_region[k]] + 0.4 * np.array([1.0, 0.8, 0.0])
st.image(rgb, caption=f"demo-phantom, slice {k}: {result.summary()}", clamp=True)
