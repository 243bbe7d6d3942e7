"""Run outputs a person reads: summary.json, PNG plots and one self-contained HTML page."""
