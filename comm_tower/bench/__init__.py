"""Side-by-side benchmarks of the COMM tower, projector, training step and chat generation.

Run `python -m comm_tower.bench --sizes tiny,base --out bench.json`; every claim is a ratio of medians
measured in the same run with candidate and baseline repeats interleaved.
"""
