"""Lesions from real nodules: the LIDC-IDRI crop reader, the patient-level split, click-to-segment.

``segment_at(volume, point_mm)`` returns the lesion under one click (:class:`LesionResult`); torch is
imported only when the first predictor is built.
"""

from lungseg.lesion.segment import LesionPredictor, LesionResult, PlausibleLesion, plausibility, segment_at

__all__ = ["LesionPredictor", "LesionResult", "PlausibleLesion", "plausibility", "segment_at"]
