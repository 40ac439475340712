"""Training-side helpers around the LightningModule: who a run is (for loggers), what it logs."""
