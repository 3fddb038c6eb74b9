"""The simulator of a retail book and its summary: demo data and the truth behind it."""
