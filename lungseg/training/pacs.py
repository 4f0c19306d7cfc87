"""Training cases from a PACS query (``train --data pacs:patient-id=ID[,study-date=D][,url=URL]``): the
filters of ``pacs search``.  Every CT series found whose study also holds an RTSTRUCT becomes a case: the
CT is retrieved into the case cache (:func:`lungseg.dicomweb.fetch_series`, checked instance by instance),
the structure set beside it, and the tumour ROI (``--roi``, default ``GTV*``) is read by its frame of
reference.  Series without a structure set have no contour to learn from and are left out (counted)."""

from __future__ import annotations

from pathlib import Path

from lungseg.errors import InputError

FILTERS = ("patient-id", "study-date", "url", "limit")


def parse_query(text: str) -> dict[str, str]:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        if key not in FILTERS or not value:
            raise InputError(f"pacs:{text}: expected {','.join(f + '=…' for f in FILTERS)} (e.g. pacs:patient-id=123)")
        out[key] = value
    if not ({"patient-id", "study-date"} & set(out)):
        raise InputError(f"pacs:{text}: give patient-id= or study-date= (a whole PACS is not a training set)")
    return out


def pacs_cases(text: str, roi: str = "GTV*") -> list:
    from lungseg.dicomweb import Pacs, SearchQuery, fetch_series, parse_series_url
    from lungseg.imaging.io import cache_dir
    from lungseg.training.sources import TrainingCase, _manual

    q = parse_query(text)
    pacs = Pacs.from_env(q.get("url"))
    found = pacs.search(SearchQuery(patient_id=q.get("patient-id"), study_date=q.get("study-date"), modality="CT",
                                    limit=int(q["limit"]) if "limit" in q else None))
    cases, without = [], 0
    for series in found:
        structure_sets = pacs.search(SearchQuery(study_uid=series.study_uid, modality="RTSTRUCT"))
        if not structure_sets:
            without += 1
            continue
        ct = fetch_series(series.url)
        rt = structure_sets[0]
        ref = parse_series_url(rt.url)
        folder = cache_dir() / "training-pacs" / rt.series_uid
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for uid in pacs.instance_uids(ref):
            path = folder / f"{uid}.dcm"
            if not path.exists():
                pacs.retrieve_instance(ref.study_uid, ref.series_uid, uid).save_as(path, enforce_file_format=True)
            files.append(path)
        case_id = ct.label
        cases.append(TrainingCase(case_id, str(ct.folder), _manual("rtstruct", str(files[0]), roi),
                                  patient_id=f"pacs-{series.study_uid[-12:]}",
                                  provenance={"source": f"pacs:{text}", "layout": "PACS query (DICOMweb)",
                                              "series": series.url, "structure_set": rt.url, "roi": roi}))
    if not cases:
        raise InputError(f"pacs:{text}: {len(found)} CT series found, none with a structure set in its study")
    return cases
