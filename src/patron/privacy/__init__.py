"""Personal-information rights (PIPL): data-subject requests (a copy of everything Patron holds
about a person, correction, deletion) with deadlines, erasure that anonymises a person while
keeping order amounts, ledgers and reports intact, the retention job, and the person-level
consent ledger (opting out of personalised marketing based on automated scoring)."""
