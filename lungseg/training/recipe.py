"""The shipped recipe, one entry: :func:`train_model`.

pack → fit the 2.5D U-Net with real lesions pasted into real lungs (leave-one-patient-out fold models
and the final model) → second stage (mine the fold models' candidates, train the classifier ensemble) →
calibrate the candidate filter leave-one-patient-out → the weights, a model card beside them
(``--out m.pt`` → ``m.md``) and the training figures (``m.run/figures/``).

Every stage leaves its result in the run folder (``m.run/``) and is skipped when it is there, and each
fit checkpoints its steps: a killed run given again (``resume``) continues where it stopped and ends
with the weights of an uninterrupted run with the same seed.
"""

from __future__ import annotations

import json
import os
import pickle
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from lungseg.errors import InputError
from lungseg.training.fit import FitParams, Variant, fit
from lungseg.tumour.paste import PasteParams

# what a run without leave-one-out calibration ships: the rules of the shipped model (no classifier);
# lungseg.tumour.segment.CandidateFilter's fields (not imported here: fitting from a pack needs no SimpleITK)
UNCALIBRATED_FILTER = {"min_slices": 2, "min_mean_probability": 0.88, "min_ring_lung": 0.5, "min_mean_hu": -450.0}


@dataclass(frozen=True)
class TrainSpec:
    data: tuple[str, ...]
    out: Path
    steps: int = 3500
    time_budget_min: float | None = None
    device: str = "auto"
    resume: bool = False
    folds: str = "auto"  # "loo", "none", or "auto": loo on a GPU, none on a CPU
    roi: str = "GTV*"
    seed: int = 0
    batch_size: int | None = None  # default: 32 on a GPU, 8 on a CPU
    crop: int = 160
    workers: int | None = None  # data-loader processes per fit; default: 3 per fit on a GPU, 0 on a CPU
    tumour_free: tuple[str, ...] = ()  # scans without tumour the fold models are checked on (never calibrate)
    mine_nodules: int = 150  # train-side nodules placed per fold to mine the second stage's samples
    classifier_seeds: tuple[int, ...] = (1, 2, 3)
    classifier_epochs: int = 25
    eval_nodules: int | None = None  # validation-side nodules placed per held-out patient (None: all >= 10 mm)


@dataclass
class Run:
    spec: TrainSpec
    folder: Path
    device: str
    log: object
    started: float = field(default_factory=time.perf_counter)
    record: dict = field(default_factory=dict)


def run_folder(out: Path) -> Path:
    return out.with_suffix(".run")


def _resolve_device(device: str) -> str:
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but no CUDA GPU is available")
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def patient_groups(cases) -> dict[str, list]:
    groups: dict[str, list] = {}
    for c in cases:
        groups.setdefault(c.patient, []).append(c)
    return groups


