"""steuops: remove a diagnosis class from a deployed clinical text classifier.

Importing this package is cheap: torch, transformers, mlflow and friends are imported
only inside the modules that need them.
"""

__version__ = "0.1.0"
