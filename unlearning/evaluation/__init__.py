"""Measuring an erasure: the concept score the report nodes and the benchmark read (concept_score.py)."""
