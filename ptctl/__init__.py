"""ptctl: SLO-aware elastic prompt tuning on Slurm."""

__version__ = "0.1.0"
