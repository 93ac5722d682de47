"""`loraeq`: the headless face of every stage, one module per stage.

`main.py` wires the subcommands together (and is what `loraeq` and `python -m loraeq` run);
`common.py` holds what the stages share (tables, progress bars, --json output, flags); `analyze.py`,
`data.py`, `suggest.py`, `train.py`, `compare.py`, `proof.py` and `export.py` each parse one
stage's flags into library calls. This file imports nothing, so a stage module never loads the
wiring. It sits above `adapters` and `evals` and imports both; neither imports it.
"""
