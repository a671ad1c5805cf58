# The commands a newcomer needs; see README.md.
.PHONY: test lint render up down clean

PHASE ?= 3

# Lint, type-check and run every test tier that needs no cluster (e2e is opt-in: pytest -m e2e).
test: lint
	uv run --frozen pytest

lint:
	uv sync --frozen
	uv run --frozen ruff check .
	uv run --frozen ruff format --check .
	uv run --frozen mypy

# Render every stack's manifests to build/<stack>/.
render:
	for stack in $$(ls stacks | sed -n 's/^Pulumi\.\(.*\)\.yaml$$/\1/p'); do uv run --frozen scaleladder render $$stack; done

# The local kind flow (docs/local.md): cluster, cluster layer, image, one phase; and back down.
up:
	uv run --frozen scaleladder-local up --phase $(PHASE)

down:
	uv run --frozen scaleladder-local down

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
