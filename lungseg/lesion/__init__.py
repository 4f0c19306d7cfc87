"""Lesions from real nodules: the LIDC-IDRI crop reader, the patient-level split, click-to-segment."""
