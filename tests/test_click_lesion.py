"""Lesions added to the automatic contour by a click: the compact mask store, the review record (who, when,
carried over, removed), and the accepted/exported contour, on LUNG1-001 with a click inside GTV-1."""

import sqlite3

import numpy as np
import pytest
import SimpleITK as sitk

from lungseg import review, structures
from lungseg.errors import InputError
from lungseg.maskcodec import PackedMask, pack, unpack
from lungseg.study import AddedLesion, ContourDecision, StudyStore
from lungseg.study.design import StudyError
from lungseg.study.store import MIGRATIONS, SCHEMA_VERSION, migrate


def test_packed_mask_round_trip_is_exact_and_compact(data_dir):
    gtv = sitk.GetArrayFromImage(sitk.ReadImage(str(data_dir / "reference" / "LUNG1-001_GTV-1.nii.gz"))) > 0
    rng = np.random.default_rng(7)
    speckle = rng.random((31, 17, 9)) < 0.3  # no structure to compress, odd sizes: bit padding at the end
    holed = np.zeros((40, 50, 60), bool)
    holed[5:30, 10:40, 20:55] = True
    holed[10:20, 20:30, 30:40] = False
    for mask in (gtv, speckle, holed):
        packed = pack(mask)
        back = unpack(packed, mask.shape)
        assert back.dtype == bool and back.shape == mask.shape and np.array_equal(back, mask)
        assert packed.voxels == int(mask.sum())
    p = pack(gtv)
    assert len(p.data) < 20_000 < gtv.size // 8  # GTV-1 (155 ml): a few kB, not the grid's 4.4 MB of bits
    assert p.box[:3] == tuple(int(np.flatnonzero(gtv.any(axis=a))[0]) for a in ((1, 2), (0, 2), (0, 1)))


def test_packed_mask_refuses_bad_input():
    with pytest.raises(InputError, match="empty"):
        pack(np.zeros((4, 4, 4), bool))
    with pytest.raises(InputError, match="3-D"):
        pack(np.ones((4, 4), bool))
    p = pack(np.ones((2, 3, 4), bool))
    with pytest.raises(InputError, match="does not fit"):
        unpack(p, (2, 3, 5))
    with pytest.raises(InputError, match="damaged"):
        unpack(PackedMask(p.shape, p.box, p.voxels, b"not zlib"))
    with pytest.raises(InputError, match="outside its grid"):
        unpack(PackedMask(p.shape, (0, 0, 0, 2, 3, 9), p.voxels, p.data))


def test_store_keeps_added_lesions_and_migrates_a_v4_database(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, target=4) == 4
    conn.close()
    with StudyStore(path) as s:
        assert s.schema_version == SCHEMA_VERSION == len(MIGRATIONS)
        old = s.record_case_review("k", "K", "local user", [ContourDecision("automatic", True)])
        assert old.added == ()
        m = np.zeros((5, 6, 7), bool)
        m[1:3, 2:4, 3] = True
        lesion = AddedLesion(1, pack(m), (1.0, 2.0, 3.0), 0.1, 2.0)
        r = s.record_case_review("k", "K", "dr a", [], added=[lesion])  # added lesions alone make a review
        assert r.decisions == () and r.added[0].added_by == "dr a" and r.added[0].added_at == r.decided_at
        again = s.record_case_review("k", "K", "dr b", [ContourDecision("automatic", False)], added=r.added)
        assert again.added[0].added_by == "dr a"  # carried over: who added it stays
        assert s.conn.execute("SELECT COUNT(*) FROM lesion_masks").fetchone()[0] == 1  # stored once
        with pytest.raises(StudyError, match="each number once"):
            s.record_case_review("k", "K", "dr a", [], added=[lesion, lesion])
        with pytest.raises(StudyError, match="at least one contour"):
            s.record_case_review("k", "K", "dr a", [], added=[])
    with StudyStore(path) as s:
        got = s.latest_case_review("k")
        assert np.array_equal(unpack(got.added[0].mask), m) and got.added[0].point_mm == (1.0, 2.0, 3.0)


