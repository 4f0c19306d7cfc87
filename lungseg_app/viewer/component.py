"""The viewer as a bidirectional Streamlit component (static frontend in ``frontend/``, no build step).

Python sends small JSON arguments (case key, URLs of its files, geometry, layers, lesions); the browser
fetches the voxels once per case and does window/level, opacity, layers, zoom, pan, slice stepping and
the reformats itself.  It returns ``{"case", "slice", "hu", "voxel", "click": {"zyx", "mm", "hu"}, "seq"}``
on a click or when slice stepping settles, never on every mouse move.
"""

from __future__ import annotations

from pathlib import Path

import streamlit.components.v1 as components

from .publish import blob_root

FRONTEND = Path(__file__).parent / "frontend"
VERSION = (FRONTEND / "VERSION").read_text().strip()

_viewer = components.declare_component("lungseg_viewer", path=str(FRONTEND))


def data_component_name() -> str:
    """Register the served folder of case files and return its URL name (``/component/<name>/``)."""
    return components.declare_component("lungseg_viewer_files", path=str(blob_root())).name


def viewer(args: dict, *, progress: dict | None = None, height: int = 880, key: str = "lungseg_viewer"):
    """Show the viewer; return its last value (None until the user clicks or steps).  ``args`` are
    :func:`publish.component_args`, or ``{"case", "folder", "status", "label"}`` while a case opens
    (the browser then polls the status file)."""
    return _viewer(**args, files=data_component_name(), progress=progress or {}, height=int(height),
                   version=VERSION, key=key, default=None)
