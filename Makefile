# Every target bootstraps its own .venv, so a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# PyTorch is not a dependency; when it installs, the PyTorch parity tests run
# (they skip otherwise). `make test TORCH=` leaves it out.
TORCH ?= torch==2.13.0
# Real clients, code others wrote, for the optional tests and bench parts (they skip without it):
# mlx-audio's decoders and NVIDIA's BigVGAN. Their own dependencies are large, so they install
# without them, plus the few their modules import. `make test CLIENTS=` leaves them out.
CLIENTS ?= mlx-audio==0.6.2 bigvgan==2.4.1
CLIENT_DEPS := huggingface_hub pyyaml scipy tokenizers typing_extensions tqdm
# The default install brings scipy-openblas32 on Linux x86-64; `make BLAS_EXTRA=mkl` adds Intel MKL
# (about 1 GB; used on Intel CPUs only, docs/blas.md). Empty by default, so the figures are the default's.
BLAS_EXTRA ?=
comma := ,
EXTRA_BLAS := $(if $(BLAS_EXTRA),$(comma)$(BLAS_EXTRA))

.PHONY: demo test bench check clean

$(VENV)/.base: pyproject.toml
	@echo "make: creating $(VENV) and installing mlx-deconv (editable) with mlx, numpy, matplotlib (examples) and, on Linux x86-64, scipy-openblas32"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[examples$(EXTRA_BLAS)]"
	touch $@

$(VENV)/.test: $(VENV)/.base
	@echo "make: installing the test extra (pytest, hypothesis) into $(VENV)"
	$(PY) -m pip install --quiet -e ".[test,examples$(EXTRA_BLAS)]"
	@if [ -n "$(TORCH)" ]; then echo "make: installing $(TORCH) for the PyTorch parity tests (optional; a large download on Linux; skip it with: make test TORCH=)"; else echo "make: TORCH is empty: PyTorch not installed, its parity tests will skip"; fi
	if [ -n "$(TORCH)" ]; then $(PY) -m pip install --quiet "$(TORCH)" || echo "$(TORCH) not installed: PyTorch parity tests will skip"; fi
	if [ -n "$(CLIENTS)" ]; then $(PY) -m pip install --quiet --no-deps $(CLIENTS) && $(PY) -m pip install --quiet $(CLIENT_DEPS) || echo "$(CLIENTS) not installed: their tests will skip"; fi
	touch $@

# The main job: device info, a checked upsampling stack, then the vocoder example
# (trains briefly, writes out/vocoder/vocoded.wav and spectrograms.png, streams).
demo: $(VENV)/.base
	$(PY) -m mlx_deconv info
	$(PY) -m mlx_deconv demo
	$(PY) examples/vocoder.py --out out/vocoder

test: $(VENV)/.test
	$(PY) -m pytest -q

bench: $(VENV)/.base
	$(PY) -m mlx_deconv bench

check: $(VENV)/.base
	$(PY) -m mlx_deconv check

clean:
	rm -rf $(VENV) build *.egg-info
