"""Issue 13 made lung isolation, DICOM reading and the command line fast; these tests hold that
the results did not change (speed itself is measured by benchmarks/, not here)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

import lungseg.lungs as L
from lungseg.imaging.volume import disk

REPO = Path(__file__).resolve().parents[1]
BEFORE = json.loads((Path(__file__).parent / "data" / "lung_masks_before_issue13.json").read_text())["cases"]


def dice_upper_bound(mask: np.ndarray, before: dict) -> float:
    """The highest Dice ``mask`` can have with the mask whose projections are ``before``.

    Per slice, row or column, two masks differ in at least |count − count_before| voxels.
    """
    total = mask.sum() + before["voxels"]
    differ = max(np.abs(mask.sum(axis=axes) - np.asarray(before[name])).sum()
                 for name, axes in (("z", (1, 2)), ("y", (0, 2)), ("x", (0, 1))))
    return 1.0 - differ / total


@pytest.mark.parametrize("case", ["LUNG1-001", "LUNG1-002", "LUNG1-003"])
def test_masks_are_those_from_before_the_speed_work(isolated_case, case):
    r = isolated_case(case)
    for name in ("lungs", "lung_region", "left_lung"):
        assert dice_upper_bound(getattr(r, name), BEFORE[case][name]) >= 0.999, name


def test_the_bound_catches_a_changed_mask(isolated_case):
    r = isolated_case("LUNG1-003")
    shifted = np.roll(r.lungs, 2, axis=2)  # a 2-pixel shift sideways
    assert dice_upper_bound(shifted, BEFORE["LUNG1-003"]["lungs"]) < 0.999


# --------------------------------------------------------------------------------------------
# the fast helpers against scipy.ndimage, which the seed-faithful first version used


def _random_masks(shape, seed, p=0.55):
    rng = np.random.default_rng(seed)
    return ndi.binary_opening(rng.random(shape) < p)  # blobs with holes, touching the borders


@pytest.mark.parametrize("spacing", [(0.977, 0.977), (0.7, 1.3)])
def test_in_plane_dilation_and_erosion_equal_scipy(spacing):
    m = _random_masks((6, 70, 90), 1)
    se = disk(5.0, spacing)
    assert np.array_equal(L.dilate_slices(m, se), ndi.binary_dilation(m, structure=se[None]))
    assert np.array_equal(L.erode_slices(m, se), ndi.binary_erosion(m, structure=se[None]))


@pytest.mark.parametrize("spacing_zyx", [(3.0, 0.977, 0.977), (1.0, 0.977, 0.977), (0.6, 0.6, 0.6)])
def test_closing_with_a_ball_equals_scipy(spacing_zyx):
    m = _random_masks((12, 40, 50), 2)
    ball = L._ellipsoid(2.0, spacing_zyx)
    assert np.array_equal(L._erode3d(L._dilate3d(m, ball), ball), ndi.binary_closing(m, structure=ball))


def test_hole_filling_equals_scipy_over_a_tall_stack():
    # 260 slices of 300 rows: more rows than OpenCV's flood fill handles in one image
    m = _random_masks((260, 300, 40), 3, p=0.6)
    assert np.array_equal(L.fill_holes_slices(m), np.stack([ndi.binary_fill_holes(s) for s in m]))


def _convex_fill_from_edges(lung):
    """The first version: the hull of the edge pixels (erosion) of each slice."""
    from scipy.spatial import ConvexHull

    from lungseg.imaging.io import fill_polygons_even_odd

    out = lung.copy()
    for k in np.nonzero(lung.any(axis=(1, 2)))[0]:
        pts = np.argwhere(lung[k] & ~ndi.binary_erosion(lung[k])).astype(float)
        if len(pts) >= 3:
            out[k] |= fill_polygons_even_odd([pts[ConvexHull(pts).vertices]], lung.shape[1:])
    return out


def test_isolation_equals_the_scipy_path_on_a_real_case(monkeypatch, load_case, isolated_case):
    """The whole of isolate() with every fast helper swapped for its scipy.ndimage original."""
    fast = isolated_case("LUNG1-003")
    monkeypatch.setattr(L, "dilate_slices", lambda m, se: ndi.binary_dilation(m, structure=se[None]))
    monkeypatch.setattr(L, "erode_slices", lambda m, se: ndi.binary_erosion(m, structure=se[None]))
    monkeypatch.setattr(L, "fill_holes_slices", lambda m: np.stack([ndi.binary_fill_holes(s) for s in m]))
    monkeypatch.setattr(L, "_dilate3d", lambda m, se: ndi.binary_dilation(m, structure=se))
    monkeypatch.setattr(L, "_erode3d", lambda m, se: ndi.binary_erosion(m, structure=se))
    monkeypatch.setattr(L, "fill_concavities", _convex_fill_from_edges)
    slow = L.isolate(load_case("LUNG1-003")[0].volume)
    for name in ("lungs", "left_lung", "body", "couch"):
        assert np.array_equal(getattr(fast, name), getattr(slow, name)), name
    a, b = fast.lung_region, slow.lung_region
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) >= 0.99999
    assert np.array_equal(fast.spine_x, slow.spine_x, equal_nan=True)


# --------------------------------------------------------------------------------------------
# DICOM reading in one pass


def test_one_pass_dicom_reading_equals_simpleitk(load_case):
    import SimpleITK as sitk

    from lungseg.imaging import io

    ct, _ = load_case("LUNG1-003")
    assert ct.volume.array.dtype == np.int16
    image = io._read_series_pixels(ct.dicom, "LUNG1-003")
    reference = io.to_canonical(io._hu_image(sitk.GetArrayFromImage(image), image))
    assert np.array_equal(ct.volume.array, reference.array)
    assert ct.volume.spacing == reference.spacing and ct.volume.origin == reference.origin
    assert ct.source_grid == io.Grid.of(image)
    assert all("PixelData" not in ds for ds in ct.dicom.headers)  # headers kept, pixels not twice


# --------------------------------------------------------------------------------------------
# the command line imports only what a command needs


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout


def test_help_imports_no_heavy_library():
    out = _run("import sys, contextlib, io\n"
               "from lungseg.cli import main\n"
               "with contextlib.redirect_stdout(io.StringIO()) as text, contextlib.suppress(SystemExit):\n"
               "    main(['--help'])\n"
               "assert 'segment' in text.getvalue() and 'export' in text.getvalue()\n"
               "print(sorted(m for m in ('torch', 'SimpleITK', 'pydicom', 'scipy', 'cv2', 'sqlite_utils') if m in sys.modules))")
    assert out.strip() == "[]"


def test_each_command_still_has_its_own_options():
    from lungseg.cli import COMMANDS, build_parser

    full = build_parser()  # without argv every command group registers itself
    assert set(COMMANDS) <= set(full._subparsers._group_actions[0].choices)
    args = build_parser(["segment", "x.zip", "--out", "y.nii.gz"]).parse_args(["segment", "x.zip", "--out", "y.nii.gz"])
    assert args.command == "segment" and args.threshold == 0.5 and callable(args.func)


# --------------------------------------------------------------------------------------------
# connected components on every core (ITK, OpenCV) against scipy.ndimage


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Two label images split the voxels into the same components (whatever the numbering)."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


@pytest.mark.parametrize("corners", [False, True])
def test_3d_components_and_boxes_equal_scipy(load_case, corners):
    from lungseg.imaging.components import component_boxes, label_components

    air = load_case("LUNG1-001")[0].volume.array[40:80, 100:400, 60:460] < -300  # lungs, airways, outside air
    labels, n = label_components(air, corners=corners)
    ref, n_ref = ndi.label(air, structure=np.ones((3, 3, 3), bool) if corners else None)
    assert n == n_ref > 10
    assert _same_partition(labels, ref)
    boxes = component_boxes(labels, n)
    by_first_voxel = {tuple(s.start for s in box): box for box in boxes}
    assert sorted(by_first_voxel.values(), key=str) == sorted(ndi.find_objects(ref), key=str)


def test_slice_components_equal_scipy():
    from lungseg.imaging.components import label_slice

    m = ndi.binary_opening(np.random.default_rng(3).random((120, 150)) < 0.5)
    labels, n, areas, centroids = label_slice(m)
    ref, n_ref = ndi.label(m)
    assert n == n_ref > 5 and _same_partition(labels, ref)
    for i in range(1, n + 1):
        j = ref[labels == i][0]
        assert areas[i] == (ref == j).sum()
        assert np.allclose(centroids[i][::-1], ndi.center_of_mass(ref == j))
