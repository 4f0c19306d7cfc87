"""False-positive reduction: a small classifier on a patch around each candidate lesion.

The U-Net finds most nodules but also marks vessels seen end-on, hilar structures and the edge of
the mediastinum.  The second stage looks at each candidate again, on a fixed physical grid
(:data:`PATCH_MM`): five axial slices of the CT, of the candidate itself and of the U-Net's
probability, plus the candidate's rule features (volume, probability, lung ring, density).  It
outputs the probability that the candidate is a real lesion; :class:`CandidateFilter`'s
``min_lesion_score`` keeps or drops it.

Training (:mod:`lungseg.training.second_stage`) uses the candidates that the leave-one-out fold models produce on
scans they never saw, with train-side LIDC nodules placed into them as positives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage as ndi
from torch import nn

PATCH_SHAPE = (5, 32, 32)  # slices, rows, columns
PATCH_MM = (3.0, 1.5, 1.5)  # their spacing: 15 × 48 × 48 mm around the candidate's centre
HU_WINDOW = (-1000.0, 400.0)
FEATURES = ("log_volume_ml", "mean_probability", "peak_probability", "ring_lung", "mean_hu", "slices")


def feature_vector(row: dict) -> np.ndarray:
    """The candidate's rule features, scaled to about unit range."""
    return np.array([np.log(max(row["volume_ml"], 1e-3)) / 3.0, row.get("mean_probability", 1.0),
                     row.get("peak_probability", 1.0), row.get("ring_lung", 1.0),
                     row.get("mean_hu", 0.0) / 500.0, min(row["slices"], 40) / 20.0], np.float32)


def add_lesion_scores(scorer, rows: list[dict], patches: list[np.ndarray]) -> None:
    """Set each row's ``lesion_score`` from ``scorer`` on its patch and its rule features."""
    if rows:
        scores = scorer.score(np.stack(patches), np.stack([feature_vector(r) for r in rows]))
        for row, score in zip(rows, scores):
            row["lesion_score"] = float(score)


def candidate_patch(hu: np.ndarray, probability: np.ndarray, component: np.ndarray, centre_zyx,
                    spacing_zyx) -> np.ndarray:
    """[15, 32, 32] float16: CT (window scaled to [0, 1]), candidate mask and U-Net probability on
    PATCH_SHAPE slices of PATCH_MM around ``centre_zyx`` (voxel coordinates of the scan's grid).

    ``hu``, ``probability`` and ``component`` may be a sub-box of the scan; ``centre_zyx`` is then
    relative to that box.  Outside the scan the CT reads as air.
    """
    axes = [(np.arange(n) - (n - 1) / 2) * mm / s + c
            for n, mm, s, c in zip(PATCH_SHAPE, PATCH_MM, spacing_zyx, centre_zyx)]
    coords = np.stack(np.meshgrid(*axes, indexing="ij"))
    ct = ndi.map_coordinates(hu.astype(np.float32, copy=False), coords, order=1, mode="constant", cval=-1000.0, prefilter=False)
    ct = (np.clip(ct, *HU_WINDOW) - HU_WINDOW[0]) / (HU_WINDOW[1] - HU_WINDOW[0])
    m = ndi.map_coordinates(component.astype(np.float32), coords, order=1, mode="constant", cval=0.0, prefilter=False)
    p = ndi.map_coordinates(probability.astype(np.float32, copy=False), coords, order=1, mode="constant", cval=0.0, prefilter=False)
    return np.concatenate([ct, m, p]).astype(np.float16)


def candidate_patches(hu: np.ndarray, probability: np.ndarray, sub: np.ndarray, box, boxes, spacing_zyx,
                      labels) -> dict[int, np.ndarray]:
    """{label: patch} for the components ``labels`` of ``sub`` (labels inside ``box`` of the scan;
    ``boxes`` are their boxes inside ``sub``)."""
    margin = [int(np.ceil((n / 2 + 1) * mm / s)) for n, mm, s in zip(PATCH_SHAPE, PATCH_MM, spacing_zyx)]
    out = {}
    for i in labels:
        b = boxes[i - 1]
        comp = sub[b] == i
        centre = np.array(ndi.center_of_mass(comp)) + [o.start + c.start for o, c in zip(box, b)]
        window = tuple(slice(max(int(c) - m, 0), min(int(c) + m + 1, n)) for c, m, n in zip(centre, margin, hu.shape))
        local = np.zeros(tuple(w.stop - w.start for w in window), bool)
        sub_window = tuple(slice(w.start - o.start, w.stop - o.start) for w, o in zip(window, box))
        clipped = tuple(slice(max(s.start, 0), min(s.stop, n)) for s, n in zip(sub_window, sub.shape))
        dest = tuple(slice(c.start - s.start, c.stop - s.start) for c, s in zip(clipped, sub_window))
        local[dest] = sub[clipped] == i
        out[i] = candidate_patch(hu[window], probability[window], local,
                                 centre - [w.start for w in window], spacing_zyx)
    return out


