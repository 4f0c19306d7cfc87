"""The opened case: immutable, so one opened case can be shared by every user and thread."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from lungseg.case.sources import CaseSource
from lungseg.errors import InputError


@dataclass(frozen=True, eq=False)

class Contour:
    """One contour on the CT's canonical grid, with its lesion table (largest first)."""

    role: str  # "automatic" | "manual"
    name: str
    mask: np.ndarray  # bool [z, y, x], read-only
    lesions: tuple[dict, ...]
    description: str = ""
    version: str | None = None  # the model version for a model contour

    def lesion_mask(self, numbers: "list[int] | tuple[int, ...] | None" = None) -> np.ndarray:
        """The mask of the given lesions (numbered as in the table, largest first); all when None."""
        if numbers is None:
            return self.mask
        from lungseg.imaging.components import bounding_box, label_components

        known = {int(r["lesion"]) for r in self.lesions}
        bad = sorted(set(int(n) for n in numbers) - known)
        if bad:
            raise InputError(f"{self.name}: no lesion {', '.join(map(str, bad))} "
                             f"(the table has {len(known)} lesion{'s' if len(known) != 1 else ''})")
        out = np.zeros_like(self.mask)
        box = bounding_box(self.mask)
        if box is None:
            return out
        labels, _ = label_components(self.mask[box], corners=True)
        inside = out[box]
        for row in self.lesions:
            if int(row["lesion"]) in numbers:
                z, y, x = (v - b.start for v, b in zip(row["seed_voxel"], box))
                inside |= labels == labels[z, y, x]
        return out

    @property
    def volume_voxels(self) -> int:
        return int(self.mask.sum())


@dataclass(frozen=True, eq=False)

class Case:
    """An opened case. Immutable: share it freely between users and threads."""

    key: str  # content hash of the CT voxels and geometry
    label: str  # the case's own label, never a patient identifier
    source: CaseSource
    ct: Any  # lungseg.imaging.io.LoadedCT
    lungs: Any | None  # lungseg.lungs.LungResult (None while opening progressively)
    automatic: Contour | None
    manual: Contour | None
    stage: str = "done"  # "ct" → "lungs" → "done" while opening progressively
    from_cache: bool = False
    seconds: Mapping[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def volume(self):
        return self.ct.volume

    @property
    def lesions(self) -> tuple[dict, ...]:
        return self.automatic.lesions if self.automatic is not None else ()

    def contour(self, role: str) -> Contour:
        c = self.automatic if role == "automatic" else self.manual if role == "manual" else None
        if role not in ("automatic", "manual"):
            raise InputError(f"no contour {role!r}: choose automatic or manual")
        if c is None:
            raise InputError(f"{self.label}: no {role} contour")
        return c

    def nbytes(self) -> int:
        n = self.ct.volume.array.nbytes
        if self.lungs is not None:
            n += sum(getattr(self.lungs, k).nbytes for k in ("lungs", "lung_region", "left_lung", "right_lung",
                                                             "body", "couch"))
            made = self.lungs.__dict__.get("_isolated")  # the normalised image, only once it was made
            if made is not None and not callable(made):
                n += made.array.nbytes
        for c in (self.automatic, self.manual):
            if c is not None:
                n += c.mask.nbytes
        return int(n)

    def summary(self) -> dict:
        """What the app shows about a case: geometry and scanner, never patient identifiers."""
        info = self.ct.info
        v = self.ct.volume
        sx, sy, sz = v.spacing
        return {
            "Case": self.label,
            "Source": info.get("source", ""),
            "Dimensions (x × y × z)": " × ".join(str(s) for s in v.grid.size),
            "Pixel spacing (mm)": f"{sx:.3g} × {sy:.3g}",
            "Slice spacing (mm)": f"{sz:.3g}",
            "Slice thickness (mm)": str(info.get("slice_thickness_mm", "")),
            "Scanner": " ".join(str(info.get(k, "")) for k in ("manufacturer", "model")).strip() or "—",
            "kVp / kernel": " / ".join(str(info[k]) for k in ("kvp", "kernel") if info.get(k)) or "—",
            "ROIs in structure set": ", ".join(self.ct.roi_names()) or "—",
            "Lung region (ml)": f"{self.lungs.region_volume_ml:.0f}" if self.lungs is not None else "—",
            "Automatic contour": self.automatic.description if self.automatic else "—",
            "Manual contour": self.manual.name if self.manual else "—",
        }


def _frozen(mask: np.ndarray) -> np.ndarray:
    m = np.ascontiguousarray(mask, dtype=bool)
    m.setflags(write=False)
    return m


def make_contour(role, name, mask, lesions, description="", version=None) -> Contour:
    return Contour(role=role, name=name, mask=_frozen(mask), lesions=tuple(lesions), description=description,
                   version=version)


def lesion_rows(mask: np.ndarray, volume, spine_x) -> tuple[dict, ...]:
    """The lesion table of a mask (largest first; each row keeps a voxel inside its lesion)."""
    from lungseg.tumour.lesions import lesion_table

    return tuple(lesion_table(mask, volume, spine_x))
