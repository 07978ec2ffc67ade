# Every target creates or reuses the virtualenv itself: `make demo` and `make test` on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ACDA := $(BIN)/acda
INSTALLED := $(VENV)/.installed
# The dataset root of every train-* target (layouts: data/README.md).
DATA_DIR ?= data

.DEFAULT_GOAL := demo
.PHONY: venv demo toy-ablation test test-slow test-gpu gpu-check study-depthwise report figures clean train train-crowd bench train-sr train-classification train-cls train-denoise

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

## Any one experiment: `make train TASK=crowd CONFIG=sha_ad_resnet_s ARGS="--data.root /datasets/ShanghaiTech"`
## fits tasks/$(TASK)/$(CONFIG).yaml (then tests it), then rebuilds the study reports. The config's own data
## root applies unless ARGS sets --data.root; ARGS adds any CLI override (a budget: --trainer.max_epochs 5).
REPORTS ?= reports
ARGS ?=
train: $(INSTALLED)
	@test -n "$(TASK)" -a -n "$(CONFIG)" || { echo "usage: make train TASK=<folder of tasks/> CONFIG=<yaml name> [ARGS=...]"; exit 2; }
	@test -f tasks/$(TASK)/$(CONFIG).yaml || { echo "no config tasks/$(TASK)/$(CONFIG).yaml"; exit 2; }
	$(ACDA) fit -c tasks/$(TASK)/$(CONFIG).yaml --report.root $(REPORTS) $(ARGS)
	$(ACDA) report --root $(REPORTS)

## Crowd counting (paper Sec. 4.2, Table 3): fit (then test the best-MAE checkpoint), then the reports.
## CROWD_DATA=sha|shb|qnrf, CROWD_MODEL=ad_resnet_s|ad_resnet_m|baseline; DATA_DIR holds ShanghaiTech/ and
## UCF-QNRF_ECCV18/ (`acda data synth crowd --out DIR` writes small ones); CROWD_ARGS adds CLI overrides.
CROWD_DATA ?= sha
CROWD_MODEL ?= ad_resnet_s
CROWD_ARGS ?=
CROWD_ROOT = $(DATA_DIR)/$(if $(filter qnrf,$(CROWD_DATA)),UCF-QNRF_ECCV18,ShanghaiTech)
train-crowd: $(INSTALLED)
	$(ACDA) fit -c tasks/crowd/$(CROWD_DATA)_$(CROWD_MODEL).yaml --data.root $(CROWD_ROOT) --report.root $(REPORTS) $(CROWD_ARGS)
	$(ACDA) report --root $(REPORTS)

## Real-world SR (paper Sec. 4.3, Table 4): ACDA and its conv baseline on RealSR, reports/sr/.
## DATA_DIR holds RealSR_v1/ and RealSR_v3/ (official layout); without it, the synthetic stand-in is written.
## Runs every tasks/sr config of that scale and version (the conv baseline where one exists); SR_ARGS adds overrides.
SCALE ?= 4
VERSION ?= v3
SR_ARGS ?=
SR_CONFIGS = $(basename $(notdir $(wildcard tasks/sr/realsr_$(VERSION)_x$(SCALE).yaml tasks/sr/realsr_$(VERSION)_x$(SCALE)_conv.yaml)))
train-sr: $(INSTALLED)
	@test -n "$(SR_CONFIGS)" || { echo "no config tasks/sr/realsr_$(VERSION)_x$(SCALE).yaml"; exit 2; }
	@test -d $(DATA_DIR)/RealSR_$(VERSION) || $(ACDA) data synth realsr --out $(DATA_DIR)
	$(foreach config,$(SR_CONFIGS),$(ACDA) fit -c tasks/sr/$(config).yaml --data.root $(DATA_DIR)/RealSR_$(VERSION) --report.root $(REPORTS) $(SR_ARGS) &&) true
	$(ACDA) report --root $(REPORTS)

## Classification (paper Sec. 4.1, Tables 1-2): one run of tasks/classification/$(CONFIG).yaml (fit, then
## test), then the study report. `make train-classification CONFIG=imagenet_ad_resnet_s DATA_DIR=/datasets`
## (train-cls is the same target); DATA_DIR
## holds CIFAR/ (cifar-10-batches-py/, cifar-100-python/) and ImageNet/ (train/, val/); CLS_ARGS adds overrides.
CLS_ARGS ?=
train-classification: CONFIG ?= cifar10_lenet_acda
train-classification: $(INSTALLED)
	$(ACDA) fit -c tasks/classification/$(CONFIG).yaml \
		--data.root $(DATA_DIR)/$(if $(findstring imagenet,$(CONFIG)),ImageNet,CIFAR) --report.root $(REPORTS) $(CLS_ARGS)
	$(ACDA) report --root $(REPORTS)
train-cls: train-classification

## Real-world denoising on SIDD (paper Sec. 4.3, Table 5): reports/sidd_*/ and reports/denoise/.
## DATA_DIR holds SIDD/; DENOISE_ARGS adds overrides; DENOISE_NET sets the network's size for every run
## (e.g. "width: 32, blocks: 2"), each run keeping its own conv (README: a CPU run on the synthetic set).
DENOISE_ARGS ?=
DENOISE_NET ?=
comma := ,
DENOISE_RUNS := baseline_mse acda_mse acda_vdnet
train-denoise: $(INSTALLED)
	$(foreach run,$(DENOISE_RUNS),$(ACDA) fit -c tasks/denoise/sidd_$(run).yaml --data.root $(DATA_DIR)/SIDD \
		--data.cache_dir $(DATA_DIR)/SIDD/cache --report.root $(REPORTS) $(DENOISE_ARGS) \
		$(if $(DENOISE_NET),--model.net_kwargs "{conv: $(if $(filter baseline_%,$(run)),conv,acda)$(comma) $(DENOISE_NET)}") &&) true
	$(ACDA) report --root $(REPORTS)

test: $(INSTALLED)
	$(BIN)/python -m pytest

test-slow: $(INSTALLED)
	$(BIN)/python -m pytest -m slow

test-gpu: $(INSTALLED)
	$(BIN)/python -m pytest -m gpu

## Everything a GPU session validates, in one command (< 8 minutes on one GPU): gpu-check/<timestamp>/
## report.md and results.json. ARGS=--interpret runs the same sections on CPU under Triton's interpreter.
ARGS ?=
gpu-check: $(INSTALLED)
	$(BIN)/python -m acda_lightning.bench.gpu_check $(ARGS)

## Efficiency (paper Tables 6-7): ACDA vs nn.Conv2d time and memory ratios, FLOPs and parameters
bench: $(INSTALLED)
	$(ACDA) bench layer
	$(ACDA) bench table6
	$(ACDA) bench table7

## Depthwise ACDA vs depthwise conv in a ConvNeXt-style block (synthetic shapes; about 10 CPU minutes):
## reports/depthwise/, shown in reports/classification/report.md
study-depthwise: $(INSTALLED)
	$(BIN)/python -m acda_lightning.studies.depthwise --out $(REPORTS)/depthwise
	$(ACDA) report --root $(REPORTS)

report: $(INSTALLED)
	$(ACDA) report

figures: $(INSTALLED)
	$(ACDA) figures bases --out reports/figures/bases.png

clean:
	rm -rf runs reports/*/ $(VENV)
