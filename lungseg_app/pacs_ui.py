"""The app's PACS: a "PACS" source on Home (search, pick a CT series, open it) and "Send to PACS" beside
"Export accepted" in the review panel.

The server and its credentials are the app's settings, read from the environment of the server process
(``LUNGSEG_PACS_URL``, ``LUNGSEG_PACS_USER``/``LUNGSEG_PACS_PASSWORD`` or ``LUNGSEG_PACS_TOKEN``,
``LUNGSEG_PACS_CA_BUNDLE``); a user can neither see nor change them.  Search results show dates, series
descriptions and image counts, never a patient's name or ID.
"""

from __future__ import annotations

import os
from typing import Callable

import streamlit as st

from lungseg.case import CaseSource, ManualSource
from lungseg.errors import LungsegError

SEARCH_LIMIT = 200


def settings():
    """The configured PACS, or None when ``LUNGSEG_PACS_URL`` is not set."""
    from lungseg.dicomweb import ENV_URL, PacsSettings

    if not os.environ.get(ENV_URL, "").strip():
        return None
    return PacsSettings.from_env()


def show_source(open_source: Callable[..., bool]) -> None:
    """Home's PACS tab: search by patient ID and/or study date, pick a CT series, open it."""
    from lungseg.dicomweb import Pacs, SearchQuery, SeriesInfo

    try:
        config = settings()
    except LungsegError as exc:
        st.error(f"PACS settings: {exc}")
        return
    if config is None:
        st.info("No PACS is configured. Set LUNGSEG_PACS_URL (the DICOMweb service, e.g. "
                "https://pacs.example.org/dicom-web) and LUNGSEG_PACS_USER/LUNGSEG_PACS_PASSWORD or "
                "LUNGSEG_PACS_TOKEN in the environment of the app, then restart it.")
        return
    st.caption(f"PACS: `{config.server}` (DICOMweb)")
    c1, c2 = st.columns(2)
    patient = c1.text_input("Patient ID", key="pacs_patient_id")
    date = c2.text_input("Study date (YYYYMMDD or YYYYMMDD-YYYYMMDD)", key="pacs_study_date")
    if st.button("Search the PACS", key="pacs_search"):
        st.session_state.pop("pacs_found", None)
        if not (patient.strip() or date.strip()):
            st.error("Give a patient ID or a study date to search for.")
        else:
            try:
                query = SearchQuery(patient_id=patient.strip() or None, study_date=date.strip() or None,
                                    limit=SEARCH_LIMIT)
                st.session_state["pacs_found"] = [s.as_dict() for s in Pacs(config).search(query)]
            except LungsegError as exc:
                st.error(str(exc))
    found = st.session_state.get("pacs_found")
    if found is None:
        return
    if not found:
        st.info("No CT series found.")
        return
    series = [SeriesInfo(**s) for s in found]
    pick = st.selectbox(f"CT series ({len(series)})", range(len(series)), format_func=lambda i: series[i].title,
                        key="pacs_series")
    if st.button("Open series", key="pacs_open"):
        chosen = series[int(pick)]
        open_source(CaseSource(chosen.url, manual=ManualSource("rtstruct", None, None)), chosen.title)


def send_button(case, accepted, fmt: str, only: str | None, key: str) -> None:
    """"Send to PACS": store the accepted contour(s) as a DICOM SEG or RTSTRUCT on the configured PACS."""
    from lungseg.dicomweb import store_accepted

    try:
        config = settings()
    except LungsegError as exc:
        st.caption(f"Send to PACS: {exc}")
        return
    if config is None:
        return
    if fmt not in ("seg", "rtstruct"):
        st.caption("Send to PACS: choose DICOM SEG or RTSTRUCT.")
        return
    if case.ct.dicom is None:
        st.caption("Send to PACS: this CT is not DICOM, so the PACS has no series to attach the contour to.")
        return
    if st.button("Send to PACS", key=f"{key}_send_pacs"):
        try:
            with st.spinner("Sending to the PACS…"):
                stored = store_accepted(case, accepted, fmt, settings=config, contour=only)
        except LungsegError as exc:
            st.error(str(exc))
        else:
            st.success(f"Stored on {config.server}: " + "; ".join(
                f"{s.modality} “{s.series_description}”" for s in stored))
