# Two commands on a fresh machine:  make run   (demo app)   and   make test   (whole suite)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PORT   ?= 8501

.PHONY: setup run test screenshots chromium orthanc bench clean

$(STAMP): requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	@touch $(STAMP)

setup: $(STAMP)

chromium:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; }

.PHONY: dicom3tools
dicom3tools:  # dciodvfy, the DICOM validator tests/test_dciodvfy.py runs
	@command -v dciodvfy >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dicom3tools >/dev/null; }

# Orthanc with its DICOMweb plugin: the tests run a real PACS on a free localhost port
orthanc:
	@{ { command -v Orthanc || test -x /usr/sbin/Orthanc; } >/dev/null 2>&1 && \
		ls /usr/share/orthanc/plugins/libOrthancDicomWeb.so* /usr/lib/orthanc/libOrthancDicomWeb.so* 2>/dev/null | grep -q .; } || \
		{ $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq orthanc orthanc-dicomweb >/dev/null; }

run: setup
	$(BIN)/python -m streamlit run app.py --server.address=127.0.0.1 --server.port=$(PORT) --server.headless=true --browser.gatherUsageStats=false

test: setup chromium dicom3tools orthanc
	$(BIN)/python -m pytest -q -p no:cacheprovider

# the README's viewer screenshots (docs/viewer-*.png); `make test` writes its screenshots to a temporary folder
screenshots: setup chromium
	LUNGSEG_SCREENSHOTS=docs $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_browser_viewer.py

bench: setup chromium
	$(BIN)/python benchmarks/bench_lungs.py
	$(BIN)/python benchmarks/bench_segment.py
	$(BIN)/python benchmarks/bench_votes.py
	$(BIN)/python benchmarks/bench_viewer.py
	$(BIN)/python benchmarks/bench_batch.py
	$(BIN)/python benchmarks/bench_case_memory.py
	$(BIN)/python benchmarks/bench_lesion.py
	$(BIN)/python benchmarks/bench_viewer_click.py
	$(BIN)/python benchmarks/bench_edit.py

clean:
	rm -rf $(VENV) .pytest_cache
