"""HTTP endpoints, one module per resource; each exposes ROUTES."""
