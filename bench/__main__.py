"""``python -m bench``: the speed benchmark (bench/bench_speed.py, with its arguments), then the FLUX-shaped row
(bench/bench_dit.py, its defaults), then the OpenVINO rows (bench/openvino_bench.py, its defaults).
``python -m bench dit [args]`` runs only the FLUX-shaped one, ``python -m bench openvino [args]`` only the OpenVINO
one."""

import sys

from bench import bench_dit, openvino_bench
from bench.bench_speed import main

if sys.argv[1:2] == ["dit"]:
    bench_dit.main(sys.argv[2:])
elif sys.argv[1:2] == ["openvino"]:
    openvino_bench.main(sys.argv[2:])
else:
    main()
    bench_dit.main([])
    openvino_bench.main([])
