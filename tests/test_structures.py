"""Every structure of a case, its versions, edits on the wire, interpolation, the threshold brush, decisions,
the one export path with provenance, and the editing effort; on LUNG1-003 (three GTVs) where real data is used."""

import base64

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from lungseg import metrics, structures as S
from lungseg.errors import InputError
from lungseg.imaging.volume import Volume
from lungseg.study import StudyStore


@pytest.fixture(scope="module")
def case3(data_dir):
    from lungseg.case import open_case, source_for_input

    return open_case(source_for_input(str(data_dir / "LUNG1-003.zip")))


@pytest.fixture
def store(tmp_path):
    with StudyStore(tmp_path / "s.db") as s:
        yield s


def _disk(shape_yx, centre, radius):
    yy, xx = np.ogrid[:shape_yx[0], :shape_yx[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def test_every_roi_of_lung1_003_is_listed_each_with_its_own_colour(case3, store, data_dir):
    views = {v.name: v for v in S.case_structures(store, case3)}
    assert {"GTV-1", "GTV-2", "GTV-3", "Lung L", "Lung R", "GTV-auto"} <= set(views)
    assert views["GTV-auto"].source == "automatic" and views["GTV-auto"].provenance == "AUTOMATIC"
    assert views["GTV-3"].source == "manual" and views["GTV-3"].provenance == "MANUAL"
    assert len(views["GTV-auto"].lesions) == len(case3.automatic.lesions) >= 1
    colours = [views[n].colour for n in ("GTV-1", "GTV-2", "GTV-3", "GTV-auto")]
    assert len(set(colours)) == 4 and S.colour_of("GTV-2") == views["GTV-2"].colour  # one colour per name
    assert all(c not in (S.LUNG_BLUE, S.AUTOMATIC_RED) for c in colours[:3]) and colours[3] == S.AUTOMATIC_RED
    # GTV-2 is not the case's chosen manual contour (GTV-1), yet it is read from the structure set
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(data_dir / "reference" / "LUNG1-003_GTV-2.nii.gz"))) > 0
    mine = sitk.GetArrayFromImage(case3.ct.mask_to_source(views["GTV-2"].mask())) > 0
    assert metrics.dice(mine, ref) > 0.98
    # a review starts with no decision, and nothing is accepted
    assert all(v.decision is None for v in views.values()) and S.accepted_structures(store, case3) == {}


def test_edits_are_new_versions_and_never_overwrite_the_original(case3, store):
    original = S.structure(store, case3, "GTV-2").mask().copy()
    k = int(np.flatnonzero(original.any(axis=(1, 2)))[3])
    brushed = original[k] | S.brush(case3.volume, (k, 250, 250), 8.0)
    after = brushed.copy()
    after[np.argwhere(original[k])[0][0]] = False  # erase one row of the contour
    stroke = S.delta_between(original[k], brushed, "axial", k)
    assert len(S.encode_deltas([stroke])) < 200  # a 16 mm brush stroke travels as ~100 bytes, not the slice
    wire = S.encode_deltas([stroke, S.delta_between(brushed, after, "axial", k)])

    v1 = S.apply_edits(store, case3, "dr a", "GTV-2", 0, wire, operations=2)
    assert (v1.version, v1.parent, v1.provenance, v1.author, v1.origin) == (1, 0, "SEMIAUTOMATIC", "dr a", "edited")
    expected = original.copy()
    expected[k] = after
    assert np.array_equal(v1.array(), expected)  # applied on the case's own grid, exactly
    assert np.array_equal(S.roi_mask(case3, "GTV-2"), original)  # the original ROI is untouched

    with pytest.raises(InputError, match="version 1 is the latest"):
        S.apply_edits(store, case3, "dr b", "GTV-2", 0, wire)  # made on a stale version: refused
    undo = S.delta_between(after, original[k], "axial", k)
    v2 = S.apply_edits(store, case3, "dr b", "GTV-2", 1, [undo], assisted=False)
    assert (v2.version, v2.parent, v2.author) == (2, 1, "dr b")
    assert v2.provenance == "SEMIAUTOMATIC"  # once assisted, always: the interpolation's shape may remain
    by_hand = S.apply_edits(store, case3, "dr b", "GTV-3", 0, [S.SliceDelta("axial", k, (0, 0, 1, 1),
                                                                            np.ones((1, 1), bool),
                                                                            np.zeros((1, 1), bool))], assisted=False)
    assert by_hand.provenance == "MANUAL"  # a manual ROI edited only by hand stays MANUAL
    assert np.array_equal(v2.array(), original)
    history = S.versions(store, case3, "GTV-2")
    assert [(v.version, v.parent) for v in history] == [(1, 0), (2, 1)]
    assert np.array_equal(history[0].array(), expected)  # an earlier version stays as it was
    view = S.structure(store, case3, "GTV-2")
    assert view.latest.version == 2 and np.array_equal(view.mask(), original)


