"""The model card written beside trained weights (``m.pt`` → ``m.md``), from the run's own record:
the training cases with their provenance, the recipe's settings, the leave-one-patient-out figures
when the run made them, and the limits a user must know."""

from __future__ import annotations

from pathlib import Path


def _fmt(v, digits: int = 3) -> str:
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def card_text(record: dict) -> str:
    weights = Path(record["weights"]["path"])
    fit = record["fit"]
    lines = [f"# Model card — `{weights.name}`", "",
             "**Status: a research model, not fit for clinical use.** Every automatic contour must be reviewed.", "",
             "Trained by `lungseg.training.train_model` (the shipped recipe: a 2.5D U-Net on lung-isolated slices "
             "with real lesions pasted into real lungs, a candidate filter and, with leave-one-patient-out folds, "
             "a second-stage lesion classifier).", "",
             f"- command: `{record['command']}`",
             f"- device: {fit.get('device')}, mixed precision: {fit.get('mixed_precision') or 'none (float32)'}, "
             f"data-loader workers: {fit.get('workers')}",
             f"- final U-Net: {fit['steps']} steps of {fit['batch_size']} samples, seed {fit['seed']}, "
             f"{fit['seconds']:.0f} s; whole run {record['seconds']:.0f} s",
             f"- weights: {record['weights']['bytes'] / 1e6:.1f} MB", "",
             "## Training cases", "",
             "| case | patient | contour | source | how it was made |", "| --- | --- | --- | --- | --- |"]
    for c in record["cases"]:
        prov = c.get("provenance") or {}
        how = prov.get("layout", "")
        for r in prov.get("review", []):
            how += (f"; {r['structure']} v{r['version']} ({r['provenance']}, {r['origin']}"
                    f"{', ' + r['algorithm'] if r.get('algorithm') else ''}) accepted by {r['reviewer'] or '?'} at {r['at'] or '?'}")
        if prov.get("rejected_automatic_lesions"):
            how += f"; hard negatives: automatic lesion(s) {', '.join(map(str, prov['rejected_automatic_lesions']))} rejected"
        lines.append(f"| {c['case_id']} | {c['patient']} | {c['contour']} | `{prov.get('source', c['ct'])}` | {how} |")
    if not record["cases"]:
        lines.append(f"| {', '.join(record.get('hosts', []))} | | | training pack {', '.join(record['packs'])} | |")
    info = record.get("pack_info", {})
    lines += ["", f"Real nodules pasted in training: {info.get('nodules', 0)} train-side LIDC-IDRI crops of "
              f"{info.get('nodule_patients', 0)} patients (`models/lidc_split.csv`; validation-side patients never train)"
              + (f", from {', '.join(record['lidc'])}" if record.get("lidc") else " (no LIDC source given: only the "
                 "cases' own tumours, moved and rescaled, are pasted)") + ".", ""]
    f = record["candidate_filter"]
    lines += ["## Candidate filter", "",
              "Calibrated leave-one-patient-out (below)." if record["filter_calibrated"] else
              "**Not calibrated** (this run measured no leave-one-out folds): the rules of the shipped model are used as they are, without "
              "a second-stage classifier.  Run with `--folds loo` (two or more patients) to calibrate them on this data.",
              "", "`" + ", ".join(f"{k}={_fmt(v)}" for k, v in f.items()) + "`",
              f"; second-stage classifiers in the weights: {record['classifier_members']}.", ""]
    loo = record.get("loo")
    lines += ["## Measured performance", ""]
    if loo:
        lines += ["Leave-one-patient-out: each fold model trained without the patient, its filter calibrated on the "
                  "other folds, measured on the patient's scan (and on copies of it with validation-side LIDC nodules "
                  "≥ 10 mm placed in its lungs, when LIDC crops were given).", "",
                  "| held-out | Dice (no filter → filter) | HD95 mm | primary found | false lesions | placed nodules found | "
                  "FP per nodule scan | tumour-free scans: lesions |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in loo["folds"]:
            w, raw = r["with_filter"], r["without_filter"]
            lines.append(f"| {r['held_out']} | {raw['dice']:.3f} → **{w['dice']:.3f}** | {_fmt(w['hd95_mm'], 1)} | "
                         f"{'yes' if w['primary_found'] else 'no'} | {w['false_positive_lesions_outside_gtvs']} | "
                         f"{w['nodules']['nodules_found']} / {w['nodules']['nodules']} | "
                         f"{w['nodules']['fp_per_nodule_scan']:.2f} | {r['tumour_free_lesions']} |")
        lines += ["", f"Median Dice **{loo['median_dice']:.3f}** ({loo['median_dice_without_filter']:.3f} without the filter); "
                  f"primaries found {loo['primaries_found']} of {loo['patients']}; false lesions per scan "
                  f"{loo['fp_lesions_per_scan']}; placed nodules {loo['nodules_found']} / {loo['nodules']} at "
                  f"{loo['nodule_fp_per_scan']:.2f} FP per scan.", ""]
    else:
        lines += ["No leave-one-patient-out figures: this run made no folds.  The figures the model reaches on its own "
                  "training cases say nothing about new patients; measure it with "
                  f"`python -m lungseg evaluate --cases DIR --model {weights.name}` on cases it never saw.", ""]
    lines += ["## Training figures", ""] + [f"- `{p}`" for p in record.get("figures", [])]
    lines += ["", "## What the recipe keeps from the older one", "",
              "Nothing of the older CPU recipe (`tumour/train.py`, `synthetic.py`, `datasets.py`, `recipe.py`): its "
              "synthetic tumours and whole-slice crops were replaced by real lesions pasted on the fly, which measured "
              "better (leave-one-out median Dice 0.08 → 0.41, `models/README.md`).  Its figures module lives on as "
              "`lungseg.training.figures`.", "",
              "## Licence", "",
              "The weights derive from their training cases and carry their terms (NSCLC-Radiomics: CC BY-NC 3.0, "
              "non-commercial; LIDC-IDRI: CC BY 3.0, cite Armato et al. 2011).", ""]
    return "\n".join(lines)


def write_card(record: dict, path: Path) -> Path:
    path.write_text(card_text(record))
    return path
