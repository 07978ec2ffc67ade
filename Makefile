# Every target creates or reuses the virtualenv itself: `make demo` and `make test` on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ACDA := $(BIN)/acda
INSTALLED := $(VENV)/.installed

.DEFAULT_GOAL := demo
.PHONY: venv demo toy-ablation train-cls test test-slow test-gpu bench report figures clean

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

## Classification (paper Sec. 4.1, Tables 1-2): one run of tasks/classification/$(CONFIG).yaml (fit, then
## test), then the study report. `make train-cls CONFIG=imagenet_ad_resnet_s DATA_DIR=/datasets`; DATA_DIR
## holds CIFAR/ (cifar-10-batches-py/, cifar-100-python/) and ImageNet/ (train/, val/).
train-cls: CONFIG ?= cifar10_lenet_acda
train-cls: DATA_DIR ?= data
train-cls: $(INSTALLED)
	$(ACDA) fit -c tasks/classification/$(CONFIG).yaml \
		--data.root $(DATA_DIR)/$(if $(findstring imagenet,$(CONFIG)),ImageNet,CIFAR)
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
