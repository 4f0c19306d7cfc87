"""Hostile inputs on the command line, as a hospital's security reviewer would try them (issue 24).

Every refused input ends in one line on stderr and exit status 2, writes no output file, reads nothing outside
the input (a secret file beside it is never opened) and leaves nothing on disk beyond the cache's budget.  Most
kinds run in-process through ``lungseg.cli.main`` (the same code as ``python -m lungseg``); a few run as real
subprocesses.  The inputs are small (32 × 32 DICOM slices from ``dicom_factory``), so the suite takes seconds.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dicom_factory import MR_STORAGE, write_series

REPO = Path(__file__).resolve().parents[1]
SECRET = b"TOP-SECRET-VIEWER-KEY-0123456789"
SHAPE = (4, 16, 16)  # what the hostile headers claim: a small CT volume
BUDGET_MB = 2

_opened: list[str] = []
_watching = [False]


def _audit(event, args):
    if _watching[0] and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # Python-level opens (pydicom, zipfile, numpy); SimpleITK's are checked by atime


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A private cache within a small budget, an output folder, and a secret file beside the input."""
    monkeypatch.setenv("LUNGSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LUNGSEG_APP_CACHE", str(tmp_path / "app-cache"))
    monkeypatch.delenv("LUNGSEG_RESULT_CACHE", raising=False)
    monkeypatch.setenv("LUNGSEG_DISK_CACHE_MB", str(BUDGET_MB))
    (tmp_path / "out").mkdir()
    (tmp_path / "in").mkdir()
    secret = tmp_path / "secret.raw"
    secret.write_bytes(_secret_voxels().tobytes())  # a file beside the input that reads as a plausible CT
    return tmp_path


def _secret_voxels() -> np.ndarray:
    a = np.full(SHAPE, -1000, np.int16)
    a[:, 3:13, 3:13] = 30
    a.reshape(-1)[: len(SECRET) // 2] = np.frombuffer(SECRET, np.int16) % 100  # its own mark, CT-like values
    return a


def _set_old_atime(p: Path) -> None:
    st = p.stat()
    os.utime(p, ns=(0, st.st_mtime_ns))  # with relatime a read now updates the access time


def _atime_works(tmp: Path) -> bool:
    probe = tmp / "atime-probe"
    probe.write_bytes(b"x")
    _set_old_atime(probe)
    probe.read_bytes()
    return probe.stat().st_atime_ns != 0


def run_cli(argv: list[str], env_dir: Path, capsys) -> tuple[int, str, str]:
    """``python -m lungseg ARGV`` in-process; checks that nothing outside the input was read."""
    from lungseg.cli import main

    secret = env_dir / "secret.raw"
    _set_old_atime(secret)
    _opened.clear()
    _watching[0] = True
    try:
        rc = main(argv)
    finally:
        _watching[0] = False
    out, err = capsys.readouterr()
    assert not any(Path(p).name == "secret.raw" for p in _opened), "the secret beside the input was opened"
    if _atime_works(env_dir):
        assert secret.stat().st_atime_ns == 0, "the secret beside the input was read"
    return rc, out, err


def assert_refused(rc: int, out: str, err: str, env_dir: Path, *match: str) -> None:
    lines = err.strip().splitlines()
    assert rc == 2, (rc, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and SECRET.decode() not in out + err
    for m in match:
        assert m in lines[0], (m, lines[0])
    assert not any((env_dir / "out").iterdir()), "an output file was written"
    assert_within_budget(env_dir)


def assert_within_budget(env_dir: Path) -> None:
    from lungseg import storage

    total = 0
    for folder in storage.patient_data_folders():
        for e in storage.entries(folder):
            assert not e.partial or e.pid == os.getpid(), f"partial entry left: {e.path}"
            total += e.size
    assert total <= BUDGET_MB * 1024**2


# ----------------------------------------------------------------------------------------------------- inputs


def _metaimage(path: Path, data_file: str, extra: str = "") -> Path:
    path.write_text("ObjectType = Image\nNDims = 3\nDimSize = 16 16 4\nElementType = MET_SHORT\n"
                    "ElementSpacing = 1 1 2\n" + extra + f"ElementDataFile = {data_file}\n")
    return path


def _nrrd(path: Path, data_file: str) -> Path:
    path.write_text("NRRD0004\ntype: short\ndimension: 3\nsizes: 16 16 4\nencoding: raw\nendian: little\n"
                    f"data file: {data_file}\n\n")
    return path


def _zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _symlink_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("ct/link.dcm")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "../../secret.raw")
    return path


def _series_zip(tmp: Path, z=(0, 2, 4)) -> Path:
    write_series(tmp / "series" / "ct", list(z))
    return shutil.make_archive(str(tmp / "in" / "case"), "zip", tmp / "series")


def _truncate(f: Path, keep: int) -> None:
    f.write_bytes(f.read_bytes()[:keep])


def _nifti(path: Path, values: np.ndarray) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(values), str(path))
    return path


