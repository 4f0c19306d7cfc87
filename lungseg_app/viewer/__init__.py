"""The case viewer: a Streamlit component with a static frontend, its data files and progressive opening."""

from .layers import LAYER_COLOURS, ViewerCase, lesion_start_slice, viewer_layers

__all__ = ["LAYER_COLOURS", "ViewerCase", "lesion_start_slice", "viewer_layers"]
