"""The shaping stage: the 2-D equalizer and its presets, the data-suggested grid, the live
equalizer on a trained adapter, variants and their hyperparameters (declared once). Nothing here
trains; it imports only the base and data stages."""
