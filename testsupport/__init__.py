"""Test support shared by every test tier: real servers on loopback, started and stopped by fixtures."""
