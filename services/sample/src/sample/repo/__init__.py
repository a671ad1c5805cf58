"""SQL for each aggregate; every statement here is served by an index in migrations.py."""