def train_model(spec: TrainSpec, log=print) -> dict:
    """Run the recipe; returns what the model card says (also written to ``m.run/record.json``)."""
    from lungseg.training.sources import discover_all

    out = Path(spec.out)
    if out.suffix != ".pt":
        raise InputError(f"--out {out}: the weights file must end in .pt")
    folder = run_folder(out)
    if folder.exists() and not spec.resume and any(folder.iterdir()):
        raise InputError(f"{folder} holds an earlier run: give --resume to continue it, or remove it")
    folder.mkdir(parents=True, exist_ok=True)
    device = _resolve_device(spec.device)
    run = Run(spec, folder, device, log)
    sources = discover_all(list(spec.data), spec.roi)
    folds = spec.folds if spec.folds != "auto" else ("loo" if device == "cuda" else "none")
    groups = patient_groups(sources.cases)
    if folds == "loo" and not sources.packs and len(groups) < 2:
        raise InputError("--folds loo needs at least two patients")
    run.record = {"command": "python -m lungseg " + shlex.join(sys.argv[1:]) if sys.argv[0].endswith("__main__.py") else shlex.join(sys.argv),
                  "spec": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(spec).items()},
                  "device": device, "folds": folds,
                  "cases": [{"case_id": c.case_id, "patient": c.patient, "ct": c.ct, "contour": c.manual.name,
                             "provenance": c.provenance} for c in sources.cases],
                  "lidc": [str(p) for p in sources.lidc_roots], "packs": [str(p) for p in sources.packs]}
    fits = {"final": [c.case_id for c in sources.cases]}
    if folds == "loo":
        for patient, members in groups.items():
            held = {c.case_id for c in members}
            fits[f"loo-{patient}"] = [c.case_id for c in sources.cases if c.case_id not in held]
    if sources.packs or any(not (folder / n / "model.pt").exists() for n in fits):
        pack, host_names = _pack(run, sources)
        if sources.packs:  # the pack's hosts are the patients
            fits = {"final": host_names}
            if folds == "loo":
                fits |= {f"loo-{h}": [o for o in host_names if o != h] for h in host_names}
    else:
        pack, host_names = None, fits["final"]
        run.log("every fit is done: no pack needed")
    if folds == "loo" and len(fits) < 3:
        raise InputError("--folds loo needs at least two patients")
    models = _fit_all(run, pack, fits)
    final = models["final"]
    candidate_filter, scorer = dict(UNCALIBRATED_FILTER), None
    calibrated = False
    if folds == "loo" and sources.packs:
        run.log("the fold models are fitted; measuring them and calibrating the filter needs the scans: run the same "
                f"command again with the cases instead of the pack and --resume, with {folder} in place")
    elif folds == "loo":
        shipped, scorer = second_stage_and_calibration(run, sources, groups, models)
        candidate_filter, calibrated = shipped.__dict__, True
    payload = torch.load(final, map_location="cpu", weights_only=True)
    payload["meta"]["candidate_filter"] = candidate_filter
    payload["meta"]["version"] = f"trained-{time.strftime('%Y%m%d')}"
    payload["meta"]["training_cases"] = [c["case_id"] for c in run.record["cases"]] or host_names
    if scorer is not None:
        payload["candidate_classifier"] = scorer.to_payload()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(out)
    run.record["weights"] = {"path": str(out), "bytes": out.stat().st_size}
    run.record["candidate_filter"] = candidate_filter
    run.record["filter_calibrated"] = calibrated
    run.record["classifier_members"] = 0 if scorer is None else len(scorer.models)
    run.record["hosts"] = host_names
    run.record["fit"] = payload["meta"]["fit"]
    run.record["seconds"] = round(time.perf_counter() - run.started, 1)
    from lungseg.training.card import write_card
    from lungseg.training.figures import write_figures

    run.record["figures"] = [str(p) for p in write_figures(payload["meta"], folder / "figures")]
    (folder / "record.json").write_text(json.dumps(run.record, indent=1, default=float))
    card = write_card(run.record, out.with_suffix(".md"))
    log(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) and {card} in {run.record['seconds']:.0f} s")
    return run.record


def _pack(run: Run, sources) -> tuple[Path, list[str]]:
    """The training pack of the run (made once; a given pack is used as it is)."""
    from lungseg.training import pack as packing

    if sources.packs:
        if len(sources.packs) > 1 or sources.cases:
            raise InputError("a training pack is a whole training set: give it alone")
        info = json.loads(str(np.load(sources.packs[0])["info"]))
        run.record["pack_info"] = info
        return sources.packs[0], [h["name"] for h in info["hosts"]]
    path = run.folder / "pack.npz"
    manifest = {"cases": [c.case_id for c in sources.cases], "lidc": [str(p) for p in sources.lidc_roots]}
    if path.exists() and json.loads(str(np.load(path)["info"])).get("manifest") == manifest:
        run.log("pack: reusing " + str(path))
    else:
        t = time.perf_counter()
        hosts = []
        for i, case in enumerate(sources.cases):
            hosts.append(packing.load_host(case, run.folder / "hosts"))
            run.log(f"pack: {case.case_id} opened ({i + 1}/{len(sources.cases)}, {time.perf_counter() - t:.0f} s)")
        packing.build(hosts, sources.lidc_roots, path, manifest=manifest)
        run.log(f"pack: {path} ({path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - t:.0f} s)")
    info = json.loads(str(np.load(path)["info"]))
    run.record["pack_info"] = info
    return path, [h["name"] for h in info["hosts"]]


