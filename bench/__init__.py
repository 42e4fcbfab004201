"""Benchmarks, one module and one command each: `python -m bench.<name>`."""
