"""One case, from its sources to everything the app, the CLI and the study show.

A :class:`CaseSource` says where the CT, the manual contour and the automatic contour come from;
:func:`open_case` turns it into an immutable :class:`Case` (the loaded CT, the lung region, both
contours and the lesion table).  Results are cached on disk by :class:`ResultCache` (keyed by the
CT's content hash, the model version and the parameters; LRU within a size cap), so a case opened
once reopens without loading or processing again.

The automatic contour is always named by the caller: ``model`` (the U-Net, with its version) or
``file`` (a mask, SEG or RTSTRUCT ROI made by any other tool).  A stand-in (the manual contour
dilated and shifted) exists for demos and tests only, and only when the caller asks for it by name.

Every CLI command, the app pages, the study and the benchmarks build cases here and nowhere else.
"""

from lungseg.case.cache import NoCache, ResultCache, content_hash, isolated_image, source_identity, with_dicom_headers
from lungseg.case.memory import CaseMemory
from lungseg.case.opening import (default_predictor, default_roi, load_manual_mask, model_version, open_case,
                                  open_case_progressively, stand_in)
from lungseg.case.result import Case, Contour, lesion_rows
from lungseg.case.sources import (AUTOMATIC_KINDS, DEMO, MANUAL_KINDS, AutomaticSource, CaseSource, ManualSource,
                                  contour_file_kind, source_for_input)

__all__ = ["AUTOMATIC_KINDS", "DEMO", "MANUAL_KINDS", "AutomaticSource", "Case", "CaseMemory", "CaseSource", "Contour",
           "ManualSource", "NoCache", "ResultCache", "content_hash", "contour_file_kind", "default_predictor",
           "default_roi", "isolated_image", "lesion_rows", "load_manual_mask", "model_version", "open_case",
           "open_case_progressively", "source_for_input", "source_identity", "stand_in", "with_dicom_headers"]
