# Everything runs in a local virtual environment, created on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
QTOOL := $(VENV)/bin/qtool

.PHONY: install test lint demo bench matrix fuzz clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

test: install
	$(PY) -m pytest -q tests

lint: install
	$(VENV)/bin/ruff check qtool tests scripts examples

demo: install
	$(QTOOL) pipeline configs/demo.toml

bench: install
	$(PY) scripts/bench.py

matrix: install
	$(PY) scripts/accuracy_matrix.py

fuzz: install
	QTOOL_FUZZ_LONG=1 $(PY) -m pytest -q tests -k fuzz

clean:
	rm -rf $(VENV) out build *.egg-info
