"""Benchmarks of every stage against its ceiling: `radiogen bench` (ray_jobs/bench/run.py) runs them."""