class LesionClassifier(nn.Module):
    """Patch CNN (three conv stages, global pooling) joined with the rule features; one logit."""

    def __init__(self, channels: int = 3 * PATCH_SHAPE[0], width: int = 24, n_features: int = len(FEATURES)):
        super().__init__()

        def stage(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                                 nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                                 nn.MaxPool2d(2))

        self.features = nn.Sequential(stage(channels, width), stage(width, 2 * width), stage(2 * width, 4 * width))
        self.head = nn.Sequential(nn.Linear(4 * width + n_features, 32), nn.ReLU(inplace=True), nn.Dropout(0.2), nn.Linear(32, 1))
        self.architecture = {"channels": channels, "width": width, "n_features": n_features}

    def forward(self, patch: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        x = self.features(patch).mean(dim=(2, 3))
        return self.head(torch.cat([x, features], dim=1))[:, 0]


@dataclass
class CandidateScorer:
    """Loaded :class:`LesionClassifier` s: lesion probability for candidate patches (CPU), the mean of
    the members' probabilities when there are several (an ensemble of seeds)."""

    models: list[LesionClassifier]

    @classmethod
    def from_payload(cls, payload: dict) -> "CandidateScorer":
        models = []
        for member in payload.get("members", [payload]):
            model = LesionClassifier(**member["architecture"])
            model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in member["state_dict"].items()})
            models.append(model.eval())
        return cls(models)

    @classmethod
    def ensemble(cls, scorers: list["CandidateScorer"]) -> "CandidateScorer":
        return cls([m for s in scorers for m in s.models])

    def to_payload(self) -> dict:
        members = [{"architecture": m.architecture,
                    "state_dict": {k: v.half() if v.is_floating_point() else v for k, v in m.state_dict().items()}}
                   for m in self.models]
        return {"members": members, "patch_shape": PATCH_SHAPE, "patch_mm": PATCH_MM, "features": FEATURES}

    def score(self, patches: np.ndarray, features: np.ndarray) -> np.ndarray:
        if len(patches) == 0:
            return np.zeros(0, np.float32)
        x = torch.from_numpy(np.asarray(patches, np.float32))
        f = torch.from_numpy(np.asarray(features, np.float32))
        with torch.inference_mode():
            return torch.stack([torch.sigmoid(m(x, f)) for m in self.models]).mean(0).numpy()


def augment(patches: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random flips of each axis and a random quarter turn in-plane (the patch is square)."""
    n = len(patches)
    c = patches.shape[1] // PATCH_SHAPE[0]
    x = patches.view(n, c, PATCH_SHAPE[0], *patches.shape[2:])
    for axis in (2, 3, 4):
        flip = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None, None], x.flip(axis), x)
    turn = torch.rand(n, generator=generator) < 0.5
    x = torch.where(turn[:, None, None, None, None], x.transpose(3, 4), x)
    return x.reshape(patches.shape)


def train_classifier(patches: np.ndarray, features: np.ndarray, labels: np.ndarray, epochs: int = 40, batch_size: int = 64,
                     seed: int = 0, width: int = 24, log=print) -> CandidateScorer:
    """Fit a :class:`LesionClassifier` (AdamW, balanced batches by loss weighting, flips and turns)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = LesionClassifier(width=width)
    x = torch.from_numpy(np.asarray(patches, np.float32))
    f = torch.from_numpy(np.asarray(features, np.float32))
    y = torch.from_numpy(np.asarray(labels, np.float32))
    pos_weight = torch.tensor(float((y == 0).sum()) / max(float(y.sum()), 1.0))
    steps = epochs * max(1, len(x) // batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for start in range(0, len(x) - batch_size + 1, batch_size):
            idx = order[start:start + batch_size]
            xb = augment(x[idx], gen)
            loss = loss_fn(model(xb, f[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if log and (epoch % 10 == 9 or epoch == epochs - 1):
            log(f"  epoch {epoch + 1}/{epochs}: loss {total / max(1, len(x)):.4f}")
    return CandidateScorer([model.eval()])
