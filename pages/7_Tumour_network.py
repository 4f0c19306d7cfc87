"""Model: which automatic model is installed (version, card), and, for an admin, the choice among models/.

Cached automatic contours are keyed by the model's version, so a switch never shows another model's
contours; the server's loaded model changes on the next case opened."""

import streamlit as st

from lungseg.errors import LungsegError
from lungseg.installed_models import chosen_model, choose_model, list_models, read_card
from lungseg_app import gate

st.set_page_config(page_title="Tumour network", layout="wide")
st.title("Automatic model")
user = gate.require_user()

models = list_models()
if not models:
    st.error("No tumour model in models/: the automatic contour is unavailable.")
    st.stop()
in_use = chosen_model()
current = next((m for m in models if m.path.resolve() == in_use.resolve()), models[0])
st.markdown(f"**In use:** `{current.name}` — version `{current.version}`, {current.size_mb:.1f} MB, "
            f"{'with' if current.has_second_stage else 'without'} a second-stage classifier; "
            f"trained on {', '.join(current.trained_on) or 'cases not recorded'}.")

names = [m.name for m in models]
with st.form("choose_model"):
    picked = st.selectbox("Models in models/", names, index=names.index(current.name), key="model_choice")
    if st.form_submit_button("Use this model", disabled=len(models) < 2):
        try:
            chosen = choose_model(picked, gate.reviewer_name(user))
            st.success(f"Now in use: {chosen.name} ({chosen.version}). Cases opened from now on use it.")
            current = chosen
        except LungsegError as exc:
            st.error(str(exc))

shown = next(m for m in models if m.name == st.session_state.get("model_choice", current.name))
st.subheader(f"Model card — {shown.name}")
st.caption(f"version {shown.version}")
st.markdown(read_card(shown))
