# The two commands a newcomer needs: `make run` and `make test`. Everything else is their plumbing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STATE_DIR ?= .state
# The official AWS Encryption CLI, for the interoperability tests only: it needs
# aws-encryption-sdk 3.x, the test environment carries 4.x, so it lives in a venv of its own.
ESDK_CLI := $(VENV)/esdk-cli/bin/aws-encryption-cli

.PHONY: install run test lint typecheck pytest bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: install
	$(BIN)/regiond dev --regions us-east-1,eu-west-1,ap-southeast-2 --state-dir $(STATE_DIR)

lint: install
	$(BIN)/ruff check regiond replication kmsclient tests benchmarks deploy

typecheck: install
	$(BIN)/mypy

# A private --basetemp: pytest prunes all but the newest three /tmp/pytest-of-<user>/pytest-N
# directories, so two suites running at once on one machine deleted each other's temp trees.
$(ESDK_CLI): | $(STAMP)
	$(BIN)/python -m venv $(VENV)/esdk-cli
	$(VENV)/esdk-cli/bin/python -m pip install --quiet 'aws-encryption-sdk-cli>=4.3,<5'

pytest: install $(ESDK_CLI)
	@tmp=$$(mktemp -d "$${TMPDIR:-/tmp}/regionkms-pytest.XXXXXX") && \
	$(BIN)/python -m pytest -q -p no:cacheprovider --basetemp="$$tmp/t" $(PYTEST_ARGS); \
	rc=$$?; rm -rf "$$tmp"; exit $$rc

test: lint typecheck pytest

bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
