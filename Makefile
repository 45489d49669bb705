# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test bench clean

# The CPU build of torch first, with pip, from this machine's disk (pip looks there; uv does not):
# a bare `torch` requirement would pull a multi-GB CUDA build. The rest with uv, which the installed
# torch satisfies: 24 s here where pip took 66 s (README, "Quick start"). Byte-compiled at install:
# this machine sets PYTHONDONTWRITEBYTECODE, so a module left uncompiled is compiled again by every
# process that imports it. Where uv cannot be had, pip installs the rest.
$(BIN)/unlearn: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q uv && $(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -e ".[test]" \
	  || $(BIN)/pip install -q -e ".[test]"
	touch $(BIN)/unlearn

install: $(BIN)/unlearn

demo: install
	$(BIN)/unlearn demo

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/methods.py

clean:
	rm -rf $(VENV) runs
