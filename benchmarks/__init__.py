"""Speed and noise measurements of the harness itself (results in benchmarks/README.md)."""