def test_wire_format_is_the_one_the_viewer_sends(case3):
    # a 1 × 10 box: voxels 0, 8 and 9 set -> bits 10000000 11000000 (first voxel in the most significant bit)
    payload = '[{"axis":"axial","index":5,"box":[100,200,101,210],"added":"gMA=","removed":""}]'
    (d,) = S.decode_deltas(payload, case3.volume.shape)
    assert d.added.shape == (1, 10) and list(np.flatnonzero(d.added[0])) == [0, 8, 9] and not d.removed.any()
    assert S.encode_deltas([d]) == payload
    mask = np.zeros(case3.volume.shape, bool)
    mask[5, 100, 200:205] = True
    out = S.apply_deltas(mask, [d, S.SliceDelta("axial", 5, (100, 200, 101, 210), np.zeros((1, 10), bool),
                                                np.eye(1, 10, 1, dtype=bool))])
    assert list(np.flatnonzero(out[5, 100])) == [200, 202, 203, 204, 208, 209]
    coronal = S.decode_deltas('[{"axis":"coronal","index":100,"box":[5,200,6,210],"added":"gMA=","removed":""}]')
    assert np.array_equal(S.apply_deltas(np.zeros_like(mask), coronal)[5, 100], np.isin(np.arange(mask.shape[2]),
                                                                                            [200, 208, 209]))
    for bad, words in (('{"axis":"axial"}', "list"), ('[{"axis":"oblique","index":1,"box":[0,0,1,1]}]', "axis"),
                       ('[{"axis":"axial","index":1,"box":[0,0,1,10],"added":"gA=="}]', "needs 2"),
                       ('[{"axis":"axial","index":999,"box":[0,0,1,1],"added":"gA=="}]', "outside"),
                       ('[{"axis":"axial","index":1,"box":[0,0,1,1],"added":"!!"}]', "base64"), ("nope", "JSON")):
        with pytest.raises(InputError, match=words):
            S.decode_deltas(bad, case3.volume.shape)


def test_interpolation_fills_the_slices_between_edited_ones():
    mask = np.zeros((12, 60, 60), bool)
    mask[2] = _disk((60, 60), (30, 30), 6)
    mask[8] = _disk((60, 60), (30, 30), 14)
    mask[10, 5:8, 5:8] = True  # beyond the last edited slice: left alone
    out = S.interpolate_slices(mask, [2, 8])
    areas = out.sum(axis=(1, 2))
    assert np.array_equal(out[[0, 1, 2, 8, 9, 10, 11]], mask[[0, 1, 2, 8, 9, 10, 11]])
    assert all(areas[2] < areas[k] < areas[8] for k in range(3, 8))  # grows from the small to the large disk
    assert list(areas[3:8]) == sorted(areas[3:8])
    assert np.array_equal(S.interpolate_slices(mask, [2]), mask)  # one edited slice: nothing to interpolate


