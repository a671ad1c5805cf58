"""scaleladder sample service: catalog, users and orders over Postgres and Redis."""
