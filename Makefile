# Every target uses its own virtual environment in .venv (created on first use).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test bench lint verify clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# the pinned CPU wheel first: an unpinned torch would pull a multi-GB CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m mei_core link-profiles
	touch $(STAMP)

demo: $(STAMP)
	$(SNAKEMAKE) --profile profiles/local
	$(SNAKEMAKE) --profile profiles/local --report results/report.html
	@echo "Results in results/: scores.parquet, validation.parquet, traces.parquet, <ensemble>.zarr, report.html"

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(PY) benchmarks/engine.py
	$(PY) benchmarks/pipeline.py
	$(PY) benchmarks/connectome.py

verify: $(STAMP)
	$(PY) -m mei_core verify --results results

lint: $(STAMP)
	$(SNAKEMAKE) --lint

clean:
	rm -rf results resources logs .snakemake
