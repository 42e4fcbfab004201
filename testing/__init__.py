"""Test support, never imported by product code: `support` (factories, helpers; needs Django set
up), `live_server` (real server processes for end-to-end tests and benchmarks; does not) and
`e2e` (a client of such a server: accounts, conversations, websocket frames; does not either)."""
