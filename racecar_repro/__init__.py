"""racecar_repro: the reproduction harness of "Reviving Autoencoder Pretraining" beside the method library
``racecar_core``: experiments with their profiles, the run cache and executors, data sets and downloads, the
notebook runner, plots, provenance, verdicts and the report. It imports ``racecar_core``, never the other way round."""
