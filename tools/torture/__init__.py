"""Torture campaigns for bsrnn: prove that interruptions, damage and bad input lose nothing.

``python tools/torture.py CAMPAIGN --trials N --seed S`` (or ``all``); see ``torture.cli``
and RELIABILITY.md for the campaigns, what each checks, and the results of the runs made.
"""
