"""Thin, optional integrations. Each module imports its framework only when used."""
