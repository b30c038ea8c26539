# `make demo` and `make test` set themselves up from nothing: a .venv with requirements.txt.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast benchmark clean docs

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m nlg.demo

test: $(STAMP) chromium
	$(PY) -m pytest -q

# `make test-fast` is the inner loop (about 90 s on 2 cores): every test not marked slow, browser, notebook, docs or
# statistical (markers in pyproject.toml); `make test` runs everything.
FAST := not slow and not browser and not notebook and not docs and not statistical
test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m "$(FAST)"

# `make app` serves the web demo (digits model, CPU) on http://127.0.0.1:7860; `make app MODEL=shapes` serves the
# embedded text-to-image model; `make app MODEL=path/or/hub-id` serves a Stable Diffusion pipeline;
# APP_ARGS="--port 8000" passes more options.
.PHONY: app chromium
app: $(STAMP)
	$(PY) -m nlg.app $(if $(MODEL),--model $(MODEL)) $(APP_ARGS)

# The browser test drives Debian's chromium; install it where apt can (CI runs as root), else it is skipped.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  (command -v apt-get >/dev/null 2>&1 && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) || \
	  echo "chromium is not installed: the browser test will be skipped"

benchmark: $(STAMP)
	$(PY) -m benchmarks.refine_overhead

# `make docs` builds the documentation site strictly (every warning is an error) into docs/_build/html.
docs: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m sphinx -b html -E -a -n -W --keep-going docs docs/_build/html

clean:
	rm -rf $(VENV) build dist *.egg-info

# `make dist` builds the sdist and the wheel of the `noise-level-guidance` distribution (import name `nlg`) into
# dist/, from the venv's own setuptools (no download), and checks them with twine.
.PHONY: dist
dist: $(STAMP)
	rm -rf dist build
	$(PY) -m build --no-isolation --sdist --wheel --outdir dist .
	$(PY) -m twine check --strict dist/*
