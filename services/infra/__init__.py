"""Infrastructure: settings, the bus, the consumer loop and its stores, the system of record, metrics, health,
embedded services and model backends. Knows no consumer (tests/test_import_contract.py)."""
