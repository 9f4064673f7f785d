"""The functions behind ``Trainer.save``, ``Trainer.load``, ``Trainer.export_json`` and
``fit(plots=...)``.

Checkpoints belong to the io layer and plots to the viz layer, both above train:
``gometal.io`` provides the checkpoint functions when it is imported, and ``gometal``
provides the plots callback (loading ``gometal.viz`` on first use), so train never
imports them.
"""

from __future__ import annotations

from ..base.provided import ProvidedFunction

# save_checkpoint(session, path, metadata) writes everything needed to resume exactly.
save_checkpoint: ProvidedFunction = ProvidedFunction("Trainer.save", "gometal.io")
# load_checkpoint(path, allow_non_finite=...) rebuilds a trainer from a checkpoint.
load_checkpoint: ProvidedFunction = ProvidedFunction("Trainer.load", "gometal.io")
# export_json(session, path, description) writes go-metal's JSON checkpoint layout.
export_json: ProvidedFunction = ProvidedFunction("Trainer.export_json", "gometal.io")
# plots_callback(plots, plots_dir, validation) -> the callback fit(plots=...) appends
# (a gm.viz.Dashboard).
plots_callback: ProvidedFunction = ProvidedFunction("fit(plots=...)", "gometal")
