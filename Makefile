# Every target uses its own virtual environment in .venv (created on first use).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
STAMP := $(VENV)/.installed-stamp

# constraints.txt pins every package to the version the suite passed with: setup installs exactly
# those (pyproject.toml keeps ranges, for installs into other environments). `make constraints`
# re-resolves the newest versions pyproject allows in a scratch venv and rewrites the file; run
# `make test` after it and commit both.
CONSTRAINTS := constraints.txt
FRESH := .venv-constraints

.PHONY: setup demo test test-quality-default constraints bench lint verify clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# the pinned CPU wheel first: an unpinned torch would pull a multi-GB CUDA build
	$(PY) -m pip install --quiet torch==2.13.0 -c $(CONSTRAINTS)
	$(PY) -m pip install --quiet -e ".[test]" -c $(CONSTRAINTS)
	$(PY) -m mei_core link-profiles
	touch $(STAMP)

demo: $(STAMP)
	$(SNAKEMAKE) --profile profiles/local
	$(SNAKEMAKE) --profile profiles/local --report results/report.html
	@echo "Results in results/: scores.parquet, validation.parquet, traces.parquet, <ensemble>.zarr, report.html"

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

# the quality tests again on torch's slowest, most different CPU code path (benchmarks/README.md)
test-quality-default: $(STAMP)
	ATEN_CPU_CAPABILITY=default $(PY) -m pytest -q -p no:cacheprovider -m "quality and not slow"

constraints:
	rm -rf $(FRESH)
	$(PYTHON) -m venv $(FRESH)
	$(FRESH)/bin/python -m pip install --quiet --upgrade pip
	$(FRESH)/bin/python -m pip install --quiet torch==2.13.0
	$(FRESH)/bin/python -m pip install --quiet -e ".[test]"
	{ echo "# pip constraints: the versions the suite passed with (make constraints rewrites this file)"; \
	  $(FRESH)/bin/python -m pip freeze --exclude-editable | sed -e 's/^torch==\([0-9.]*\)+cpu$$/torch==\1/'; } > $(CONSTRAINTS)
	rm -rf $(FRESH)

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
