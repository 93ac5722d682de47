"""The files users hand over or take home, read and written within bounds: YAML (sweeps, eval
sets), CSV (every download), the users file. No model, no training here."""