def test_interpolated_structure_is_a_new_semiautomatic_version(case3, store):
    empty = S.create_structure(store, case3, "dr a", "GTVn", "GTVn", "empty")
    assert empty.provenance == "MANUAL" and empty.mask is None
    disk = S.brush(case3.volume, (40, 300, 200), 6.0)
    drawn = S.apply_edits(store, case3, "dr a", "GTVn", 1, [S.delta_between(np.zeros_like(disk), disk, "axial", k)
                                                             for k in (40, 44)], assisted=False)
    assert drawn.provenance == "MANUAL"  # drawn by hand from nothing
    v = S.interpolate_structure(store, case3, "dr a", "GTVn", 2, [40, 44])
    got = v.array()
    assert (v.version, v.parent, v.provenance, v.origin) == (3, 2, "SEMIAUTOMATIC", "interpolated")
    assert all(np.array_equal(got[k], disk) for k in range(40, 45))  # the same disk all the way through
    assert not got[39].any() and not got[45].any()


def test_threshold_brush_presets_and_radius_in_mm():
    hu = np.tile(np.linspace(-1000, 500, 61)[None, None, :], (3, 61, 1)).astype(np.float32)  # HU grows along x
    vol = Volume(hu, spacing=(0.5, 1.0, 3.0))  # x, y, z spacing in mm: anisotropic in-plane
    disk = S.brush(vol, (1, 30, 30), 10.0)
    assert np.flatnonzero(disk[30]).size == 41 and np.flatnonzero(disk[:, 30]).size == 21  # 10 mm either side
    solid = S.threshold_brush(vol, (1, 30, 30), 10.0, "solid tumour")
    glass = S.threshold_brush(vol, (1, 30, 30), 10.0, S.GROUND_GLASS_HU)
    assert solid.any() and glass.any() and not (solid & glass).any()
    assert hu[1][solid].min() >= -100 and hu[1][solid].max() <= 250 and (solid <= disk).all()
    assert hu[1][glass].min() >= -750 and hu[1][glass].max() <= -300
    with pytest.raises(InputError, match="preset"):
        S.threshold_brush(vol, (1, 30, 30), 10.0, "bone")


def test_decisions_only_record_what_was_chosen_per_structure_and_lesion(case3, store):
    auto = S.structure(store, case3, "GTV-auto")
    assert auto.decision is None
    numbers = [int(r["lesion"]) for r in auto.lesions]
    if len(numbers) > 1:  # rejecting one lesion decides nothing about the others
        view = S.decide(store, case3, "dr a", "GTV-auto", False, lesions=[numbers[-1]])
        assert view.decision is None and view.lesion_decisions == {numbers[-1]: "rejected"}
    view = S.decide(store, case3, "dr a", "GTV-auto", True, lesions=[numbers[0]])
    assert view.decision == "accepted" and view.accepted_lesions in ((numbers[0],), None)
    got = S.accepted_structures(store, case3)
    assert list(got) == ["GTV-auto"] and np.array_equal(got["GTV-auto"].mask, case3.automatic.lesion_mask([numbers[0]]))
    assert got["GTV-auto"].provenance == "AUTOMATIC" and got["GTV-auto"].algorithm_name == S.MODEL_ALGORITHM
    assert {d["name"] for d in store.structure_decisions(case3.key)} == {"GTV-auto"}  # nothing else recorded
    S.decide(store, case3, "dr a", "GTV-3", True)
    S.decide(store, case3, "dr a", "GTV-auto", False)
    assert list(S.accepted_structures(store, case3)) == ["GTV-3"]
    assert S.structure(store, case3, "GTV-auto").decision == "rejected"
    with pytest.raises(InputError, match="no structure"):
        S.decide(store, case3, "dr a", "GTV-9", True)


