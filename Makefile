# Two entry points (README): `make demo` and `make test`. Both set up everything they need and
# are safe to run again: the venv is reinstalled only when pyproject.toml changes, and the
# vendored ComfyUI is only re-fetched when it does not verify against the pin.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= out/demo

.PHONY: demo test bench bench-api vendor install clean

demo: vendor
	COMFY_LOG_LEVEL=$${COMFY_LOG_LEVEL:-WARNING} $(BIN)/python -m embedded run examples/image_ops.json \
		--image input.png=examples/input.png --out $(OUT)
	@echo "demo: outputs written to $(OUT)/"

test: vendor
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: vendor
	$(BIN)/python bench/run.py

# the Comfy API v2 part alone, into the results already there
bench-api: vendor
	BENCH_ONLY=api_v2 $(BIN)/python bench/run.py

# bytecode written once here, as the image does: with PYTHONDONTWRITEBYTECODE set, every process
# would otherwise compile ComfyUI's ~430 modules again at each boot
vendor: install
	$(BIN)/python -m embedded.tooling.vendor
	$(BIN)/python -m compileall -q -j 0 vendor/ComfyUI embedded

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

clean:
	rm -rf work out .pytest_cache
