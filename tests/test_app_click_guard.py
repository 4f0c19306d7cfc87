"""The click-to-segment guard the viewer applies (issue 22): the two implausible clicks the issue reproduced on
LUNG1-003 are flagged with plain warnings (the viewer then asks for an explicit confirmation before adding), and
a click on a real tumour is not."""

import numpy as np
import pytest

from lungseg_app.click_lesion import plausibility


@pytest.fixture(scope="module")
def predictor():
    from lungseg.lesion.segment import LesionPredictor

    return LesionPredictor()


def click(predictor, volume, k: int, j: int, i: int):
    return predictor.segment(volume, volume.index_to_physical(np.array([[k, j, i]], float))[0])


def test_the_issues_two_implausible_clicks_are_flagged(predictor, load_case):
    ct, _ = load_case("LUNG1-003")
    vol = ct.volume
    # supraclavicular click (viewer slice 84, x 322, y 202): a huge "lesion" from the neck into the mediastinum
    neck = click(predictor, vol, 83, 202, 322)
    warnings = plausibility(neck, vol) if neck.found else ["no lesion"]
    assert neck.found is False or any("300 ml" in w or "12 cm" in w for w in warnings), (neck.volume_ml, warnings)
    if neck.found:
        assert max(neck.extent_mm) > 120 or neck.volume_ml > 300  # the 3-D extent the viewer shows with it
    # normal lung (viewer slice 51, x 150, y 250, -762 HU): a fragment on other slices, not the clicked point
    lung = click(predictor, vol, 50, 250, 150)
    assert lung.found is False or "it does not contain the clicked point" in plausibility(lung, vol), \
        (lung.volume_ml, plausibility(lung, vol))


def test_a_click_on_the_tumour_is_not_flagged(predictor, load_case, data_dir):
    import SimpleITK as sitk

    ct, _ = load_case("LUNG1-001")
    gtv = sitk.GetArrayFromImage(sitk.ReadImage(str(data_dir / "reference" / "LUNG1-001_GTV-1.nii.gz"))) > 0
    k = int(np.argmax(gtv.sum(axis=(1, 2))))
    j, i = np.argwhere(gtv[k]).mean(axis=0).round().astype(int)
    result = click(predictor, ct.volume, k, j, i)
    assert result.found and plausibility(result, ct.volume) == []
