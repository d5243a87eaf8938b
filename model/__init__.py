"""LPGNet model, encoders, training and evaluation. Never imports `app`."""
