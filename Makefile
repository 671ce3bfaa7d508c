# Entry points of the toolkit. `make setup` once, then `make convert` and `make test`.
# Offline use: point OMZ_MIRROR and IMAGES_MIRROR at local copies laid out like the public sources.

PYTHON_SYSTEM ?= python3.11
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PRECISION ?= FP16
OMZ_MIRROR ?=
IMAGES_MIRROR ?=
LFW_DIR ?=
BUILD_DIR ?= build
REPORT_DIR ?= reports

MIRROR_ARGS := $(if $(OMZ_MIRROR),--omz-mirror $(OMZ_MIRROR)) $(if $(IMAGES_MIRROR),--images-mirror $(IMAGES_MIRROR))

export OMZ_MIRROR IMAGES_MIRROR LFW_DIR PRECISION

.PHONY: setup convert test validate lfw clean

setup:
	$(PYTHON_SYSTEM) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --no-deps -r requirements.lock
	$(PYTHON) -m pip install --quiet --no-deps --no-build-isolation -e .

convert:
	$(PYTHON) -m convert --precision $(PRECISION) --build-dir $(BUILD_DIR) $(MIRROR_ARGS)

test: convert
	$(PYTHON) -m pytest

validate:
	$(PYTHON) validate/validation.py --artifacts $(BUILD_DIR)/$(PRECISION) --precision $(PRECISION) $(MIRROR_ARGS) --report $(REPORT_DIR)/similarity

lfw:
	$(if $(LFW_DIR),,$(error set LFW_DIR to the folder that contains pairs.txt and lfw-deepfunneled/))
	$(PYTHON) validate/validation.py lfw --lfw-dir $(LFW_DIR) --artifacts $(BUILD_DIR)/$(PRECISION) --precision $(PRECISION) $(if $(OMZ_MIRROR),--omz-mirror $(OMZ_MIRROR)) --mistakes --report $(REPORT_DIR)/lfw

clean:
	rm -rf $(BUILD_DIR) $(REPORT_DIR)