def _ct_values(shape=(4, 16, 16)) -> np.ndarray:
    a = np.full(shape, -1000.0, np.float32)
    a[:, 4:12, 4:12] = 40.0
    return a


HEADERS = {  # kind: (writer, header file, its data file)
    "mhd-relative": (_metaimage, "ct.mhd", "../secret.raw"),
    "mhd-absolute": (_metaimage, "ct.mhd", "{secret}"),
    "mhd-pattern": (_metaimage, "ct.mhd", "../secret%d.raw 0 0 1"),
    "mha-relative": (_metaimage, "ct.mha", "../secret.raw"),
    "nhdr-relative": (_nrrd, "ct.nhdr", "../secret.raw"),
    "nrrd-absolute": (_nrrd, "ct.nrrd", "{secret}"),
    "nhdr-list": (_nrrd, "ct.nhdr", "LIST"),
}


def build(kind: str, tmp: Path) -> str:
    """The input of one hostile kind, made under ``tmp/in`` (the secret lies at ``tmp/secret.raw``)."""
    d = tmp / "in"
    secret = tmp / "secret.raw"
    if kind in HEADERS:
        write, name, data_file = HEADERS[kind]
        return str(write(d / name, data_file.format(secret=secret)))
    if kind == "mhd-list":
        p = _metaimage(d / "ct.mhd", "LIST 2D")
        p.write_text(p.read_text() + "../secret.raw\n")
        return str(p)
    if kind == "mhd-link-out":
        os.symlink(secret, d / "ct.raw")
        return str(_metaimage(d / "ct.mhd", "ct.raw"))
    if kind == "mhd-lowercase-key":
        p = d / "ct.mhd"
        p.write_text(_metaimage(p, "x").read_text().replace("ElementDataFile = x", "elementdatafile = ../secret.raw"))
        return str(p)
    if kind == "zip-empty":
        return str(_zip(d / "empty.zip", {}))
    if kind == "zip-traversal":
        return str(_zip(d / "evil.zip", {"../../secret.raw": b"x"}))
    if kind == "zip-absolute":
        return str(_zip(d / "evil.zip", {"/tmp/owned.dcm": b"x"}))
    if kind == "zip-symlink":
        return str(_symlink_zip(d / "link.zip"))
    if kind == "zip-not-a-zip":
        (d / "fake.zip").write_bytes(b"PK\x03\x04 not really a zip")
        return str(d / "fake.zip")
    if kind == "zip-bomb-small-members":  # each member under the old 10 MB floor, every one 1000:1
        return str(_zip(d / "bomb.zip", {f"ct/{i:03d}.dcm": bytes(600_000) for i in range(3)}))
    if kind == "zip-too-many-members":
        return str(_zip(d / "many.zip", {f"ct/{i}.dcm": os.urandom(64) for i in range(12)}, zipfile.ZIP_STORED))
    if kind == "zip-too-large":  # incompressible, so no ratio is suspicious: only the total bound holds
        return str(_zip(d / "large.zip", {f"ct/{i}.dcm": os.urandom(1 << 20) for i in range(3)}, zipfile.ZIP_STORED))
    if kind == "zip-of-no-dicom":
        return str(_zip(d / "notes.zip", {"readme.txt": b"no images here"}))
    if kind.startswith("dicom-"):
        series = d / "ct"
        spec = {
            "dicom-non-ct": dict(z=[0, 2, 4], modality="MR", sop_class=MR_STORAGE),
            "dicom-single-slice": dict(z=[0]),
            "dicom-gap": dict(z=[0, 2, 4, 8, 10]),
            "dicom-duplicate-position": dict(z=[0, 2, 2, 4]),
            "dicom-non-uniform": dict(z=[0, 2, 5, 6.5, 10]),
            "dicom-gantry-tilt": dict(z=[0, 2, 4], tilt=15.0),
            "dicom-mixed-orientation": dict(z=[0, 2, 4], iops=[(1, 0, 0, 0, 1, 0), (1, 0, 0, 0, 1, 0), (0, 1, 0, 1, 0, 0)]),
        }.get(kind, dict(z=[0, 2, 4, 6, 8]))
        z = spec.pop("z")
        info = write_series(series, z, **spec)
        files = info["files"]
        if kind == "dicom-truncated-pixels":
            _truncate(files[2], len(files[2].read_bytes()) - 900)
        elif kind == "dicom-unreadable-first":
            _truncate(sorted(files)[0], 200)
        elif kind == "dicom-unreadable-last":
            _truncate(sorted(files)[-1], 200)
        elif kind == "dicom-garbage-slice":
            (series / "s999.dcm").write_bytes(b"\0" * 128 + b"DICM" + os.urandom(300))
        return str(series)
    if kind == "folder-without-dicom":
        (d / "docs").mkdir()
        (d / "docs" / "a.txt").write_text("hello")
        return str(d / "docs")
    if kind == "nifti-nan":
        a = _ct_values()
        a[1, 2, 3] = np.nan
        a[2, 5, 5] = np.nan
        return str(_nifti(d / "nan.nii.gz", a))
    if kind == "nifti-inf":
        a = _ct_values()
        a[0, 0, 0] = np.inf
        return str(_nifti(d / "inf.nii.gz", a))
    if kind == "nifti-single-slice":
        return str(_nifti(d / "slice.nii.gz", _ct_values((1, 16, 16))))
    if kind == "nifti-mr":
        return str(_nifti(d / "mr.nii.gz", np.random.default_rng(0).uniform(0, 800, (4, 16, 16)).astype(np.float32)))
    if kind in ("nifti-truncated", "nifti-gz-truncated"):
        noisy = _ct_values((8, 64, 64)) + np.random.default_rng(0).normal(0, 30, (8, 64, 64)).astype(np.float32)
        p = _nifti(d / ("cut.nii" if kind == "nifti-truncated" else "cut.nii.gz"), noisy.astype(np.int16))
        _truncate(p, p.stat().st_size // 2)
        return str(p)
    if kind == "unknown-format":
        (d / "notes.txt").write_text("hello")
        return str(d / "notes.txt")
    if kind == "single-dicom-file":
        return str(write_series(d / "one", [0, 2])["files"][0])
    if kind == "missing":
        return str(d / "nothing-here.zip")
    raise KeyError(kind)


HOSTILE = {
    # item 1: a file outside the input
    "mhd-relative": ["outside the header's folder"],
    "mhd-absolute": ["absolute path"],
    "mhd-list": ["several data files"],
    "mhd-pattern": ["several data files"],
    "mhd-link-out": ["outside the header's folder"],
    "mha-relative": ["outside the header's folder"],
    "mhd-lowercase-key": ["outside the header's folder"],
    "nhdr-relative": ["outside the header's folder"],
    "nrrd-absolute": ["absolute path"],
    "nhdr-list": ["several data files"],
    # item 2 and the earlier zip refusals
    "zip-bomb-small-members": ["zip bomb"],
    "zip-too-many-members": ["12 files in the zip, more than the limit of 10"],
    "zip-too-large": ["unpacks to 3 MB, more than the limit of 2 MB"],
    "zip-empty": ["the zip is empty"],
    "zip-traversal": ["unsafe path in zip"],
    "zip-absolute": ["unsafe path in zip"],
    "zip-symlink": ["symbolic link"],
    "zip-not-a-zip": ["not a readable zip"],
    "zip-of-no-dicom": ["no DICOM files found"],
    # item 6: silently wrong volumes
    "dicom-unreadable-first": ["s000.dcm is not a readable DICOM file", "--skip-unreadable"],
    "dicom-unreadable-last": ["s004.dcm is not a readable DICOM file"],
    "dicom-garbage-slice": ["s999.dcm is not a readable DICOM file"],
    "dicom-truncated-pixels": ["s002.dcm's pixel data is truncated or unreadable"],
    "nifti-nan": ["2 voxel(s) are NaN or infinite"],
    "nifti-inf": ["1 voxel(s) are NaN or infinite"],
    # refused before (the README's list)
    "dicom-non-ct": ["not a CT", "MR"],
    "dicom-single-slice": ["single slice"],
    "dicom-gap": ["missing slices"],
    "dicom-duplicate-position": ["duplicate slice position"],
    "dicom-non-uniform": ["non-uniform slice spacing"],
    "dicom-gantry-tilt": ["gantry tilt"],
    "dicom-mixed-orientation": ["mixed orientations"],
    "folder-without-dicom": ["no DICOM files found"],
    "nifti-single-slice": ["single slice"],
    "nifti-mr": ["Hounsfield"],
    "nifti-truncated": ["the image data is truncated"],
    "nifti-gz-truncated": ["the image data is truncated"],
    "unknown-format": ["unknown format"],
    "single-dicom-file": ["a single DICOM file is one slice"],
    "missing": ["does not exist"],
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_input_refused_in_one_line(kind, env, capsys, monkeypatch):
    monkeypatch.setenv("LUNGSEG_ZIP_MAX_FILES", "10")
    monkeypatch.setenv("LUNGSEG_ZIP_MAX_MB", "2")
    source = build(kind, env)
    rc, out, err = run_cli(["lungs", source, "--out", str(env / "out" / "lungs.nii.gz")], env, capsys)
    assert_refused(rc, out, err, env, *HOSTILE[kind])
    if kind.startswith("zip-"):  # refused before anything was extracted, or removed when its content is refused
        unzipped = env / "cache" / "unzipped"
        assert not unzipped.exists() or not any(unzipped.iterdir())


@pytest.mark.parametrize("kind,match", [("mhd-relative", "outside the header's folder"),
                                        ("zip-bomb-small-members", "zip bomb"),
                                        ("dicom-unreadable-first", "s000.dcm is not a readable DICOM file"),
                                        ("nifti-nan", "NaN or infinite")])
def test_hostile_input_as_a_real_process(kind, match, env):
    source = build(kind, env)
    e = dict(os.environ, PYTHONPATH=str(REPO))
    run = subprocess.run([sys.executable, "-m", "lungseg", "lungs", source, "--out", str(env / "out" / "l.nii.gz")],
                         cwd=REPO, env=e, capture_output=True, text=True, timeout=120)
    assert_refused(run.returncode, run.stdout, run.stderr, env, match)


def test_the_secret_would_be_read_without_the_check(env):
    """The hostile header is real: SimpleITK on its own reads the secret beside the input as voxels."""
    header = build("mhd-relative", env)
    voxels = sitk.GetArrayFromImage(sitk.ReadImage(header))
    assert np.array_equal(voxels, _secret_voxels())


# ----------------------------------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("where,match", [
    ("missing/l.nii.gz", "does not exist"),
    ("", "is a folder"),
    ("file.txt/l.nii.gz", "is not a folder"),
    ("l.png", "expected a file name ending in"),
    ("/proc/1/l.nii.gz", "permission denied"),
    ("/sys/l.nii.gz", "cannot write the mask"),
])
def test_out_that_cannot_be_written_is_one_line(where, match, env, capsys):
    (env / "file.txt").write_text("x")
    source = str(write_series(env / "in" / "ct", [0, 2, 4])["files"][0].parent)
    out = where if where.startswith("/") else str(env / "out" / where) if where else str(env / "out")
    if where.startswith("file.txt"):
        out = str(env / where)
    rc, stdout, err = run_cli(["lungs", source, "--out", out], env, capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and match in lines[0], err
    assert not any((env / "out").iterdir())


@pytest.mark.parametrize("argv", [
    ["segment", "demo", "--out", "{out}"],
    ["segment", "demo", "--out", "{ok}", "--prob-out", "{out}"],
    ["lungs", "demo", "--out", "{ok}", "--region-out", "{out}"],
    ["segment-lesion", "demo", "--at=0,0,0", "--out", "{out}"],
    ["export", "demo", "--mask", "{ok}", "--format", "nifti", "--out", "{missing}"],
    ["export", "demo", "--mask", "{ok}", "--format", "seg", "--out", "{ok}", "--ct-out", "{file}"],
    ["evaluate", "--cases", "{env}", "--csv", "{out}"],
    ["batch", "demo", "--out", "{missing}"],
    ["train", "--data", "{env}", "--out", "{out}"],
    ["train-lesion", "{env}", "--out", "{missing}"],
])
def test_every_command_checks_its_output_paths_first(argv, env, capsys):
    (env / "file.txt").write_text("x")
    values = {"out": str(env / "out"), "ok": str(env / "out" / "ok.nii.gz"), "missing": str(env / "no" / "such" / "x.nii.gz"),
              "file": str(env / "file.txt"), "env": str(env)}
    rc, out, err = run_cli([a.format(**values) for a in argv], env, capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert not any((env / "out").iterdir())


def test_usage_errors_are_one_line(env, capsys):
    from lungseg.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["lungs", "demo"])  # --out missing
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and "--out" in err[0]


# ----------------------------------------------------------------------------------------------------- item 1: uploads


@pytest.mark.parametrize("name,make", [
    ("ct.mha", lambda tmp: _metaimage(tmp / "x.mha", "ct.raw").read_bytes()),
    ("ct.nrrd", lambda tmp: _nrrd(tmp / "x.nrrd", "ct.raw").read_bytes()),
    ("ct.mha", lambda tmp: _metaimage(tmp / "x.mha", "/etc/passwd").read_bytes()),
])
def test_upload_accepts_only_self_contained_files(name, make, env):
    from lungseg.errors import InputError
    from lungseg_app import cases

    with pytest.raises(InputError, match="self-contained"):
        cases.save_upload(name, make(env))
    assert not any((env / "app-cache" / "uploads").iterdir())
    image = sitk.GetImageFromArray(_ct_values().astype(np.int16))
    for suffix in (".mha", ".nrrd", ".nii.gz"):  # LOCAL and attached data are fine
        sitk.WriteImage(image, str(env / f"ok{suffix}"))
        saved = cases.save_upload(f"ok{suffix}", (env / f"ok{suffix}").read_bytes())
        assert saved.exists() and stat.S_IMODE(saved.stat().st_mode) == 0o600
        assert stat.S_IMODE(saved.parent.stat().st_mode) == 0o700


def test_data_folder_case_cannot_reach_out_by_its_header(env):
    """Department mode opens only cases of the data folder; a header there must not lead out of it."""
    from lungseg.case import CaseSource, NoCache, open_case_progressively
    from lungseg.errors import InputError
    from lungseg_app import cases

    header = build("mhd-relative", env)  # env/in is the data folder; the secret lies beside it, outside
    assert [p.name for p in cases.list_data_folder(env / "in")] == ["ct.mhd"]
    path = cases.inside_data_folder(header, env / "in")  # the path itself is inside
    _set_old_atime(env / "secret.raw")
    with pytest.raises(InputError, match="outside the header's folder"):
        next(open_case_progressively(CaseSource(str(path)), cache=NoCache()))
    if _atime_works(env):
        assert (env / "secret.raw").stat().st_atime_ns == 0


def test_data_file_beside_the_header_is_read(env, capsys):
    """A detached header with its data file in its own folder is a valid input (the check is not a blanket refusal)."""
    values = _ct_values(SHAPE).astype(np.int16)
    (env / "in" / "ct.raw").write_bytes(values.tobytes())
    header = _metaimage(env / "in" / "ct.mhd", "ct.raw")
    from lungseg.imaging.io import load_ct

    assert np.array_equal(load_ct(header).volume.array, values)


# ----------------------------------------------------------------------------------------------------- item 2: zips


def test_interrupted_unzip_leaves_no_partial_folder(env, monkeypatch):
    from lungseg.imaging.io import extract_zip

    z = _series_zip(env)
    real_open = zipfile.ZipFile.open
    calls = []

    def interrupted(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as a kill in the middle would stop it
        return real_open(self, *a, **k)

    monkeypatch.setattr(zipfile.ZipFile, "open", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract_zip(Path(z))
    assert not list((env / "cache" / "unzipped").iterdir())


def test_unzip_killed_midway_leaves_a_partial_folder_that_the_next_run_removes(env):
    import signal

    z = _series_zip(env, z=range(0, 40, 2))
    slow = ("import sys, time, zipfile; from pathlib import Path\n"
            "real = zipfile.ZipFile.open\n"
            "zipfile.ZipFile.open = lambda self, *a, **k: (time.sleep(0.2), real(self, *a, **k))[1]\n"
            "from lungseg.imaging.io import extract_zip\n"
            "extract_zip(Path(sys.argv[1]))\n")
    child = subprocess.Popen([sys.executable, "-c", slow, z], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    unzipped = env / "cache" / "unzipped"
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not list(unzipped.glob(".part-*/ct/*.dcm")):
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)  # killed in the middle of the unzip
    finally:
        child.wait(timeout=30)
    left = list(unzipped.glob(".part-*"))
    assert left and not [p for p in unzipped.iterdir() if not p.name.startswith(".")]
    rc = subprocess.run([sys.executable, "-m", "lungseg", "cache", "info"], cwd=REPO, capture_output=True, text=True,
                        env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert rc.returncode == 0 and all(p.exists() for p in left)  # looking does not remove anything
    from lungseg.imaging.io import load_ct

    assert load_ct(z).volume.shape[0] == 20  # the next run unzips afresh and removes the killed one's folder
    assert not any(p.exists() for p in left)


def test_stale_partial_folder_of_a_killed_unzip_is_removed(env):
    from lungseg.imaging.io import load_ct

    unzipped = env / "cache" / "unzipped"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = unzipped / f".part-{int(dead.stdout)}-abc"
    (stale / "ct").mkdir(parents=True)
    (stale / "ct" / "big.dcm").write_bytes(bytes(1000))
    mine = unzipped / f".part-{os.getpid()}-live"  # this process's own extraction in progress stays
    mine.mkdir()
    load_ct(_series_zip(env))
    assert not stale.exists() and mine.exists()
    assert len([p for p in unzipped.iterdir() if not p.name.startswith(".")]) == 1


# ----------------------------------------------------------------------------------------------------- item 5: data on disk


def _fake_pacs(monkeypatch, series_dir: Path):
    """DICOMweb as lungseg sees it, served from a local folder (the real-Orthanc tests are in test_dicomweb)."""
    import pydicom

    from lungseg import dicomweb

    files = sorted(series_dir.glob("*.dcm"))
    uids = sorted(str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files)

    class FakePacs:
        def __init__(self, settings):
            self.settings = settings

        def series(self, ref):
            return dicomweb.SeriesInfo(ref.study_uid, ref.series_uid, "CT", len(uids))

        def instance_uids(self, ref):
            return uids

        def retrieve(self, ref, folder, expected, say=None):
            folder.mkdir(parents=True, exist_ok=True)
            out = []
            for f in files:
                ds = pydicom.dcmread(f)
                p = folder / f"{ds.SOPInstanceUID}.dcm"
                ds.save_as(p)
                out.append(p)
            return out

    monkeypatch.setattr(dicomweb, "Pacs", FakePacs)
    return "http://pacs.invalid:8042/dicom-web/studies/1.2.3/series/1.2.3.4.712563382046"


def _files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*")] if root.exists() else []


def test_no_cache_leaves_nothing_behind_also_for_a_pacs_series(env, capsys, monkeypatch):
    write_series(env / "pacs", [0, 2, 4])
    url = _fake_pacs(monkeypatch, env / "pacs")
    z = _series_zip(env)
    for source in (url, z):
        rc, out, err = run_cli(["lungs", source, "--out", str(env / "out" / "l.nii.gz"), "--no-cache"], env, capsys)
        assert rc == 0, err
        assert not [p for p in _files_under(env / "cache") if p.is_file()], _files_under(env / "cache")
        assert not _files_under(env / "app-cache")


def test_patient_data_is_private(env, capsys, monkeypatch):
    write_series(env / "pacs", [0, 2, 4])
    url = _fake_pacs(monkeypatch, env / "pacs")
    monkeypatch.setenv("LUNGSEG_DISK_CACHE_MB", "100")
    for source in (url, _series_zip(env)):
        rc, _, err = run_cli(["lungs", source, "--out", str(env / "out" / "l.nii.gz")], env, capsys)
        assert rc == 0, err
    paths = _files_under(env / "cache")
    assert any(p.suffix == ".npz" for p in paths) and any("dicomweb" in p.parts for p in paths)
    assert any("unzipped" in p.parts and p.suffix == ".dcm" for p in paths)
    for p in paths + [env / "cache"]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o700 if p.is_dir() else 0o600), (p, oct(mode))


def test_one_budget_and_one_age_over_every_folder_of_patient_data(env, monkeypatch):
    from lungseg import storage
    from lungseg.case import ResultCache
    from lungseg.imaging.io import load_ct
    from lungseg_app import cases

    monkeypatch.setenv("LUNGSEG_DISK_CACHE_MB", "100")
    load_ct(_series_zip(env))  # unzipped series
    cases.save_upload("up.bin", os.urandom(300_000))  # an upload
    viewer = cases.app_cache_dir() / "viewer-files" / ("a" * 32)  # a case's viewer files
    storage.private_dir(viewer)
    storage.write_private(viewer / "ct-000.gz", os.urandom(300_000))
    ResultCache(cases.app_cache_dir() / "results").remember_source("x", "y")
    names = {u.folder.name for u in storage.usage()}
    assert {"unzipped series", "uploads", "viewer files", "app results"} <= names
    # age: an entry unused for longer than LUNGSEG_RETENTION_DAYS goes, wherever it is
    old = time.time() - 3 * 86400
    os.utime(viewer, (old, old))
    monkeypatch.setenv("LUNGSEG_RETENTION_DAYS", "2")
    storage._held.clear()
    removed = storage.enforce()
    assert viewer in removed and not viewer.exists()
    # budget: the whole, not one folder, within LUNGSEG_DISK_CACHE_MB
    monkeypatch.setenv("LUNGSEG_DISK_CACHE_MB", "0.2")
    storage.enforce()
    assert sum(u.bytes for u in storage.usage()) <= 0.2 * 1024**2
    assert not (env / "app-cache" / "uploads").exists() or not any((env / "app-cache" / "uploads").iterdir())


def test_cache_info_and_clear(env, capsys, monkeypatch):
    monkeypatch.setenv("LUNGSEG_DISK_CACHE_MB", "100")
    rc, _, err = run_cli(["lungs", _series_zip(env), "--out", str(env / "out" / "l.nii.gz")], env, capsys)
    assert rc == 0, err
    rc, out, _ = run_cli(["cache", "info"], env, capsys)
    assert rc == 0 and "unzipped series: 1 entries" in out and "of 100.0 MB" in out and "results:" in out
    rc, out, _ = run_cli(["cache", "clear"], env, capsys)
    assert rc == 0 and out.startswith("removed ")
    assert not [p for p in _files_under(env / "cache") if p.is_file()]


# ----------------------------------------------------------------------------------------------------- item 6, 9


def test_skip_unreadable_goes_on_with_a_warning(env, capsys):
    source = build("dicom-unreadable-first", env)
    rc, out, err = run_cli(["lungs", source, "--out", str(env / "out" / "l.nii.gz"), "--skip-unreadable"], env, capsys)
    assert rc == 0, err
    assert "warning: skipped 1 unreadable DICOM file(s) (--skip-unreadable): s000.dcm" in err
    assert sitk.ReadImage(str(env / "out" / "l.nii.gz")).GetSize() == (32, 32, 4)


def test_several_series_lists_the_others(env, capsys):
    a = write_series(env / "in" / "mix" / "a", [0, 2, 4])
    b = write_series(env / "in" / "mix" / "b", [0, 2, 4, 6])
    rc, out, err = run_cli(["lungs", str(env / "in" / "mix"), "--out", str(env / "out" / "l.nii.gz")], env, capsys)
    assert rc == 0, err
    assert f"chose {b['series_uid']}" in err and f"the others: {a['series_uid']} (3 slices" in err and "--series" in err


def test_unreadable_folder_names_the_permission_problem(env, capsys, monkeypatch):
    import lungseg.imaging.io as lio

    folder = write_series(env / "in" / "locked", [0, 2, 4])["files"][0].parent
    real = os.access
    monkeypatch.setattr(lio.os, "access", lambda p, mode, **k: False if Path(p) == folder else real(p, mode, **k))
    rc, out, err = run_cli(["lungs", str(folder), "--out", str(env / "out" / "l.nii.gz")], env, capsys)
    assert rc == 2 and err.strip() == "error: locked: cannot read this folder (permission denied)"
    monkeypatch.setattr(lio.os, "access", real)
    real_read = lio.pydicom.dcmread

    def denied(p, *a, **k):
        if Path(p).name == "s001.dcm":
            raise PermissionError(13, "Permission denied", str(p))
        return real_read(p, *a, **k)

    monkeypatch.setattr(lio.pydicom, "dcmread", denied)
    rc, out, err = run_cli(["lungs", str(folder), "--out", str(env / "out" / "l.nii.gz")], env, capsys)
    assert rc == 2 and err.strip() == "error: s001.dcm: cannot read this file (permission denied)"


def test_huge_item_id_in_cast_vote_is_a_clear_error(tmp_path):
    from lungseg.study import CaseMetadata, CaseSpec, DesignParams, StudyError, StudyStore, authenticate_rater

    with StudyStore(tmp_path / "s.db") as store:
        st = store.create_study("s", [CaseSpec("C", (1, 2, 3), CaseMetadata(2.5, 12.0, "RUL"))],
                                DesignParams(slices_per_case=2), actor="t")
        session = authenticate_rater(store, store.invite_rater(st.name, "Dr A", "Radiologist", actor="t").token)
        for item_id in (2**63, 10**30, -(2**70)):
            with pytest.raises(StudyError, match="out of range"):
                store.cast_vote(session, item_id, "left")


def test_label_belongs_to_the_source_opened(env, monkeypatch):
    from lungseg.case import CaseSource, ResultCache, open_case_progressively

    info = write_series(env / "series" / "LUNG1-001", [0, 2, 4])
    url = _fake_pacs(monkeypatch, env / "series" / "LUNG1-001")
    z = Path(shutil.make_archive(str(env / "in" / "LUNG1-001"), "zip", env / "series"))

    def first_stage(ct):
        stages = open_case_progressively(CaseSource(ct), cache=ResultCache())
        case = next(stages)
        stages.close()
        return case

    assert first_stage(str(z)).label == "LUNG1-001"
    pacs = first_stage(url)
    assert pacs.label == "pacs-712563382046"
    again = first_stage(str(z))
    assert again.from_cache and again.key == pacs.key  # the same pixels, from the cache
    assert again.label == "LUNG1-001" and again.ct.label == "LUNG1-001"
    assert all("unzipped" in str(f) for f in again.ct.dicom.files)  # its own files, not the PACS copy
    assert again.ct.dicom.series_uid == info["series_uid"]


def test_batch_exits_non_zero_when_cases_failed(env, capsys, monkeypatch):
    import lungseg.cohort as cohort

    def process_case(case, out, model=None):  # the pipeline is test_batch's; here only what the run reports
        ok = Path(case.ct).exists()
        return {"case": case.name, "source": case.ct, "status": "ok" if ok else "failed",
                "reason": "" if ok else f"{case.ct}: no such file or folder", "resumed": "no"}

    monkeypatch.setattr(cohort, "process_case", process_case)
    _nifti(env / "in" / "good.nii.gz", _ct_values())
    argv = ["batch", str(env / "in" / "good.nii.gz"), str(env / "in" / "missing.zip"), "--out", str(env / "out" / "run"),
            "--workers", "0", "--quiet"]
    rc, out, err = run_cli(argv, env, capsys)
    assert "1 ok (0 already done, skipped), 1 failed" in out
    assert rc == 1 and err.strip() == "error: 1 of 2 case(s) failed (see above; --allow-failures exits 0 all the same)"
    rc, out, err = run_cli(argv + ["--allow-failures"], env, capsys)
    assert rc == 0 and "1 failed" in out and not err


def test_tests_do_not_rewrite_the_docs_screenshots(monkeypatch, tmp_path):
    import browser_harness

    class Page:
        def __init__(self):
            self.paths = []

        def screenshot(self, path):
            self.paths.append(path)
            Path(path).write_bytes(b"png")

    monkeypatch.delenv("LUNGSEG_SCREENSHOTS", raising=False)
    page = Page()
    browser_harness.screenshot(page, "viewer-demo.png")
    assert page.paths == []  # a plain test run writes no screenshot, so docs/ stays as committed
    monkeypatch.setenv("LUNGSEG_SCREENSHOTS", str(tmp_path / "shots"))
    browser_harness.screenshot(page, "viewer-demo.png")
    assert page.paths == [str(tmp_path / "shots" / "viewer-demo.png")]
