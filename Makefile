# Two front doors: `make demo` (set up + run the demo city) and `make test` (set up + run every test).
# Setup is a pinned uv in .tools/ that installs the locked dependencies into .venv/.
PY ?= python3
UV := .tools/bin/uv
VENV := .venv
STAMP := $(VENV)/.synced
PYTEST_WORKERS ?= 2

.PHONY: setup demo test lint bench bench-ingest clean

$(UV):
	$(PY) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==0.13.9

$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --compile-bytecode --python $(PY)
	$(VENV)/bin/python -m compileall -q src  # bytecode even where PYTHONDONTWRITEBYTECODE is set: CLI start-up
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cityward demo $(ARGS)

test: $(STAMP)
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadgroup $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(VENV)/bin/python bench/import_devices.py $(ARGS)

bench-ingest: $(STAMP)
	$(VENV)/bin/python bench/ingest_state.py $(ARGS)

clean:
	rm -rf $(VENV) .tools .pytest_cache
