"""What a variant's model card says about its results: the proof's headline and verdict, and its
eval sets' pass rates against the base.

Read from the run folder through the readers that write them (`RunFolder.report`, the report's
`headlines`, `matrix.evalset_results` and the report's `evalset_lines`), as plain lines that
`adapters.share.export.model_card` lists. This module measures nothing and writes no file.
"""

from __future__ import annotations

from pathlib import Path

from adapters.train.runfolder import BASE_COLUMN, RunFolder

from .matrix import evalset_results
from .report import evalset_lines, headlines


def card_results(variant_dir: str | Path) -> list[str]:
    """The result lines of the variant in `variant_dir` (RUN/VARIANT): its proof verdict when the
    run has a report, then one line per finished eval set; [] for an outside adapter or no results."""
    folder = Path(variant_dir)
    run = RunFolder.read(folder.parent)
    if run is None:
        return []
    name = folder.name
    report = run.report()
    lines = [f"proof: {line}" for line, v in zip(headlines(report), report.get("variants", []))
             if v.get("name") == name] if report.get("variants") else []
    sets = [{**es, "columns": [c for c in es["columns"] if c["name"] in (BASE_COLUMN, name)]}
            for es in evalset_results(run.path)]
    return lines + evalset_lines({"evalsets": sets})
