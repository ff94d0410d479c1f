"""The harnesses above the runtimes: evaluation, calibration of operating points, the benchmark and mask-aware
fine-tuning. They use the method, the exporter and the runtimes; only the CLIs import them."""
