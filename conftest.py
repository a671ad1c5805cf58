"""Shared fixtures for every test directory (tests/ and services/sample/tests/)."""
