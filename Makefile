# Two entry points on a fresh machine: `make demo` and `make check`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed-stamp
# truss chains push runs ruff from PATH; every tool comes from the project's venv.
export PATH := $(BIN):$(PATH)

.PHONY: demo check lint typecheck test push-dryrun bench setup

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The mock answers after DEMO_LATENCY_MS, so that steps running in parallel visibly overlap.
DEMO_LATENCY_MS ?= 400

demo: $(STAMP)
	CHAINRUNNER_MOCK_LATENCY_MS=$(DEMO_LATENCY_MS) $(BIN)/chainrunner run \
		chains/specs/soundtrack.json --llm mock --input topic=friendship

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP)
	$(BIN)/pytest

push-dryrun: $(STAMP)
	@for chain in chains/*.py; do \
		echo "truss chains push --dryrun $$chain"; \
		$(BIN)/truss chains push --dryrun "$$chain" --non-interactive > /dev/null || exit 1; \
	done

check: lint typecheck test push-dryrun

bench: $(STAMP)
	$(BIN)/python -m benchmarks.engine; engine=$$?; \
	$(BIN)/python -m benchmarks.serve; serve=$$?; \
	$(BIN)/python -m benchmarks.startup; startup=$$?; \
	$(BIN)/python -m benchmarks.validate; validate=$$?; \
	$(BIN)/python -m benchmarks.flow; flow=$$?; \
	$(BIN)/python -m benchmarks.store; store=$$?; \
	$(BIN)/python -m benchmarks.service; service=$$?; \
	$(BIN)/python -m benchmarks.durability; durability=$$?; \
	exit $$((engine || serve || startup || validate || flow || store || service || durability))
