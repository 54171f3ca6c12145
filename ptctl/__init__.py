"""ptctl: SLO-aware elastic prompt tuning on Slurm."""

__version__ = "0.1.0"
__all__ = ["PromptClassifier"]


def __getattr__(name: str):
    # `from ptctl import PromptClassifier` loads torch; `import ptctl` (the CLI) does not.
    if name == "PromptClassifier":
        from ptctl.tuning.predict import PromptClassifier

        return PromptClassifier
    raise AttributeError(f"module 'ptctl' has no attribute {name!r}")
