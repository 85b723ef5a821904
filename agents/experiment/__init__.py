"""Coordination experiments: conditions x seeds of real agent containers, and their reports.

`spec` reads and checks experiment files, `cell` runs one condition and seed, `runner` runs the
cells in parallel processes (resumable), `report` and `stats` write results.csv, summary.md
and learning_curves.png, `command` is `python -m agents experiment`.
"""
