"""lungseg.case: typed sources, one open_case for every entry point, the result cache and the case LRU."""

import json

import numpy as np
import pytest

from lungseg.case import (AutomaticSource, CaseMemory, CaseSource, ManualSource, NoCache, ResultCache, open_case,
                          open_case_progressively, source_for_input)
from lungseg.errors import InputError


def test_case_record_is_validated_field_by_field(tmp_path):
    ok = CaseSource.from_dict({"ct": "a.zip", "manual": {"kind": "rtstruct", "roi": "GTV-1"},
                               "automatic": {"kind": "file", "path": "auto.nii.gz"}}, base=tmp_path)
    assert ok.ct == str(tmp_path / "a.zip") and ok.automatic.path == str(tmp_path / "auto.nii.gz")
    assert ok.manual.roi == "GTV-1"
    for bad, words in [
        ({"ct": "a.zip", "manual": {"kind": "rtstruct", "roi": "GTV-1"}}, "automatic: required"),
        ({"ct": "a.zip", "automatic": {"kind": "perturbed-manual"}}, "automatic contour kind"),
        ({"ct": "a.zip", "automatic": {"kind": "file"}}, "needs its path"),
        ({"ct": "a.zip", "automatic": {"kind": "model", "weights": "x"}}, "unknown field"),
        ({"ct": "", "automatic": {"kind": "model"}}, "ct: expected a path"),
        ({"ct": "a.zip", "automatic": {"kind": "stand-in"}}, "stand-in"),
        ({"ct": "a.zip", "automatic": {"kind": "model"}, "manual": {"kind": "seg"}}, "needs a file"),
    ]:
        with pytest.raises(InputError, match=words):
            CaseSource.from_dict(bad, base=tmp_path)
    # round trip through JSON
    again = CaseSource.from_dict(json.loads(json.dumps(ok.as_dict())))
    assert again == ok


def test_no_silent_stand_in():
    with pytest.raises(InputError, match="demos and tests only"):
        source_for_input("demo", automatic="stand-in")
    src = source_for_input("demo", automatic="stand-in", stand_in_ok=True)
    assert src.automatic.kind == "stand-in" and "not a model" in src.automatic.description


@pytest.fixture(scope="module")
def demo_pair(tmp_path_factory):
    cache = ResultCache(tmp_path_factory.mktemp("results"))
    src = CaseSource.demo(AutomaticSource("stand-in"))
    return cache, open_case(src, cache=cache), src


def test_open_case_is_immutable_and_complete(demo_pair):
    _, case, _ = demo_pair
    assert case.stage == "done" and case.manual.name == "phantom truth"
    assert case.automatic.mask.any() and case.lungs.lung_region.any()
    with pytest.raises(ValueError):
        case.automatic.mask[0, 0, 0] = True  # read-only: one case can be shared by every user
    with pytest.raises(AttributeError):
        case.label = "other"
    assert case.lesions and case.lesions[0]["lesion"] == 1


def test_cached_case_rebuilds_a_complete_lung_result(demo_pair, tmp_path):
    cache, first, src = demo_pair
    from lungseg.imaging.phantom import demo_case
    import SimpleITK as sitk

    # a file source so that the CT itself is cached too
    loaded, truth = demo_case()
    path = tmp_path / "phantom.nii.gz"
    sitk.WriteImage(loaded.volume.to_sitk(), str(path))
    label = tmp_path / "truth.nii.gz"
    sitk.WriteImage(loaded.volume.to_sitk(truth.astype(np.uint8)), str(label))
    source = CaseSource(str(path), AutomaticSource("file", path=str(label)), ManualSource("label", str(label)))
    fresh = open_case(source, cache=cache)
    again = open_case(source, cache=cache)
    assert not fresh.from_cache and again.from_cache and again.key == fresh.key
    for name in ("lungs", "lung_region", "left_lung", "right_lung", "body", "couch"):
        assert np.array_equal(getattr(again.lungs, name), getattr(fresh.lungs, name)), name
    assert again.lungs.body.any() and again.lungs.body.shape == fresh.lungs.body.shape
    assert np.array_equal(again.lungs.isolated.array, fresh.lungs.isolated.array)
    assert not np.array_equal(again.lungs.isolated.array, again.volume.array)  # normalised, not raw HU
    assert np.array_equal(again.volume.array, fresh.volume.array)
    assert np.array_equal(again.automatic.mask, truth) and np.array_equal(again.manual.mask, truth)
    # no pickles: plain arrays and JSON
    assert {p.suffix for p in cache.root.iterdir()} <= {".npz", ".json"}


def test_progressive_opening_shows_the_ct_first(demo_pair):
    stages = list(open_case_progressively(CaseSource.demo(AutomaticSource("stand-in")), cache=NoCache()))
    assert [c.stage for c in stages] == ["ct", "lungs", "done"]
    assert stages[0].lungs is None and stages[0].automatic is None
    assert stages[1].lungs is not None and stages[1].automatic is None and stages[1].manual is not None


def test_result_cache_is_bounded(tmp_path, demo_pair):
    _, case, _ = demo_pair
    one = ResultCache(tmp_path / "one")
    one.save_contour("auto", case.automatic)
    cap_mb = 2.5 * one.size_bytes() / 1024**2
    cache = ResultCache(tmp_path / "c", cap_mb=cap_mb)
    for i in range(6):
        cache.save_contour(f"auto-{i}", case.automatic)
    assert cache.size_bytes() <= cap_mb * 1024**2
    assert cache.load_contour("auto-5", case.volume.shape) is not None  # the newest stays
    assert cache.load_contour("auto-0", case.volume.shape) is None  # the oldest went


def test_corrupt_cache_entry_is_a_miss(tmp_path, demo_pair):
    _, case, _ = demo_pair
    cache = ResultCache(tmp_path / "c")
    cache.save_contour("auto-x", case.automatic)
    (cache.root / "auto-x.npz").write_bytes(b"truncated")
    assert cache.load_contour("auto-x", case.volume.shape) is None


def test_case_memory_stays_within_its_budget(demo_pair):
    _, case, _ = demo_pair
    memory = CaseMemory(budget_mb=2.5 * case.nbytes() / 1024**2)
    for i in range(5):
        memory.put(f"k{i}", case)
    assert len(memory) == 2 and memory.get("k4") is case and memory.get("k0") is None


def test_missing_files_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_case(CaseSource(str(tmp_path / "none.zip")), cache=NoCache())
    with pytest.raises(InputError, match="no such file"):
        source_for_input("demo", manual=str(tmp_path / "none.dcm"))


def test_lesion_numbers_select_lesions(demo_pair):
    _, case, _ = demo_pair
    one = case.automatic.lesion_mask([1])
    assert one.sum() > 0 and not (one & ~case.automatic.mask).any()
    with pytest.raises(InputError, match="no lesion 9"):
        case.automatic.lesion_mask([9])
