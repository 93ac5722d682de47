"""The sharing stage: adapters coming in from anywhere (a run, a folder, a zip, a Hub id), checked
against the base, and going out (an adapter zip, a merged model, a model card)."""
