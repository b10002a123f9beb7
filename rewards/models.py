"""The points ledger, earning rules, certifications, badges and rewards (filled by later work)."""
