"""The second stage of the automatic model: mine candidates, train the lesion classifiers.

``mine``: each fold model (trained without patient P) runs on P's scan and on copies of it with
**train-side** LIDC nodules placed into its lungs (:mod:`lungseg.tumour.placement`; the validation-side
nodules the evaluation measures with are never used here).  Each candidate the size and region rules
keep becomes a sample: a lesion if it lies on a tumour or a placed nodule, a false positive if not.
These are the candidates of a model on a patient it has not seen, which is what the second stage meets
in use (a model on its own training patients makes few false positives).

``train``: for each fold P, classifiers (one per seed, averaged) on the samples of the **other** folds
only, so P's candidates are scored by classifiers that never saw P's CT; and final ones on all samples,
shipped in the model's weights (:class:`lungseg.tumour.fpr.CandidateScorer`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lungseg.tumour.fpr import CandidateScorer, feature_vector, train_classifier

MIN_TRAIN_NODULE_MM = 5.0


def samples(fold: dict) -> dict[str, np.ndarray]:
    """Every candidate with a patch: kind 0 false, 1 on a placed nodule, 2 on a tumour only."""
    rows = list(fold["case"]["rows"]) + [r for c in fold["copies"] for r in c["rows"]]
    rows = [r for r in rows if "patch" in r]
    nodules = {n["crop"] for c in fold["copies"] for n in c["nodules"]}
    kind = np.array([0 if not r["hits"] else (1 if nodules & set(r["hits"]) else 2) for r in rows], np.int8)
    if not rows:
        from lungseg.tumour.fpr import FEATURES, PATCH_SHAPE

        return {"patches": np.zeros((0, 3 * PATCH_SHAPE[0], *PATCH_SHAPE[1:]), np.float16),
                "features": np.zeros((0, len(FEATURES)), np.float32), "lesion": np.zeros(0, np.float32), "kind": kind}
    return {"patches": np.stack([r["patch"] for r in rows]), "features": np.stack([feature_vector(r) for r in rows]),
            "lesion": (kind > 0).astype(np.float32), "kind": kind}


def mine(model: Path, case, train_crops: list, out: Path, seed: int, nodules: int, device: str = "cpu") -> dict:
    """Mine one fold model's candidates on its held-out case (and copies with ``nodules`` placed nodules)."""
    from lungseg.training.folds import run_fold

    fold = run_fold(model, case, train_crops, seed=seed, nodule_limit=nodules, min_diameter_mm=MIN_TRAIN_NODULE_MM,
                    device=device)
    s = samples(fold)
    tmp = out.with_name(out.stem + ".tmp.npz")
    np.savez_compressed(tmp, **s)
    tmp.replace(out)
    return {k: int((s["kind"] == v).sum()) for k, v in (("nodules", 1), ("tumours", 2), ("false", 0))}


def load_samples(files: list[Path]) -> dict[str, np.ndarray]:
    parts = [dict(np.load(f)) for f in files]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def train_scorer(files: list[Path], seeds: tuple[int, ...], epochs: int, log=print) -> CandidateScorer | None:
    """The seeds' classifiers on the mined samples of ``files``, as one averaging scorer (None without
    both lesions and false candidates to learn from)."""
    s = load_samples(files)
    lesions = int(s["lesion"].sum())
    if lesions == 0 or lesions == len(s["lesion"]):
        log(f"  second stage: {len(s['lesion'])} samples, {lesions} lesions: nothing to learn, no classifier")
        return None
    log(f"  second stage: {len(s['lesion'])} samples, {lesions} lesions, seeds {', '.join(map(str, seeds))}")
    return CandidateScorer.ensemble([train_classifier(s["patches"], s["features"], s["lesion"], epochs=epochs, seed=seed,
                                                      log=log) for seed in seeds])
