# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
UV := $(PYTHON) -m uv
STAMP := $(VENV)/.installed

.PHONY: install install-gpu gpu-check demo test test-fast bench lint typecheck figures clean

install: $(STAMP)

# compat editable mode puts the checkout on sys.path, so new modules need no reinstall.
# Re-syncs only when a lock file or pyproject changes, so a second run starts at once.
# --compile-bytecode: where PYTHONDONTWRITEBYTECODE is set (as in some sandboxes and CI
# images) nothing would cache .pyc files, and every process (each trainer, each CLI call)
# would compile JAX, SciPy and pandas from source again: 7.7 s -> 2.1 s of imports here.
$(STAMP): requirements.lock requirements-dev.lock pyproject.toml
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	@test -x $(VPY) || $(UV) venv --quiet --python $(PYTHON) $(VENV)
	$(UV) pip sync --quiet --compile-bytecode --python $(VPY) requirements.lock requirements-dev.lock
	$(UV) pip install --quiet --python $(VPY) --no-deps --config-setting editable_mode=compat -e .
	@touch $(STAMP)

# GPU machines: the same venv synced from requirements-cuda.lock (the `cuda` extra, jax[cuda12],
# hash-pinned) instead of requirements.lock; `make install` afterwards goes back to CPU-only
# jax only when a lock changes.
install-gpu: requirements-cuda.lock requirements-dev.lock pyproject.toml
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	@test -x $(VPY) || $(UV) venv --quiet --python $(PYTHON) $(VENV)
	$(UV) pip sync --quiet --compile-bytecode --python $(VPY) requirements-cuda.lock requirements-dev.lock
	$(UV) pip install --quiet --python $(VPY) --no-deps --config-setting editable_mode=compat -e .
	@touch $(STAMP)

# Everything a GPU machine needs checked (throughput/MFU at 124M and 350M, a tiny sweep end to
# end); appends its table to BENCHMARKS.md. Exits 2 without an accelerator.
gpu-check:
	@test -x $(VPY) || $(MAKE) install-gpu
	$(VPY) bench/gpu_check.py

demo: $(STAMP)
	$(VENV)/bin/scaling demo

test: $(STAMP)
	$(VPY) -m pytest -n 2 --dist loadfile -q

test-fast: $(STAMP)
	$(VPY) -m pytest -n 2 --dist loadfile -q -m "not slow and not slurm"

bench: $(STAMP)
	$(VPY) bench/fit_speed.py
	$(VPY) bench/train_throughput.py

# The README's pictures are the demo's own report figures (the demo writes them last; a
# finished demo reruns without training anything).
figures: $(STAMP)
	$(MAKE) demo
	mkdir -p docs
	cp runs/demo/report/figures/isoflop.png docs/demo_isoflop.png
	cp runs/demo/report/figures/frontier.png docs/demo_frontier.png
	cp runs/demo/report/figures/rollout.png docs/demo_rollout.png

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The four packages, as configured under [tool.mypy] in pyproject.toml.
typecheck: $(STAMP)
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache
