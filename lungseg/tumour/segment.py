"""Tumour segmentation: the slice-wise 2D U-Net applied to axial lung-isolated slices.

Preprocessing (shared by training and inference, :func:`prepare_slices`): the lung-isolated,
normalised CT (outside the lung region = air), cropped in-plane to the lung region's bounding box
and resampled in-plane to ``in_plane_mm`` (default 1 mm); only slices that hold lung region are
used.  :class:`TumourPredictor` loads the model once and is reused (one per process in the app).
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

from lungseg.errors import LungsegError
from lungseg.imaging.components import component_boxes, label_components
from lungseg.imaging.volume import Volume
from lungseg.lungs import LungResult, isolated_image

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
DEFAULT_MODEL = MODELS_DIR / "lungseg_unet.pt"


@dataclass
class SliceStack:
    """Model-ready slices of one scan and how to put predictions back."""

    images: np.ndarray  # float32 [n, h, w] in [0, 1]
    masks: np.ndarray | None  # bool [n, h, w] (training), or None
    slices: np.ndarray  # the axial indices of the n slices in the full volume
    box: tuple[slice, slice]  # (y, x) crop of the full slice
    zoom: tuple[float, float]  # full-grid pixel → model-grid pixel factors (y, x)


def prepare_slices(ct: Volume, lungs: LungResult, mask: np.ndarray | None = None, in_plane_mm: float = 1.0) -> SliceStack:
    """Lung-isolated slices cropped to the lung region and resampled to ``in_plane_mm`` pixels."""
    region = lungs.lung_region
    slices = np.nonzero(region.any(axis=(1, 2)))[0]
    if len(slices) == 0:
        empty = np.zeros((0, 16, 16), np.float32)
        return SliceStack(empty, None if mask is None else empty.astype(bool), slices, (slice(0, 0), slice(0, 0)), (1.0, 1.0))
    ys = np.nonzero(region.any(axis=(0, 2)))[0]
    xs = np.nonzero(region.any(axis=(0, 1)))[0]
    box = (slice(int(ys[0]), int(ys[-1]) + 1), slice(int(xs[0]), int(xs[-1]) + 1))
    sy, sx = ct.spacing[1], ct.spacing[0]
    zoom = (sy / in_plane_mm, sx / in_plane_mm)
    if isinstance(lungs, LungResult) and callable(lungs.__dict__.get("_isolated")):
        # the isolated image is not made yet: normalise only the part the model sees, not the whole scan
        part = (slices, box[0], box[1])
        iso = isolated_image(ct.array[part[0]][:, part[1], part[2]], region[part[0]][:, part[1], part[2]],
                             lungs.params.window)
    else:
        iso = lungs.isolated.array[slices][:, box[0], box[1]]
    images = ndi.zoom(iso, (1, zoom[0], zoom[1]), order=1, prefilter=False).astype(np.float32)
    out_mask = None
    if mask is not None:
        m = mask[slices][:, box[0], box[1]].astype(np.float32)
        out_mask = ndi.zoom(m, (1, zoom[0], zoom[1]), order=1, prefilter=False) >= 0.5
    return SliceStack(images, out_mask, slices, box, zoom)


@dataclass
class Prediction:
    mask: np.ndarray  # bool [z, y, x] on the CT's canonical grid
    probability: np.ndarray  # float32 [z, y, x]
    seconds: dict[str, float] = field(default_factory=dict)
    slices_per_second: float = 0.0


@dataclass(frozen=True)
class CandidateFilter:
    """False-positive reduction: rules on each candidate lesion (a thresholded 3D component).

    Calibrated per model (leave-one-patient-out, ``benchmarks/loo.py``) and shipped in its meta
    as ``candidate_filter``; a candidate is kept only if it meets every rule.
    """

    min_peak_probability: float = 0.5  # the highest U-Net probability inside the candidate
    min_volume_ml: float = 0.0
    min_slices: int = 1  # axial extent: one-slice responses are mostly vessels seen end-on
    # share of a ring around the candidate (RING_MM, in-plane) that is lung parenchyma: a lesion of the
    # lung is mostly surrounded by lung; heart, great vessels, liver dome and chest wall are not
    min_ring_lung: float = 0.0
    min_mean_hu: float = -1024.0  # ground-glass smudges of diseased lung are fainter than tumours
    max_mean_hu: float = 3071.0  # contrast-filled vessels and heart chambers are denser than tumours
    min_mean_probability: float = 0.0
    # the second stage's lesion probability (lungseg.tumour.fpr), for models that ship a classifier
    min_lesion_score: float = 0.0
    # candidates this large skip the classifier: its 48 mm patch sees only part of them, and it learnt
    # from only three lesions of that size (the primaries); the rules above still apply
    scored_below_ml: float = 30.0

    def keeps(self, candidate: dict) -> bool:
        return (candidate["peak_probability"] >= self.min_peak_probability and candidate["volume_ml"] >= self.min_volume_ml
                and candidate["slices"] >= self.min_slices
                and candidate.get("mean_probability", 1.0) >= self.min_mean_probability
                and (candidate["volume_ml"] >= self.scored_below_ml or candidate.get("lesion_score", 1.0) >= self.min_lesion_score)
                and candidate.get("ring_lung", 1.0) >= self.min_ring_lung
                and self.min_mean_hu <= candidate.get("mean_hu", 0.0) <= self.max_mean_hu)

    @property
    def needs_context(self) -> bool:
        return self.min_ring_lung > 0 or self.min_mean_hu > -1024 or self.max_mean_hu < 3071

    @classmethod
    def from_meta(cls, meta: dict) -> "CandidateFilter | None":
        values = meta.get("candidate_filter")
        return cls(**values) if values else None


RING_MM = 3.0


@dataclass(frozen=True)
class CandidateContext:
    """What the candidate features beyond the probability need: the CT in HU and the tight lungs."""

    hu: np.ndarray
    lungs: np.ndarray  # bool, the lung parenchyma (LungResult.lungs)
    spacing_zyx: tuple[float, float, float]

    @classmethod
    def of(cls, ct: Volume, lungs) -> "CandidateContext | None":
        tight = getattr(lungs, "lungs", None)
        return cls(ct.array, tight, ct.spacing_zyx) if tight is not None else None


def _ring_features(sub: np.ndarray, boxes, box, context: CandidateContext, labels) -> dict[int, tuple[float, float]]:
    """{label: (share of an in-plane ring of RING_MM around the component that is lung, mean HU)} for
    ``labels``; ``sub`` holds the labels inside ``box`` of the scan, ``boxes`` their boxes in ``sub``."""
    ry = max(1, int(round(RING_MM / context.spacing_zyx[1])))
    rx = max(1, int(round(RING_MM / context.spacing_zyx[2])))
    yy, xx = np.ogrid[-ry:ry + 1, -rx:rx + 1]
    disk = ((yy / ry) ** 2 + (xx / rx) ** 2 <= 1.0)[None]
    features = {}
    for i in labels:
        b = boxes[i - 1]
        # the component's box in the scan, grown in-plane by the ring and clipped to the scan
        window = tuple(slice(max(o.start + c.start - r, 0), min(o.start + c.stop + r, size))
                       for o, c, r, size in zip(box, b, (0, ry, rx), context.lungs.shape))
        m = np.zeros(tuple(w.stop - w.start for w in window), bool)
        inner = tuple(slice(o.start + c.start - w.start, o.start + c.stop - w.start) for o, c, w in zip(box, b, window))
        m[inner] = sub[b] == i
        shell = ndi.binary_dilation(m, disk) & ~m
        features[i] = (float(context.lungs[window][shell].mean()) if shell.any() else 0.0, float(context.hu[window][m].mean()))
    return features


@dataclass(frozen=True)
class PostProcess:
    threshold: float = 0.5
    min_volume_ml: float = 0.1  # smaller components are noise
    min_inside_region: float = 0.5  # a component mostly outside the lung region is dropped
    keep_largest: bool = False  # the paper kept only the largest lesion; default keeps all
    # "model": the filter calibrated for the loaded model (its meta; none if it has none); None: off
    candidate_filter: CandidateFilter | str | None = "model"


def _fold_batch_norm(model: torch.nn.Module) -> torch.nn.Module:
    """Each convolution followed by batch normalisation (eval mode) merged into one convolution:
    the same function (to float rounding), half the passes over the feature maps on the CPU."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for block in model.modules():
        if isinstance(block, torch.nn.Sequential):
            for i in range(len(block) - 1):
                if isinstance(block[i], torch.nn.Conv2d) and isinstance(block[i + 1], torch.nn.BatchNorm2d):
                    block[i] = fuse_conv_bn_eval(block[i], block[i + 1])
                    block[i + 1] = torch.nn.Identity()
    return model