@pytest.fixture(scope="module")
def lung1_001_case(data_dir):
    from lungseg.case import AutomaticSource, CaseSource, ManualSource, open_case

    source = CaseSource(str(data_dir / "LUNG1-001.zip"), manual=ManualSource("rtstruct", None, "GTV-1"),
                        automatic=AutomaticSource("stand-in"))
    return open_case(source)


@pytest.fixture(scope="module")
def gtv_click(lung1_001_case, data_dir):
    """segment_at at the centre of GTV-1 on its largest slice (the point a reader clicks in the viewer)."""
    from lungseg.lesion import segment_at

    case = lung1_001_case
    gtv = sitk.GetArrayFromImage(sitk.ReadImage(str(data_dir / "reference" / "LUNG1-001_GTV-1.nii.gz"))) > 0
    assert gtv.shape == case.volume.shape
    k = int(np.argmax(gtv.sum(axis=(1, 2))))
    j, i = np.argwhere(gtv[k]).mean(axis=0).round().astype(int)
    result = segment_at(case.volume, case.volume.index_to_physical([k, j, i])[0])
    dice = 2 * (result.mask & gtv).sum() / (result.mask.sum() + gtv.sum())
    assert dice >= 0.6, dice
    return result


def test_added_lesion_is_recorded_reloaded_exported_and_removable(lung1_001_case, gtv_click, tmp_path):
    case, result = lung1_001_case, gtv_click
    db = tmp_path / "reviews.db"
    with StudyStore(db) as store:
        review.record(store, case, "dr first", {"manual"})  # the reviewer had rejected the automatic contour
        added = review.add_lesion(store, case, "dr click", result.mask, result.point_mm)
        with pytest.raises(InputError, match="already added"):
            review.add_lesion(store, case, "dr click", result.mask, result.point_mm)
        with pytest.raises(InputError, match="does not fit"):
            review.add_lesion(store, case, "dr click", result.mask[1:], result.point_mm)
    assert [a.label for a in added.added] == ["C1"] and added.reviewer == "dr click"
    assert added.decision("manual").accepted and not added.decision("automatic").accepted  # decisions kept

    with StudyStore(db) as store:  # reopened: the same lesion, bit for bit, with who and when
        latest = review.latest(store, case)
    (lesion,) = latest.added
    assert (lesion.added_by, lesion.added_at) == ("dr click", added.decided_at)
    assert np.array_equal(unpack(lesion.mask, case.volume.shape), result.mask)
    assert lesion.volume_ml == pytest.approx(result.volume_ml, abs=0.01)
    rows = review.added_lesion_rows(case, latest)
    assert rows[0]["lesion"] == "C1" and rows[0]["how"] == "added by click" and rows[0]["side"] == case.manual.lesions[0]["side"]

    with StudyStore(db) as store:
        masks = structures.accepted_structures(store, case)
    # the clicked lesion is its own structure (C1, SEMIAUTOMATIC), never merged into the rejected GTV-auto
    assert list(masks) == ["GTV-1", "C1"]
    assert np.array_equal(masks["C1"].mask, result.mask) and masks["C1"].provenance == "SEMIAUTOMATIC"
    out = tmp_path / "auto.nii.gz"
    (path,) = structures.export_structures(case, masks, "nifti", out, names=["C1"])
    exported = sitk.GetArrayFromImage(sitk.ReadImage(str(path))) > 0
    assert np.array_equal(exported, sitk.GetArrayFromImage(case.ct.mask_to_source(result.mask)) > 0)

    with StudyStore(db) as store:
        kept = review.record(store, case, "dr second", {"automatic"}, [1])  # a later decision keeps it
        assert [a.label for a in kept.added] == ["C1"]
        accepted = structures.accepted_structures(store, case)
        assert np.array_equal(accepted["GTV-auto"].mask, case.automatic.lesion_mask([1]))
        assert np.array_equal(accepted["C1"].mask, result.mask) and "GTV-1" not in accepted
        with pytest.raises(InputError, match="no added lesion C2"):
            review.remove_added_lesion(store, case, "dr second", 2)
        removed = review.remove_added_lesion(store, case, "dr second", 1)
        assert removed.added == () and removed.decision("automatic").lesions == (1,)
        assert list(structures.accepted_structures(store, case)) == ["GTV-auto"]


