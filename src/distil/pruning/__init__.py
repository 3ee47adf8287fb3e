"""HomoDistil's structured pruning, on the per-family layouts of `distil.models.families`.

units.py: the prunable units of a model (coupled rows and columns); state.py: their masks and scores;
platon.py: PLATON's importance and the pruning schedule; slicing.py: narrowing a model in place, or
slicing a copy to the kept widths.
"""
