"""lungseg: lung isolation and slice-wise 2D U-Net lung-tumour segmentation on chest CT."""

__version__ = "0.1.0"
