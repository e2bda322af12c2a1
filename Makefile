# Two entry points (README): `make demo` and `make test`. Both set up everything they need and
# are safe to run again: the venv is reinstalled only when pyproject.toml changes, and the
# vendored ComfyUI is only re-fetched when it does not verify against the pin.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= out/demo

.PHONY: demo test docs image image-test bench bench-api bench-devices bench-replicas vendor install clean

demo: vendor
	COMFY_LOG_LEVEL=$${COMFY_LOG_LEVEL:-WARNING} $(BIN)/python -m embedded run examples/image_ops.json \
		--image input.png=examples/input.png --out $(OUT)
	@echo "demo: outputs written to $(OUT)/"

test: vendor
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# the image with docker or podman (BASE_IMAGE=auto TORCH_INDEX_URL= where no registry is reachable),
# and the image tested as a user runs it: not in CI (minutes, gigabytes); see docs/runpod-worker.md
image:
	docker/image.sh build

image-test:
	docker/image.sh test

# the manual (docs/, mkdocs.yml) into site/, every warning an error
docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --quiet
	@echo "docs: built into site/"

$(VENV)/.docs-installed: pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	touch $@

bench: vendor
	$(BIN)/python bench/run.py

# the Comfy API v2 part alone, into the results already there
bench-api: vendor
	BENCH_ONLY=api_v2 $(BIN)/python bench/run.py

# several devices (COMFY_DEVICES=cpu,cpu here) against one executor alone, into the results already there
bench-devices: vendor
	BENCH_ONLY=devices $(BIN)/python bench/run.py

# replicas of the API v2 server on one PostgreSQL and one bucket (a second replica against one alone;
# the PostgreSQL state's dispatch against SQLite's) alone, into the results already there
bench-replicas: vendor
	BENCH_ONLY=replicas $(BIN)/python bench/run.py

# what bench/gpu.sh needs on the lent GPU machine (no network there), into .gpu-carry/: then call
# the device tool's run with command `bash bench/gpu.sh $OUT/bench`, carry [".gpu-carry/pack"]
.PHONY: gpu-pack
gpu-pack: vendor
	$(BIN)/python bench/gpu_pack.py

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
