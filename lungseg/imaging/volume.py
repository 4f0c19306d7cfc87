"""The one image type that flows through io → harmonise → lungs → segment → export.

Arrays are indexed ``[z, y, x]`` (NumPy order, as ``sitk.GetArrayFromImage`` gives them).
Geometry follows SimpleITK/ITK: ``spacing`` and ``origin`` are ``(x, y, z)`` in millimetres and
``direction`` is the row-major 3×3 matrix whose columns are the x, y, z axis directions in LPS
patient coordinates.

In the canonical orientation used inside lungseg the direction is the identity ("LPS"): x grows
toward the patient's left, y toward posterior, z toward the head.  Slice ``k`` is therefore always
one axial plane, ``k = 0`` the most inferior, and an axial slice shown with row 0 at the top has the
patient's left on the right of the screen (the radiological convention).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Grid:
    """A voxel grid in patient space without its voxels (used to write results back)."""

    size: tuple[int, int, int]  # (x, y, z) voxel counts, SimpleITK order
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...] = IDENTITY

    @classmethod
    def of(cls, image: sitk.Image) -> "Grid":
        return cls(
            tuple(int(v) for v in image.GetSize()),
            tuple(float(v) for v in image.GetSpacing()),
            tuple(float(v) for v in image.GetOrigin()),
            tuple(float(v) for v in image.GetDirection()),
        )

    def matches(self, other: "Grid", tol_mm: float = 1e-3) -> bool:
        return (
            self.size == other.size
            and np.allclose(self.spacing, other.spacing, atol=tol_mm)
            and np.allclose(self.origin, other.origin, atol=tol_mm)
            and np.allclose(self.direction, other.direction, atol=1e-4)
        )

    def empty_image(self, pixel_type=sitk.sitkUInt8) -> sitk.Image:
        image = sitk.Image([int(v) for v in self.size], pixel_type)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image: voxels ``array[z, y, x]`` plus its place in patient space."""

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = IDENTITY
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.array.ndim != 3:
            raise ValueError(f"a Volume needs a 3D array, got shape {self.array.shape}")
        if min(self.spacing) <= 0:
            raise ValueError(f"spacing must be positive, got {self.spacing}")

    # --- construction -----------------------------------------------------------------------
    @classmethod
    def from_sitk(cls, image: sitk.Image, meta: dict | None = None) -> "Volume":
        if image.GetDimension() != 3:
            raise ValueError(f"expected a 3D image, got {image.GetDimension()}D")
        return cls(
            sitk.GetArrayFromImage(image),
            tuple(float(v) for v in image.GetSpacing()),
            tuple(float(v) for v in image.GetOrigin()),
            tuple(float(v) for v in image.GetDirection()),
            dict(meta or {}),
        )

    def to_sitk(self, array: np.ndarray | None = None) -> sitk.Image:
        data = self.array if array is None else array
        if data.dtype == bool:
            data = data.astype(np.uint8)
        image = sitk.GetImageFromArray(np.ascontiguousarray(data))
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def with_array(self, array: np.ndarray) -> "Volume":
        if array.shape != self.array.shape:
            raise ValueError(f"shape {array.shape} differs from the volume's {self.array.shape}")
        return Volume(array, self.spacing, self.origin, self.direction, dict(self.meta))

    # --- geometry ---------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)

    @property
    def grid(self) -> Grid:
        z, y, x = self.array.shape
        return Grid((x, y, z), self.spacing, self.origin, self.direction)

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return (self.spacing[2], self.spacing[1], self.spacing[0])

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    @property
    def is_canonical(self) -> bool:
        return np.allclose(self.direction, IDENTITY, atol=1e-4)

    def index_to_physical(self, zyx: np.ndarray) -> np.ndarray:
        """Continuous ``[z, y, x]`` indices (N×3) → LPS millimetres (N×3, x y z)."""
        zyx = np.atleast_2d(np.asarray(zyx, dtype=float))
        d = np.asarray(self.direction).reshape(3, 3)
        return (d @ (zyx[:, ::-1] * np.asarray(self.spacing)).T).T + np.asarray(self.origin)

    def physical_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """LPS millimetres (N×3) → continuous ``[z, y, x]`` indices (N×3)."""
        xyz = np.atleast_2d(np.asarray(xyz, dtype=float))
        d = np.asarray(self.direction).reshape(3, 3)
        ijk = np.linalg.solve(d * np.asarray(self.spacing)[None, :], (xyz - self.origin).T).T
        return ijk[:, ::-1]

    def slice_z_mm(self) -> np.ndarray:
        """Patient z (mm) of each slice of a canonical volume."""
        return self.origin[2] + self.spacing[2] * np.arange(self.shape[0])


def mm_to_voxels(length_mm: float, spacing_mm: float) -> int:
    """A length in millimetres as a whole number of voxels (at least 1)."""
    return max(1, int(round(length_mm / spacing_mm)))


def disk(radius_mm: float, spacing_yx: tuple[float, float]) -> np.ndarray:
    """A 2D boolean disk of ``radius_mm`` sampled on an (y, x) pixel grid (an ellipse in pixels)."""
    ry = radius_mm / spacing_yx[0]
    rx = radius_mm / spacing_yx[1]
    ny, nx = int(np.floor(ry)), int(np.floor(rx))
    yy, xx = np.mgrid[-ny : ny + 1, -nx : nx + 1]
    return (yy / max(ry, 1e-6)) ** 2 + (xx / max(rx, 1e-6)) ** 2 <= 1.0 + 1e-9


def ball(radius_mm: float, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """A 3D boolean ball of ``radius_mm`` on a (z, y, x) grid."""
    r = [radius_mm / s for s in spacing_zyx]
    n = [int(np.floor(v)) for v in r]
    zz, yy, xx = np.mgrid[-n[0] : n[0] + 1, -n[1] : n[1] + 1, -n[2] : n[2] + 1]
    return (zz / max(r[0], 1e-6)) ** 2 + (yy / max(r[1], 1e-6)) ** 2 + (xx / max(r[2], 1e-6)) ** 2 <= 1.0 + 1e-9
