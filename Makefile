# Every target creates or reuses the virtualenv itself: `make demo` and `make test` on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ACDA := $(BIN)/acda
INSTALLED := $(VENV)/.installed

.DEFAULT_GOAL := demo
.PHONY: venv demo toy-ablation train-sr train-denoise test test-slow test-gpu bench report figures clean

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

## Real-world SR (paper Sec. 4.3, Table 4): ACDA and its conv baseline on RealSR, reports/sr/.
## DATA_DIR holds RealSR_v1/ and RealSR_v3/ (official layout); without it, the synthetic stand-in is written.
SCALE ?= 4
VERSION ?= v3
DATA_DIR ?= data
SR_CONFIGS := realsr_$(VERSION)_x$(SCALE) $(if $(filter 4,$(SCALE)),realsr_$(VERSION)_x4_conv)
train-sr: $(INSTALLED)
	@test -d $(DATA_DIR)/RealSR_$(VERSION) || $(ACDA) data synth realsr --out $(DATA_DIR)
	$(foreach config,$(SR_CONFIGS),$(ACDA) fit -c tasks/sr/$(config).yaml --data.init_args.root $(DATA_DIR)/RealSR_$(VERSION) &&) true

## Real-world denoising on SIDD (paper Sec. 4.3, Table 5): reports/sidd_*/ and reports/denoise/.
## DATA_DIR holds SIDD/; DENOISE_ARGS adds overrides (README: a CPU run on the synthetic set).
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