def test_removing_the_only_added_lesion_records_no_rejection(lung1_001_case, gtv_click, tmp_path):
    """Issue 22: removing an added lesion used to record "automatic: rejected; manual: rejected"."""
    case, result = lung1_001_case, gtv_click
    with StudyStore(tmp_path / "r.db") as store:
        review.add_lesion(store, case, "dr click", result.mask, result.point_mm)
        removed = review.remove_added_lesion(store, case, "dr click", 1)
        assert removed.decisions == () and removed.added == ()
        assert store.structure_decisions(case.key) == []
        assert {s.name: s.decision for s in structures.case_structures(store, case)}["GTV-auto"] is None
        assert structures.accepted_structures(store, case) == {}


def test_added_lesion_goes_into_seg_with_the_manual_contour(lung1_001_case, gtv_click, tmp_path):
    from lungseg.case import with_dicom_headers
    from lungseg.imaging.io import load_seg

    case, result = lung1_001_case, gtv_click
    with StudyStore(tmp_path / "r.db") as store:
        latest = review.add_lesion(store, case, "dr click", result.mask, result.point_mm)
        assert latest.decisions == ()
        (path,) = structures.export_structures(case, structures.accepted_structures(store, case), "seg",
                                               tmp_path / "added-seg.dcm")
    back = load_seg(path, with_dicom_headers(case.ct), "C1")
    assert np.array_equal(back, sitk.GetArrayFromImage(case.ct.mask_to_source(result.mask)) > 0)


@pytest.fixture(scope="module")
def lung1_003_volume(load_case):
    ct, _ = load_case("LUNG1-003")
    return ct.volume


def test_click_in_the_neck_is_flagged_with_its_extent(lung1_003_volume):
    """Issue 22: LUNG1-003, viewer slice 84 (1-based, z index 83), voxel x 322, y 202 (supraclavicular):
    a 1,425 ml "lesion" 209 mm across used to be added with only "may be cut"."""
    from lungseg.lesion import plausibility, segment_at

    volume = lung1_003_volume
    click = (83, 202, 322)
    result = segment_at(volume, volume.index_to_physical([click])[0])
    assert result.found and result.volume_ml > 300
    warnings = plausibility(result, click)
    assert any("more than 300 ml" in w for w in warnings)
    assert any("more than 12 cm" in w for w in warnings)
    ex, ey, ez = result.extent_mm
    assert max(ex, ey, ez) > 120 and f"{ez:.0f} mm" in result.summary()  # the 3-D extent is stated
    assert "more than 300 ml" in result.summary()


def test_click_in_normal_lung_says_no_lesion_here(lung1_003_volume):
    """Issue 22: slice 51 (z index 50), x 150, y 250, -762 HU: a 0.6 ml lesion on slices 53-58 that does not
    contain the clicked slice used to be returned; now the click says there is no lesion there."""
    from lungseg.lesion import segment_at

    volume = lung1_003_volume
    click = (50, 250, 150)
    assert volume.array[click] < -700  # aerated lung under the click
    result = segment_at(volume, volume.index_to_physical([click])[0])
    assert not result.found and not result.mask.any()
    assert "no lesion at the click" in result.summary() and "does not contain the clicked point" in result.summary()


def test_plausibility_accepts_a_real_tumour_clicked_inside(lung1_001_case, gtv_click):
    from lungseg.lesion import plausibility

    volume = lung1_001_case.volume
    click = tuple(int(round(v)) for v in volume.physical_to_index(np.asarray(gtv_click.point_mm))[0])
    assert gtv_click.found and plausibility(gtv_click, click) == []
    outside = (click[0], 0, 0)
    assert plausibility(gtv_click, outside) == ["it does not contain the clicked point"]
