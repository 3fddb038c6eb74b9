"""Pure modelling: fit, evaluate, explain, the scoring core, ranks, lists, drift and realised
outcomes. Frames in, frames out: no MLflow, no files written."""
