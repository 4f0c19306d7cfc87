"""CLI command ``pacs``: find CT series on a PACS over DICOMweb (QIDO-RS).

    python -m lungseg pacs search [--url URL] [--patient-id ID] [--study-date YYYYMMDD[-YYYYMMDD]]
                                  [--modality CT|any] [--limit N] [--json]

Each series found is printed with its URL, which is an INPUT for ``lungs``, ``segment``, ``review`` and
``export``.  The server defaults to ``LUNGSEG_PACS_URL``; credentials come from ``LUNGSEG_PACS_USER`` /
``LUNGSEG_PACS_PASSWORD`` or ``LUNGSEG_PACS_TOKEN``.  Nothing printed names the patient.
"""

from __future__ import annotations

import argparse
import json


def cmd_pacs_search(args: argparse.Namespace) -> int:
    from lungseg.dicomweb import Pacs, SearchQuery

    modality = None if (args.modality or "").lower() in ("any", "all", "*") else args.modality
    query = SearchQuery(patient_id=args.patient_id, study_date=args.study_date, modality=modality, limit=args.limit)
    pacs = Pacs.from_env(args.url)
    found = pacs.search(query)
    if args.json:
        print(json.dumps([s.as_dict() for s in found], indent=1))
        return 0
    what = f"{modality} series" if modality else "series"
    print(f"{len(found)} {what} on {pacs.settings.server}")
    for s in found:
        print(f"  {s.title}\n    {s.url}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("pacs", help="find series on a PACS (DICOMweb)")
    psub = p.add_subparsers(dest="pacs_command", required=True)
    s = psub.add_parser("search", help="QIDO-RS series search; CT only unless --modality says otherwise")
    s.add_argument("--url", help="the DICOMweb service, e.g. https://pacs.example.org/dicom-web "
                   "(default: LUNGSEG_PACS_URL)")
    s.add_argument("--patient-id", help="PatientID to match (wildcards * and ? if the server allows them)")
    s.add_argument("--study-date", help="YYYYMMDD or a range YYYYMMDD-YYYYMMDD")
    s.add_argument("--modality", default="CT", help="modality of the series (default CT; 'any' for all)")
    s.add_argument("--limit", type=int, help="at most this many series")
    s.add_argument("--json", action="store_true", help="print a JSON list of series objects")
    s.set_defaults(func=cmd_pacs_search)