def fit_params(run: Run, n_fits: int) -> FitParams:
    spec, cuda = run.spec, run.device == "cuda"
    budget = None
    if spec.time_budget_min:
        # the fits share the budget (side by side on a GPU, one after another on a CPU); the rest of the
        # recipe (evaluation, second stage) needs about a quarter of it, when it runs here (not from a pack)
        share = 0.9 if run.record.get("packs") else 0.7
        total = spec.time_budget_min * 60 * share - (time.perf_counter() - run.started)
        budget = max(30.0, total if cuda else total / n_fits)
    workers = spec.workers if spec.workers is not None else (3 if cuda else 0)
    return FitParams(steps=spec.steps, batch_size=spec.batch_size or (32 if cuda else 8), seed=spec.seed, workers=workers,
                     budget_s=budget, checkpoint_every=25 if cuda else 5, log_every=25 if cuda else 5,
                     paste=PasteParams(crop=spec.crop))


def _fit_all(run: Run, pack: Path, fits: dict[str, list[str]]) -> dict[str, Path]:
    """Fit every model not yet there: side by side as processes on a GPU, one after another on a CPU."""
    params = fit_params(run, len(fits))
    models = {name: run.folder / name / "model.pt" for name in fits}
    todo = [n for n in fits if not models[n].exists()]
    for n in fits:
        if n not in todo:
            run.log(f"fit {n}: done earlier ({models[n]})")
    if run.device == "cuda" and len(todo) > 1:
        text = json.dumps(asdict(params))
        procs = {}
        for n in todo:
            log_file = open(run.folder / f"{n}.log", "a")
            procs[n] = (subprocess.Popen([sys.executable, "-m", "lungseg.training.fit", str(pack), "--hosts", *fits[n],
                                          "--out", str(run.folder / n), "--params", text, "--device", "cuda",
                                          "--threads", "2"], stdout=log_file, stderr=subprocess.STDOUT,
                                         env={**os.environ, "OMP_NUM_THREADS": "1"}), log_file)
        run.log(f"fitting {', '.join(todo)} side by side on the GPU (logs in {run.folder}/*.log)")
        while any(p.poll() is None for p, _ in procs.values()):
            time.sleep(10)
            run.log("  " + " | ".join(f"{n}: {_last_line(run.folder / f'{n}.log')}" for n in todo))
        for n, (p, f) in procs.items():
            f.close()
            if p.returncode != 0:
                raise RuntimeError(f"fit {n} failed ({p.returncode}): {_last_line(run.folder / f'{n}.log')}")
    else:
        for i, n in enumerate(todo):
            run.log(f"fit {n} ({i + 1}/{len(todo)}) on {', '.join(fits[n])}")
            fit(pack, fits[n], run.folder / n, params, run.device, resume=True,
                log=lambda m, n=n: run.log(f"  {n}: {m}"))
    return models


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text().strip().splitlines()
    except OSError:
        return ""
    return lines[-1][:160] if lines else ""


