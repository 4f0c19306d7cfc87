"""``batch`` on a 2-worker local Dask cluster: LUNG1-001, the TotalSegmentator example and a corrupt zip.

Two cases ``ok``, one ``failed`` with its reason; a worker killed in the middle of a case loses no finished
result; a second run skips the finished cases.  A tiny model (which finds no tumour) keeps this quick: what
is tested is the cohort machinery, not the U-Net.
"""

import csv
import json
import os
import signal
import subprocess
import sys

import pytest
import SimpleITK as sitk

from orthanc import wait_for

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _plain_main(monkeypatch):
    """Dask starts workers with multiprocessing's spawn, which re-runs ``__main__`` from its file.  Streamlit's
    AppTest (earlier in the same pytest process) leaves a page script there; a plain module keeps the
    workers from running it."""
    import types

    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch

    from lungseg.tumour.unet import UNet2D, save_model

    model = UNet2D(base_channels=4, depth=2)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():  # a model that is sure there is no tumour anywhere
        last.weight.zero_()
        last.bias.fill_(-10.0)
    return save_model(model, tmp_path_factory.mktemp("model") / "tiny.pt", {"version": "test", "in_plane_mm": 2.0})


@pytest.fixture(scope="module")
def cohort(data_dir, tiny_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("cohort")
    broken = d / "broken.zip"
    broken.write_bytes((data_dir / "LUNG1-002.zip").read_bytes()[:200_000])  # a download cut short
    sources = [str(data_dir / "LUNG1-001.zip"), str(data_dir / "totalsegmentator-example" / "example_ct.nii.gz"),
               str(broken)]
    env = dict(os.environ, LUNGSEG_CACHE=str(d / "cache"), PYTHONPATH=str(REPO))
    env.pop("LUNGSEG_RESULT_CACHE", None)
    argv = [sys.executable, "-m", "lungseg", "batch", *sources, "--out", str(d / "out"), "--workers", "2",
            "--model", str(tiny_model)]
    return {"argv": argv, "env": env, "out": d / "out"}


def _summary(out):
    with open(out / "summary.csv", newline="") as f:
        return {r["case"]: r for r in csv.DictReader(f)}


def test_two_ok_one_failed_and_a_killed_worker_loses_no_finished_result(cohort):
    out = cohort["out"]
    proc = subprocess.Popen(cohort["argv"], cwd=REPO, env=cohort["env"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        def finished_and_running():
            done = {p.parent.name: p for p in out.glob("*/result.json")}
            running = []
            for m in (out / ".running").glob("*.json"):
                try:
                    if m.stem not in done:
                        running.append((m.stem, json.loads(m.read_text())["pid"]))
                except (OSError, ValueError, KeyError):
                    pass
            return (done, running) if done and running else None

        hit = wait_for(finished_and_running, timeout_s=300, step_s=0.05)
        assert hit, "no moment with one case finished and another running"
        done, running = hit
        before = {name: p.stat().st_mtime_ns for name, p in done.items()}
        killed_case, killed_pid = running[0]
        os.kill(killed_pid, signal.SIGKILL)  # the worker dies in the middle of a case
        stdout, stderr = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, stderr[-2000:]  # a case failed: the run says so in its exit status
    assert "error: 1 of 3 case(s) failed" in stderr

    rows = _summary(out)
    assert {k: r["status"] for k, r in rows.items()} == {"LUNG1-001": "ok", "example_ct": "ok", "broken": "failed"}
    assert "not a readable zip" in rows["broken"]["reason"] and "\n" not in rows["broken"]["reason"]
    assert "broken: failed: broken.zip: not a readable zip" in stdout
    assert "2 ok (0 already done, skipped), 1 failed" in stdout
    assert "cases: 100%" in stderr  # the progress bar
    for name, mtime in before.items():  # finished before the kill: kept as it was, not redone
        assert (out / name / "result.json").stat().st_mtime_ns == mtime
    results = {n: json.loads((out / n / "result.json").read_text()) for n in ("LUNG1-001", "example_ct")}
    assert results[killed_case]["worker_pid"] != killed_pid  # the interrupted case was done again elsewhere
    assert all(r["model_loads_in_worker"] == 1 and r["model_version"].startswith("tiny-test-") for r in results.values())
    assert not list(out.glob(".*tmp")) and not (out / ".running").exists()

    # LUNG1-001's tight lungs against the planning contours (Lung L 2222 ml, Lung R 2957 ml)
    lung = rows["LUNG1-001"]
    assert abs(float(lung["lung_left_ml"]) - 2222) < 0.1 * 2222
    assert abs(float(lung["lung_right_ml"]) - 2957) < 0.1 * 2957
    assert lung["lesion_count"] == "0" and float(lung["seconds"]) > 0
    mask = sitk.ReadImage(str(out / "LUNG1-001" / "lungs.nii.gz"))
    assert mask.GetSize() == (512, 512, 134)  # on the input's own grid
    example = sitk.ReadImage(str(out / "example_ct" / "tumour.nii.gz"))
    assert example.GetSize() == (122, 101, 112)


def test_second_run_skips_the_finished_cases(cohort):
    out = cohort["out"]
    if not (out / "summary.csv").exists():
        pytest.skip("the first run did not complete")
    before = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/result.json")}
    assert set(before) == {"LUNG1-001", "example_ct"}
    run = subprocess.run(cohort["argv"], cwd=REPO, env=cohort["env"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr[-2000:]
    assert "2 ok (2 already done, skipped), 1 failed" in run.stdout
    rows = _summary(out)
    assert [rows[n]["resumed"] for n in ("LUNG1-001", "example_ct", "broken")] == ["yes", "yes", "no"]
    assert rows["broken"]["status"] == "failed"
    assert {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/result.json")} == before


def test_a_case_already_done_is_skipped_by_content_when_its_file_changed(data_dir, tiny_model, tmp_path):
    """Resuming is by content hash and model version: a finished case whose file was touched (new
    modification time, same voxels) is recognised without running the model; another model runs it again."""
    import shutil

    from lungseg.cohort import CohortCase, process_case

    out = tmp_path / "out"
    src = tmp_path / "example_ct.nii.gz"
    shutil.copyfile(data_dir / "totalsegmentator-example" / "example_ct.nii.gz", src)
    case = CohortCase("example_ct", str(src))
    first = process_case(case, str(out), str(tiny_model))
    assert first["status"] == "ok" and first["resumed"] == "no"
    os.utime(src, ns=(1, 1))  # same content, another modification time: the cheap identity differs
    again = process_case(case, str(out), str(tiny_model))
    assert again["resumed"] == "yes" and again["content_hash"] == first["content_hash"]
    other = tmp_path / "other.pt"
    payload = __import__("torch").load(tiny_model, weights_only=True)
    payload["meta"]["version"] = "other"
    __import__("torch").save(payload, other)
    third = process_case(case, str(out), str(other))
    assert third["resumed"] == "no" and third["model_version"].startswith("other-other-")


def test_batch_on_an_existing_scheduler_and_a_model_the_workers_cannot_load(data_dir, tiny_model, tmp_path, capsys):
    """``--scheduler ADDRESS`` runs the same code on a cluster that was already there (here a local one
    standing in for it); a model the workers cannot load stops the run with one line before any case."""
    import logging

    from distributed import LocalCluster

    from lungseg.cli import main

    small = str(data_dir / "totalsegmentator-example" / "example_ct_sm.nii.gz")
    bad = tmp_path / "bad.pt"
    bad.write_text("not a model")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0",
                      silence_logs=logging.CRITICAL) as cluster:
        address = cluster.scheduler_address
        assert main(["batch", small, "--out", str(tmp_path / "bad"), "--scheduler", address, "--model", str(bad),
                     "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == "error: the workers cannot load the model: bad.pt: not a lungseg model (UnpicklingError)"
        assert main(["batch", small, str(tmp_path / "missing.zip"), "--out", str(tmp_path / "out"),
                     "--scheduler", address, "--model", str(tiny_model), "--quiet", "--allow-failures"]) == 0
    said = capsys.readouterr().out
    assert f"on the Dask scheduler at {address}" in said and "1 ok (0 already done, skipped), 1 failed" in said
    rows = _summary(tmp_path / "out")
    assert rows["example_ct_sm"]["status"] == "ok" and rows["missing"]["status"] == "failed"
    assert "does not exist" in rows["missing"]["reason"]
