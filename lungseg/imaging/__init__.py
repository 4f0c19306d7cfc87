"""Imaging: the `Volume` type, reading CT and contours, HU harmonisation, the synthetic phantom."""
