"""Writes of the rewards app: the ledger, earning, check-ins and the periodic points jobs."""
