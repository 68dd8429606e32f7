# The two set-up commands of the README: `make train` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: setup train test graphviz bench clean

$(BIN)/netlang: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,onnx,mpi]'
	touch $(BIN)/netlang

# Graphviz's `dot` program renders graphs; netlang still writes .dot files without it.
graphviz:
	@command -v dot >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -q && apt-get install -y -q graphviz) >/dev/null 2>&1 \
	      || echo "note: could not install graphviz; netlang render will write .dot files only"; \
	  else echo "note: install Graphviz (apt-get install graphviz) for netlang render"; fi; }

setup: $(BIN)/netlang graphviz

# A second `make train` continues (or, when finished, re-tests) the run in runs/mnist instead
# of being refused for a folder that already holds a run.
train: setup
	@if [ -f runs/mnist/last.ckpt ]; then $(BIN)/netlang train specs/mnist.net --resume; \
	else $(BIN)/netlang train specs/mnist.net; fi

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python tools/bench.py

clean:
	rm -rf $(VENV) build *.egg-info
