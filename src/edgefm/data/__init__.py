"""Data: loading text-classification sets, partitioning them over devices, batching."""
