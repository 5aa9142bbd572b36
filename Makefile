# Quick start: `make demo` runs the study (--quick) on embedded data; `make test` runs the tests.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test bench scaling lint mutate clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,ray]'
	touch $(STAMP)

# Keys go to demo-secrets/ (owner-only), apart from the run folder demo-run/; a rerun resumes.
demo: $(STAMP)
	$(VENV)/bin/medveil study --quick -o demo-run --keys demo-secrets

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

# Quick benchmarks on the embedded synthetic data, at the settings of docs/BENCHMARKS.md: rendering
# speed, then the batched transform against the naive loop and end-to-end obfuscate (the RSS runs
# on 2k and 20k files, which take minutes, are left out). Numbers need a quiet machine.
bench: $(STAMP)
	$(VENV)/bin/python benchmarks/synthetic_throughput.py
	$(VENV)/bin/python benchmarks/obfuscation_throughput.py --images 1024 --rss ''

# The scaling table of docs/BENCHMARKS.md (needs a dataset folder: DATASET=...; minutes, a quiet
# machine): obfuscation with the local and Ray engines at 1 and 2 workers, training on 1 and 2
# processes under torchrun, then both as one table.
DATASET ?= ../shared/datasets/brain-tumor-mri/Training
scaling: $(STAMP)
	$(VENV)/bin/python benchmarks/obfuscation_throughput.py --dataset $(DATASET) --images 1024 \
		--cli-images 3000 --engines local,ray --rss 2000,20000 \
		--json benchmarks/results/obfuscation_throughput-cpu.json
	$(VENV)/bin/python benchmarks/ddp_scaling.py --json benchmarks/results/ddp_scaling-cpu.json
	$(VENV)/bin/python benchmarks/scaling_table.py

# Curated mutation check (docs/TESTING.md): slow (about 6 minutes on 2 cores), not run in CI.
mutate: $(STAMP)
	nice -n 10 $(VENV)/bin/python scripts/mutate.py

lint: $(STAMP)
	$(VENV)/bin/python -m pip install -q ruff && $(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf demo-run .pytest_cache .hypothesis
