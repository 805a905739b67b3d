# One-command entry points. Each target sets up .venv itself on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
MODEL  ?= models/default
HOST   ?= 127.0.0.1
PORT   ?= 3000

.PHONY: install test test-slow lint model serve bench harden clean

# torch is pinned in the same pip command: 2.13.0 is the CPU build on this disk;
# an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0 -e ".[train,serve,dev]"
	touch $(STAMP)

install: $(STAMP)

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

lint: install
	$(BIN)/ruff check .

# Build the default model bundle from data/corpus (base model → train →
# calibrate → evaluate → export), unless it already exists.
model: install
	@if [ -f $(MODEL)/bundle.json ]; then echo "$(MODEL) exists; 'rm -r $(MODEL)' to rebuild"; \
	else $(BIN)/qorgan train --config training/configs/default.yaml --output $(MODEL); fi

serve: model
	QORGAN_BUNDLE=$(MODEL) $(BIN)/bentoml serve serving.service:Qorgan --host $(HOST) --port $(PORT)

bench: model
	$(BIN)/python -m benchmarks.run --bundle $(MODEL)

# Long hardening run on 127.0.0.1 (fuzzing, burst, soak): benchmarks/results/hardening.json.
harden: model
	$(BIN)/python -m benchmarks.hardening --bundle $(MODEL)

clean:
	rm -rf runs build *.egg-info .pytest_cache .ruff_cache
