"""Cairn's Dagster code location: catalog-driven ingestion gated by blocking checks."""
