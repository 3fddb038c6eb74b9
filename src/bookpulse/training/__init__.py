"""Training: training sets (features x labels over many months); fitting and the registry follow."""
