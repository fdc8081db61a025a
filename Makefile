# lss_engine — the two commands of the README.
#   make demo : create .venv, install, run the main job on the embedded default
#   make test : create .venv, install with test extras, run the whole test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test install clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lss simulate --system alanine-dipeptide --temperature 450 --ns 0.2 \
	    --report-interval 1ps --features backbone-torsions,heavy-atom-distances \
	    --save-atoms heavy --seed 1 --out runs/demo-ala2.zarr --overwrite
	$(VENV)/bin/lss info runs/demo-ala2.zarr

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
