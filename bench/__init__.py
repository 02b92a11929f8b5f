"""Benchmark harness: powersync against ipmitool, FreeIPMI ipmipower and pyghmi on the same BMCs.

Run ``python -m bench --help``; the method and the results are in docs/benchmarks.md.
"""
