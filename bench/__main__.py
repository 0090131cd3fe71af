"""``python -m bench``: the speed benchmark (bench/bench_speed.py, with its arguments), then the FLUX-shaped row
(bench/bench_dit.py, its defaults). ``python -m bench dit [args]`` runs only the FLUX-shaped one."""

import sys

from bench import bench_dit
from bench.bench_speed import main

if sys.argv[1:2] == ["dit"]:
    bench_dit.main(sys.argv[2:])
else:
    main()
    bench_dit.main([])