def test_separate_structures_export_under_their_names_with_provenance(case3, store, tmp_path):
    from lungseg.case import with_dicom_headers
    from lungseg.imaging.io import load_rtstruct, load_seg
    from tests.test_dciodvfy import DCIODVFY, assert_valid

    gtvp = S.create_structure(store, case3, "dr a", "GTVp", "GTVp", ("automatic", [1]))
    m = gtvp.array()
    k = int(np.flatnonzero(m.any(axis=(1, 2)))[0])
    grown = m[k] | S.brush(case3.volume, (k, *np.argwhere(m[k])[0]), 6.0)  # a brush on the contour's edge
    assert (grown & ~m[k]).any()
    gtvp = S.apply_edits(store, case3, "dr a", "GTVp", 1, [S.delta_between(m[k], grown, "axial", k)])
    node = np.zeros(case3.volume.shape, bool)
    node[40:43, 300:306, 200:206] = True
    S.create_structure(store, case3, "dr a", "GTVn", "GTVn", ("mask", node, "SEMIAUTOMATIC", "click"))
    with pytest.raises(InputError, match="exists already"):
        S.create_structure(store, case3, "dr a", "GTV-1", "GTV", "empty")
    for name in ("GTVp", "GTVn", "GTV-3"):
        S.decide(store, case3, "dr a", name, True)
    accepted = S.accepted_structures(store, case3)
    assert list(accepted) == ["GTV-3", "GTVp", "GTVn"]
    want = {"GTV-3": "MANUAL", "GTVp": "SEMIAUTOMATIC", "GTVn": "SEMIAUTOMATIC"}
    (seg,) = S.export_structures(case3, accepted, "seg", tmp_path / "s.seg.dcm")
    (rts,) = S.export_structures(case3, accepted, "rtstruct", tmp_path / "s.rtstruct.dcm")
    ds = pydicom.dcmread(seg)
    assert {s.SegmentLabel: s.SegmentAlgorithmType for s in ds.SegmentSequence} == want
    assert {s.SegmentLabel: s.get("SegmentAlgorithmName") for s in ds.SegmentSequence} == {
        "GTV-3": None, "GTVp": f"{S.MODEL_ALGORITHM} + {S.EDIT_ALGORITHM}", "GTVn": S.CLICK_ALGORITHM}
    rs = pydicom.dcmread(rts)
    assert {r.ROIName: r.ROIGenerationAlgorithm for r in rs.StructureSetROISequence} == want
    assert {tuple(c.ROIDisplayColor) for c in rs.ROIContourSequence} == {tuple(S.colour_of(n)) for n in want}
    loaded = with_dicom_headers(case3.ct)
    for name, a in accepted.items():
        assert np.array_equal(load_seg(seg, loaded, name), a.mask), name
        assert np.array_equal(load_rtstruct(rts, loaded, name), a.mask), name
    assert np.array_equal(accepted["GTVp"].mask, gtvp.array())  # the version decided on, exactly as stored
    if DCIODVFY:
        assert_valid(seg, rts)
    with pytest.raises(InputError, match="not accepted"):
        S.export_structures(case3, accepted, "nifti", tmp_path / "x.nii.gz", names=["GTV-1"])


def test_editing_effort_active_time_operations_and_change(case3, store, tmp_path):
    assert S.active_seconds([100, 110, 130, 400, 405]) == 35.0  # the 270 s gap is idle
    S.record_activity(store, case3, "dr a", [(1_000.0, "pointer"), (1_030.0, "edit"), (1_200.0, "key"),
                                             (1_210.0, "edit")])
    start = S.create_structure(store, case3, "dr a", "GTVp", "GTVp", ("automatic", [1]))
    before = start.array()
    k = int(np.flatnonzero(before.any(axis=(1, 2)))[1])
    after = before[k].copy()
    after[np.argwhere(before[k])[:5].T[0], np.argwhere(before[k])[:5].T[1]] = False
    after |= S.brush(case3.volume, (k, 10, 10), 3.0)
    v = S.apply_edits(store, case3, "dr a", "GTVp", 1, [S.delta_between(before[k], after, "axial", k)], operations=4)
    e = S.editing_effort(store, case3, "dr a")
    end = v.array()
    ml = case3.volume.voxel_volume_ml
    assert (e.name, e.operations, e.from_version, e.to_version, e.active_s) == ("GTVp", 4, 1, 2, 40.0)
    assert e.added_ml == pytest.approx((end & ~before).sum() * ml) and e.added_ml > 0
    assert e.removed_ml == pytest.approx(5 * ml)
    assert e.dice == pytest.approx(metrics.dice(end, before))
    assert e.hd95_mm == pytest.approx(metrics.hd95(end, before, case3.volume.spacing_zyx))
    assert e.surface_dice_2mm == pytest.approx(metrics.surface_dice(end, before, case3.volume.spacing_zyx, 2.0))
    text = S.effort_csv(S.case_efforts(store, case3), tmp_path / "effort.csv")
    lines = (tmp_path / "effort.csv").read_text().splitlines()
    assert lines[0] == ",".join(S.EFFORT_COLUMNS) and len(lines) == 2 and text.splitlines() == lines
    assert lines[1].startswith(f"{case3.label},dr a,GTVp,40.0,4,")