def second_stage_and_calibration(run: Run, sources, groups, models):
    """Measure each fold model on its held-out patient, mine its candidates, train the second stage
    (per fold on the other folds' samples, and a final one on all) and calibrate the filter leave-one-
    patient-out; returns (the filter calibrated on all folds, the final scorer or None)."""
    from lungseg.training.folds import (GRID, GRID_CLASSIFIER, MIN_NODULE_MM, calibrate, fold_figures, run_fold,
                                        score_rows, tumour_free_rows, without_patches)
    from lungseg.training.pack import lidc_crops
    from lungseg.training.second_stage import MIN_TRAIN_NODULE_MM, mine, train_scorer
    from lungseg.tumour.segment import PostProcess, kept_labels

    spec = run.spec
    held_cases = {p: next(c for c in members if c.manual) for p, members in groups.items()}
    crops_by_key: dict = {}

    def crops_for(case, side: str) -> list:
        """The LIDC crops of one side of the split on the case's own voxel spacing (where they are placed):
        validation-side ones >= 10 mm measure, train-side ones >= 5 mm mine the second stage's samples."""
        from lungseg.imaging.io import load_ct

        spacing = tuple(round(v, 3) for v in load_ct(case.ct, label=case.case_id).volume.spacing_zyx)
        smallest = MIN_NODULE_MM if side == "validation" else MIN_TRAIN_NODULE_MM
        if (spacing, side) not in crops_by_key:
            crops_by_key[spacing, side] = [c for root in sources.lidc_roots for c in lidc_crops(root, side, spacing, smallest)]
        return crops_by_key[spacing, side]

    evaluated = {}
    for patient, case in held_cases.items():
        name = f"loo-{patient}"
        cached = run.folder / name / "candidates.pkl"
        if cached.exists():
            fold = pickle.loads(cached.read_bytes())
        else:
            t = time.perf_counter()
            fold = run_fold(models[name], case, crops_for(case, "validation"), nodule_limit=spec.eval_nodules)
            fold["tumour_free"] = [tumour_free_rows(models[name], s) for s in spec.tumour_free]
            cached.write_bytes(pickle.dumps(fold))
            run.log(f"evaluated {name} on {case.case_id} ({len(fold['copies'])} copies with placed nodules, "
                    f"{time.perf_counter() - t:.0f} s)")
        evaluated[patient] = fold
        mined = run.folder / name / "mined.npz"
        if spec.classifier_seeds and not mined.exists():
            t = time.perf_counter()
            counts = mine(models[name], case, crops_for(case, "train"), mined, seed=spec.seed + 1, nodules=spec.mine_nodules)
            run.log(f"mined {name}: {counts} ({time.perf_counter() - t:.0f} s)")
    scorers = {}
    for patient in list(held_cases) + ["final"] if spec.classifier_seeds else []:
        target = run.folder / ("classifier.pt" if patient == "final" else f"loo-{patient}/classifier.pt")
        files = [run.folder / f"loo-{p}" / "mined.npz" for p in held_cases if p != patient]
        if target.exists():
            payload = torch.load(target, weights_only=True)
            from lungseg.tumour.fpr import CandidateScorer

            scorers[patient] = CandidateScorer.from_payload(payload) if payload.get("members") else None
            continue
        run.log(f"second stage for {patient}: classifiers on {len(files)} folds' samples")
        scorer = train_scorer(files, spec.classifier_seeds, spec.classifier_epochs, log=run.log)
        torch.save(scorer.to_payload() if scorer else {"members": []}, target)
        scorers[patient] = scorer
    folds = []
    for patient, fold in evaluated.items():
        fold = dict(fold)
        if scorers.get(patient) is not None:
            score_rows(scorers[patient], fold["case"]["rows"], *fold.get("tumour_free", []),
                       *(c["rows"] for c in fold["copies"]))
        folds.append(fold)
    grid = GRID_CLASSIFIER if scorers.get("final") is not None else GRID
    results = []
    for fold in folds:
        others = [f for f in folds if f is not fold]
        f, calib = calibrate(others, grid)
        raw, filt = fold_figures(fold, None), fold_figures(fold, f)
        tumour_free = [len(kept_labels(rows, PostProcess(candidate_filter=f))) for rows in fold.get("tumour_free", [])]
        results.append({"held_out": fold["held_out"], "filter": f.__dict__, "without_filter": raw, "with_filter": filt,
                        "tumour_free_lesions": tumour_free, "candidates": without_patches(fold["case"]["rows"])})
        run.log(f"{fold['held_out']}: Dice {raw['dice']:.3f} -> {filt['dice']:.3f}, HD95 {filt['hd95_mm']:.1f} mm, primary "
                f"{'found' if filt['primary_found'] else 'missed'}, false lesions {filt['false_positive_lesions_outside_gtvs']}, "
                f"nodules {filt['nodules']['nodules_found']}/{filt['nodules']['nodules']}, tumour-free scans {tumour_free}")
    shipped, calib = calibrate(folds, grid)
    with_f = [r["with_filter"] for r in results]
    run.record["loo"] = {
        "folds": results,
        "median_dice": float(np.median([w["dice"] for w in with_f])),
        "median_dice_without_filter": float(np.median([r["without_filter"]["dice"] for r in results])),
        "primaries_found": sum(w["primary_found"] for w in with_f), "patients": len(results),
        "fp_lesions_per_scan": [w["false_positive_lesions_outside_gtvs"] for w in with_f],
        "nodules_found": sum(w["nodules"]["nodules_found"] for w in with_f),
        "nodules": sum(w["nodules"]["nodules"] for w in with_f),
        "nodule_fp_per_scan": float(np.mean([w["nodules"]["fp_per_nodule_scan"] for w in with_f])),
        "tumour_free_lesions": [r["tumour_free_lesions"] for r in results],
        "shipped_filter_on_all_folds": calib,
    }
    return shipped, scorers.get("final")
