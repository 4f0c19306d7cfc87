"""CLI command ``batch``: a cohort through the pipeline on Dask, resumable, one row per case.

    python -m lungseg batch SOURCE... --out DIR [--workers N] [--scheduler ADDRESS] [--model M]
                            [--pacs [URL] --patient-id ID --study-date D]

SOURCE is a CT file (zip, NIfTI, NRRD, MHA), a DICOM folder, a folder of those, or a DICOMweb series URL;
``--patient-id``/``--study-date`` add every CT series a PACS search finds.  Each case writes ``DIR/CASE/``
(``lungs.nii.gz``, ``tumour.nii.gz``, ``lesions.csv``, ``result.json``); ``DIR/summary.csv`` has one row per
case.  Run it again to resume: finished cases (same CT content, model version and settings) are skipped.
``--workers 0`` runs a plain loop in this process (no Dask).  With ``--scheduler`` the workers must reach
the sources and DIR at the same paths (a shared file system) and have lungseg installed.
"""

from __future__ import annotations

import argparse
import sys


def cmd_batch(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lungseg.cohort import BatchConfig, cases_from_sources, run_cohort
    from lungseg.errors import InputError

    query = None
    if args.patient_id or args.study_date:
        from lungseg.dicomweb import SearchQuery

        query = SearchQuery(patient_id=args.patient_id, study_date=args.study_date, modality="CT")
    elif args.pacs is not None:
        raise InputError("--pacs searches the PACS: give --patient-id and/or --study-date")
    if args.model and not Path(args.model).exists():
        raise InputError(f"--model {args.model}: no such file")
    from lungseg.cli.common import check_output

    check_output(args.out, folder=True)
    cases = cases_from_sources(args.sources, query, args.pacs or None)
    config = BatchConfig(Path(args.out), model=str(Path(args.model).resolve()) if args.model else None,
                         workers=args.workers, scheduler=args.scheduler, progress=not args.quiet)
    where = f"the Dask scheduler at {args.scheduler}" if args.scheduler else \
        "this process (no Dask)" if args.workers == 0 else f"a local Dask cluster of {args.workers} workers"
    print(f"{len(cases)} case(s) on {where}; results in {config.out}", flush=True)
    run = run_cohort(cases, config)
    for r in run.rows:
        if r["status"] == "failed":
            print(f"  {r['case']}: failed: {r['reason']}")
    ok, failed = run.count("ok"), run.count("failed")
    print(f"{ok} ok ({run.resumed} already done, skipped), {failed} failed in {run.seconds:.1f} s; "
          f"summary {config.out / 'summary.csv'}")
    if failed and not args.allow_failures:
        print(f"error: {failed} of {len(run.rows)} case(s) failed (see above; --allow-failures exits 0 all the same)",
              file=sys.stderr)
        return 1
    return 0


def register(sub) -> None:
    p = sub.add_parser("batch", help="run a cohort (files, folders, PACS series) on Dask; resumable")
    p.add_argument("sources", nargs="*", help="CT files, DICOM folders, folders of cases, DICOMweb series URLs")
    p.add_argument("--out", required=True, help="output folder: DIR/CASE/ per case and DIR/summary.csv")
    p.add_argument("--workers", type=int, default=2, help="local Dask worker processes (default 2; 0: no Dask)")
    p.add_argument("--scheduler", help="address of a running Dask scheduler (e.g. tcp://host:8786) instead of a "
                   "local cluster")
    p.add_argument("--model", help="tumour model weights (default: the shipped model)")
    p.add_argument("--pacs", nargs="?", const="", metavar="URL", help="PACS to search (default: LUNGSEG_PACS_URL)")
    p.add_argument("--patient-id", help="add the CT series of this PatientID found on the PACS")
    p.add_argument("--study-date", help="add the CT series of studies on this date (YYYYMMDD or a range)")
    p.add_argument("--allow-failures", action="store_true", help="exit 0 even when some cases failed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_batch)