def _cpu_threads() -> int:
    """Threads for CPU inference: every core, unless the machine is already oversubscribed.

    Measured on 2 cores (issue 13): idle, 2 threads run the U-Net ~1.6x faster than 1; at a load
    average of 14, 2 threads took 3x the CPU time and 2x the wall time of 1.  ``LUNGSEG_THREADS``
    overrides.
    """
    if os.environ.get("LUNGSEG_THREADS"):
        return max(1, int(os.environ["LUNGSEG_THREADS"]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 1 if os.getloadavg()[0] >= cores + 1 else cores


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise LungsegError("--device cuda asked for, but no CUDA GPU is available")
    return torch.device(device)


class TumourPredictor:
    """A loaded U-Net, reused for every scan (load once per process)."""

    def __init__(self, model_path: str | os.PathLike = DEFAULT_MODEL, device: str = "auto", batch_size: int = 16):
        from lungseg.tumour.unet import model_from_payload

        path = Path(model_path)
        if not path.exists():
            raise LungsegError(f"model file {path} not found")
        self.device = resolve_device(device)
        raw = path.read_bytes()  # read once: the network, the second stage and the version's hash
        try:
            payload = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
            self.model, self.meta = model_from_payload(payload, self.device)
        except Exception as exc:  # torch raises pickle, zip and key errors for foreign files
            raise LungsegError(f"{path.name}: not a lungseg model ({type(exc).__name__})") from None
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        else:
            self.model = _fold_batch_norm(self.model)
        self.in_plane_mm = float(self.meta.get("in_plane_mm", 1.0))
        # the content hash: the filter and the second stage are rewritten into the same file after
        # training, and cached contours and study records must not outlive the weights they came from
        weights = hashlib.sha256(raw).hexdigest()[:8]
        self.version = f"{path.stem}-{self.meta.get('version', 'dev')}-{weights}"
        self.batch_size = batch_size
        self.multiple = 2 ** int(self.meta["architecture"].get("depth", 4))
        self.context = int(self.meta.get("context_slices", 0))  # 2.5D: neighbouring slices as channels
        self.candidate_filter = CandidateFilter.from_meta(self.meta)
        self.scorer = None  # the second stage, when the weights ship one
        classifier = payload.get("candidate_classifier")
        if classifier is not None:
            from lungseg.tumour.fpr import CandidateScorer

            self.scorer = CandidateScorer.from_payload(classifier)

    def tumour_probability(self, stack: SliceStack) -> np.ndarray:
        """Sigmoid output on the model grid, [n, h, w] float32."""
        out = np.zeros(stack.images.shape, np.float32)
        amp = self.device.type == "cuda"
        dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
        threads = torch.get_num_threads()
        batch_size = self.batch_size
        if self.device.type == "cpu":
            torch.set_num_threads(_cpu_threads())
            batch_size = min(batch_size, self._cpu_batch(stack.images.shape[1:]))
        try:
            self._run_batches(stack, out, amp, dtype, batch_size)
        finally:
            torch.set_num_threads(threads)
        return out

    def _cpu_batch(self, slice_shape: tuple[int, int], budget_bytes: float = 12e6) -> int:
        """Slices per batch on the CPU: the widest feature map (skip + upsampled, full size) of a
        batch kept under ``budget_bytes``.  Larger tensors exceed glibc's mmap threshold and are
        mapped and page-faulted anew for every batch: measured on LUNG1-003, 16 slices a batch
        cost 2.5 s of system time, 2 slices 0.05 s, for the same 3.1 s of computing."""
        h, w = (-(-s // self.multiple) * self.multiple for s in slice_shape)
        channels = 2 * int(self.meta["architecture"].get("base_channels", 16))
        return max(1, int(budget_bytes // (channels * h * w * 4)))

    def _run_batches(self, stack: SliceStack, out: np.ndarray, amp: bool, dtype, batch_size: int) -> None:
        from lungseg.tumour.unet import crop_to_size, pad_to_multiple

        with torch.inference_mode():
            n = len(stack.images)
            for start in range(0, n, batch_size):
                if self.context:  # the slice and its neighbours, the stack's end slices repeated
                    rows = np.arange(start, min(start + batch_size, n))[:, None] + np.arange(-self.context, self.context + 1)
                    batch = torch.from_numpy(stack.images[np.clip(rows, 0, n - 1)]).to(self.device)
                else:
                    batch = torch.from_numpy(stack.images[start : start + batch_size, None]).to(self.device)
                batch, size = pad_to_multiple(batch, self.multiple, 0.0)
                if amp:
                    batch = batch.contiguous(memory_format=torch.channels_last)
                    with torch.autocast("cuda", dtype=dtype):
                        logits = self.model(batch)
                else:
                    logits = self.model(batch)
                prob = torch.sigmoid(crop_to_size(logits.float(), size))[:, 0]
                out[start : start + len(prob)] = prob.cpu().numpy()

    def predict(self, ct: Volume, lungs: LungResult, post: PostProcess = PostProcess()) -> Prediction:
        t0 = time.perf_counter()
        stack = prepare_slices(ct, lungs, in_plane_mm=self.in_plane_mm)
        t1 = time.perf_counter()
        probability = np.zeros(ct.shape, np.float32)
        if len(stack.slices):
            prob = self.tumour_probability(stack)
            t2 = time.perf_counter()
            h = stack.box[0].stop - stack.box[0].start
            w = stack.box[1].stop - stack.box[1].start
            back = ndi.zoom(prob, (1, h / prob.shape[1], w / prob.shape[2]), order=1, prefilter=False)
            in_box = probability[:, stack.box[0], stack.box[1]]  # a view: assigning to it fills ``probability``
            in_box[stack.slices] = back[:, :h, :w]
        else:
            t2 = t1
        if post.candidate_filter == "model":
            post = replace(post, candidate_filter=self.candidate_filter)
        mask = postprocess(probability, lungs.lung_region, ct.voxel_volume_ml, post, CandidateContext.of(ct, lungs), self.scorer)
        t3 = time.perf_counter()
        n = len(stack.slices)
        return Prediction(mask, probability, {"prepare": t1 - t0, "unet": t2 - t1, "postprocess": t3 - t2},
                          n / max(t2 - t1, 1e-9))


def _candidates_in_box(probability, region, voxel_ml, threshold, context: CandidateContext | None = None):
    """(box, labels inside the box, rows, the labels' boxes inside it) of the thresholded 3D components
    (26-connected)."""
    mask = probability >= threshold
    if not mask.any():
        return None, None, [], []
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(mask))
    sub, n = label_components(mask[box], corners=True)
    inner = mask[box]
    lab = sub[inner].astype(np.intp)
    prob = probability[box][inner]
    sizes = np.bincount(lab, minlength=n + 1)
    inside = np.bincount(lab[region[box][inner]], minlength=n + 1)
    sums = np.bincount(lab, weights=prob, minlength=n + 1)
    peaks = np.zeros(n + 1)
    np.maximum.at(peaks, lab, prob)
    rows = []
    boxes = component_boxes(sub, n)
    for i, sl in enumerate(boxes, start=1):
        rows.append({"label": i, "volume_ml": float(sizes[i] * voxel_ml), "inside_region": float(inside[i] / sizes[i]),
                     "peak_probability": float(peaks[i]), "mean_probability": float(sums[i] / sizes[i]),
                     "slices": int(sl[0].stop - sl[0].start)})
    if context is not None:
        _add_context_features(rows, sub, boxes, box, context, [r["label"] for r in rows])
    return box, sub, rows, boxes


def _add_context_features(rows, sub, boxes, box, context: CandidateContext, labels) -> None:
    for i, (ring, hu) in _ring_features(sub, boxes, box, context, labels).items():
        rows[i - 1]["ring_lung"] = ring
        rows[i - 1]["mean_hu"] = hu


def _add_lesion_scores(rows, probability, sub, boxes, box, context: CandidateContext, scorer, labels) -> None:
    from lungseg.tumour.fpr import add_lesion_scores, candidate_patches

    patches = candidate_patches(context.hu, probability, sub, box, boxes, context.spacing_zyx, labels)
    add_lesion_scores(scorer, [rows[i - 1] for i in patches], list(patches.values()))


def candidates(probability: np.ndarray, region: np.ndarray, voxel_ml: float, threshold: float = 0.5,
               context: CandidateContext | None = None) -> tuple[np.ndarray, list[dict]]:
    """Label image of the thresholded 3D components (26-connected) and one feature row per label
    (volume, share inside the lung region, peak and mean probability, axial extent in slices; with a
    ``context``, also the share of lung in a ring around it and its mean HU)."""
    labels = np.zeros(probability.shape, np.int32)
    box, sub, rows, _ = _candidates_in_box(probability, region, voxel_ml, threshold, context)
    if box is not None:
        labels[box] = sub
    return labels, rows


def kept_labels(rows: list[dict], post: PostProcess = PostProcess()) -> list[int]:
    """The candidates that survive the size, region and false-positive rules of ``post``."""
    fp = post.candidate_filter if isinstance(post.candidate_filter, CandidateFilter) else None
    keep = [r for r in rows if r["volume_ml"] >= post.min_volume_ml and r["inside_region"] >= post.min_inside_region
            and (fp is None or fp.keeps(r))]
    if post.keep_largest and keep:
        keep = [max(keep, key=lambda r: r["volume_ml"])]
    return [r["label"] for r in keep]


def postprocess(probability: np.ndarray, region: np.ndarray, voxel_ml: float, post: PostProcess = PostProcess(),
                context: CandidateContext | None = None, scorer=None) -> np.ndarray:
    """Threshold, then drop components under ``min_volume_ml``, mostly outside the lung region, or
    rejected by the candidate filter (``post.candidate_filter``; "model" here means none).  The
    classifier ``scorer`` (:class:`lungseg.tumour.fpr.CandidateScorer`) scores only the candidates
    that every cheaper rule keeps."""
    out = np.zeros(probability.shape, bool)
    box, sub, rows, boxes = _candidates_in_box(probability, region, voxel_ml, post.threshold)
    keep = kept_labels(rows, post)  # rules without the ring and HU features (a missing feature passes)
    fp = post.candidate_filter if isinstance(post.candidate_filter, CandidateFilter) else None
    if keep and context is not None and fp is not None and fp.needs_context:
        _add_context_features(rows, sub, boxes, box, context, keep)  # only for the candidates still in
        keep = kept_labels(rows, post)
    if keep and context is not None and scorer is not None and fp is not None and fp.min_lesion_score > 0:
        small = [i for i in keep if rows[i - 1]["volume_ml"] < fp.scored_below_ml]
        if small:
            _add_lesion_scores(rows, probability, sub, boxes, box, context, scorer, small)
        keep = kept_labels(rows, post)
    if keep:
        lut = np.zeros(len(rows) + 1, bool)
        lut[keep] = True
        out[box] = lut[sub]
    return out


_default: TumourPredictor | None = None


def load_default_predictor(device: str = "auto") -> TumourPredictor:
    """The shipped model (``models/lungseg_unet.pt``), loaded once per process."""
    global _default
    if _default is None:
        if not DEFAULT_MODEL.exists():
            raise LungsegError(f"no shipped model at {DEFAULT_MODEL}")
        _default = TumourPredictor(DEFAULT_MODEL, device)
    return _default
