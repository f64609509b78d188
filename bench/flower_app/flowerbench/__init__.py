"""Flower app for bench/flower_compare.py (same workload as bench/projects/trivial)."""
