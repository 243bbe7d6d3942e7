"""The federated runtime: the Strategy protocol, aggregation, the ledger, the engines."""
