"""Load tests (Locust scenarios, SLO gate, step load) and the HTTP ceiling benchmark (wrk)."""
