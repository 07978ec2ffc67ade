# Every target creates or reuses the virtualenv itself: `make demo` and `make test` on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ACDA := $(BIN)/acda
INSTALLED := $(VENV)/.installed

.DEFAULT_GOAL := demo
.PHONY: venv demo toy-ablation train-denoise test test-slow test-gpu bench report figures clean

$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

venv: $(INSTALLED)

## The toy pattern-detection study (paper Sec. 3.3, Fig. 6): reports/toy/
demo: $(INSTALLED)
	$(ACDA) fit -c tasks/toy/conv.yaml
	$(ACDA) fit -c tasks/toy/acda.yaml
	$(ACDA) report

## Generator and basis ablations of the toy study (the layer's defaults were chosen from these)
toy-ablation: $(INSTALLED)
	$(ACDA) fit -c tasks/toy/acda_release.yaml
	$(ACDA) fit -c tasks/toy/acda_no_bases.yaml
	$(ACDA) report

## Real-world denoising on SIDD (paper Sec. 4.3, Table 5): reports/sidd_*/ and reports/denoise/.
## DATA_DIR holds SIDD/; DENOISE_ARGS adds overrides (README: a CPU run on the synthetic set).
DATA_DIR ?= data
DENOISE_ARGS ?=
train-denoise: $(INSTALLED)
	for run in baseline_mse acda_mse acda_vdnet; do \
		$(ACDA) fit -c tasks/denoise/sidd_$$run.yaml --data.root $(DATA_DIR)/SIDD \
			--data.cache_dir $(DATA_DIR)/SIDD/cache $(DENOISE_ARGS) || exit 1; \
	done
	$(ACDA) report

test: $(INSTALLED)
	$(BIN)/python -m pytest

test-slow: $(INSTALLED)
	$(BIN)/python -m pytest -m slow

test-gpu: $(INSTALLED)
	$(BIN)/python -m pytest -m gpu

bench: $(INSTALLED)
	$(ACDA) bench layer

report: $(INSTALLED)
	$(ACDA) report

figures: $(INSTALLED)
	$(ACDA) figures bases --out reports/figures/bases.png

clean:
	rm -rf runs reports/*/ $(VENV)
