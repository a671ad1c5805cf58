# The commands a newcomer needs; see README.md.
.PHONY: test lint render clean

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

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