def test_same_ct_from_a_source_without_its_structure_set_keeps_the_rois_apart(data_dir, tmp_path):
    """The result cache held one CT entry per content: opened first from a PACS series (no structure set
    beside it), the same voxels from the zip then listed no ROI at all."""
    import zipfile

    from lungseg.case import AutomaticSource, CaseSource, ResultCache, open_case_progressively

    bare = tmp_path / "ct-only.zip"
    with zipfile.ZipFile(data_dir / "LUNG1-003.zip") as src, zipfile.ZipFile(bare, "w") as dst:
        for item in src.infolist():
            if item.is_dir():
                continue
            data = src.read(item)
            if b"RTSTRUCT" not in data[:4096] and b"RTPLAN" not in data[:4096] and b"RTDOSE" not in data[:4096]:
                dst.writestr(item, data)
    cache = ResultCache(tmp_path / "results")
    full = CaseSource(str(data_dir / "LUNG1-003.zip"), AutomaticSource("model"))
    first = next(open_case_progressively(full, cache=cache))
    assert {"GTV-1", "GTV-2", "GTV-3"} <= set(first.ct.roi_names())
    other = next(open_case_progressively(CaseSource(str(bare), AutomaticSource("model")), cache=cache))
    assert other.key == first.key and other.ct.roi_names() == []
    again = next(open_case_progressively(full, cache=cache))
    assert again.from_cache and again.ct.roi_names() == first.ct.roi_names()


def test_a_study_verdict_exports_the_manual_contour_under_its_own_name(case3, store):
    """Issue 22: the study path named an accepted manual contour "GTV-auto"."""
    from lungseg import review

    manual = S.accepted_from_verdict(case3, {"accepted_source": "manual", "case_id": "c"})
    assert list(manual) == ["GTV-1"] and manual["GTV-1"].provenance == "MANUAL"
    saved = review.record(store, case3, "dr a", {"automatic"}, [1])
    auto = S.accepted_from_verdict(case3, {"accepted_source": "automatic", "case_id": "c"}, saved)
    assert list(auto) == ["GTV-auto"] and auto["GTV-auto"].provenance == "AUTOMATIC"
    assert np.array_equal(auto["GTV-auto"].mask, case3.automatic.lesion_mask([1]))
    with pytest.raises(InputError, match="no contour was accepted"):
        S.accepted_from_verdict(case3, {"accepted_source": "none", "case_id": "c"})


def test_a_review_records_only_the_contours_the_user_decided(case3, store):
    """Issue 22: "a review form saved untouched rejects everything"; touching only the manual contour must not
    reject the automatic one."""
    from lungseg import review

    with pytest.raises(InputError, match="nothing was chosen"):
        review.record(store, case3, "dr a", set(), decided=set())
    assert store.structure_decisions(case3.key) == [] and review.latest(store, case3) is None
    saved = review.record(store, case3, "dr a", {"manual"}, decided={"manual"})
    assert [(d.contour, d.accepted) for d in saved.decisions] == [("manual", True)]
    views = {v.name: v for v in S.case_structures(store, case3)}
    assert views["GTV-1"].decision == "accepted" and views["GTV-auto"].decision is None
    with pytest.raises(InputError, match="not among the decided"):
        review.record(store, case3, "dr a", {"automatic"}, decided={"manual"})
