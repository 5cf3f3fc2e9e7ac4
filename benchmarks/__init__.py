"""Benchmarks of pdt-compile: each script prints a table and writes it to RESULTS.md."""
