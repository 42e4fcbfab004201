"""Test support, never imported by product code: `support` (factories, helpers; needs Django set
up) and `live_server` (real server processes for end-to-end tests and benchmarks; does not)."""
