"""Speed, memory and fidelity benchmarks: each writes results/<name>.json and results/<name>.md."""
