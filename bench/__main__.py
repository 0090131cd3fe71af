"""``python -m bench``: the speed benchmark (bench/bench_speed.py), with its arguments."""

from bench.bench_speed import main

main()
