"""Store: DuckDB connections, snapshot publication, history, ledger, warehouse, CSV export."""
