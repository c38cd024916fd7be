"""EchoSonar: multi-view reasoning over echocardiograms (EchoSonar-R).

Importing the package is cheap: stages import their heavy dependencies (torch, pydicom, av,
transformers) only when used.
"""

__version__ = "0.1.0"
