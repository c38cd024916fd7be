"""Your own studies -> a training dataset (``echosonar dataset build``).

A dataset is an ingest clip cache (:mod:`echosonar.ingest.cache`, protocol ``end-to-end``) whose
studies carry the labels, measurements, report target and split read from a user's labels file,
plus ``dataset.json`` (counts and every problem found, by position, never by identifier).

>>> from echosonar.dataset import BuildInputs, build_dataset   # the API behind the command

Modules: :mod:`.labels` (labels file), :mod:`.reports` (report targets), :mod:`.views` and
:mod:`.study_views` (where a clip's view comes from), :mod:`.build` (the build),
:mod:`.problems` (what went wrong), :mod:`.cli` (the command). Walkthrough and file formats:
docs/TRAIN_YOUR_STUDIES.md.
"""

from echosonar.dataset.build import BuildInputs, build_dataset, split_of

__all__ = ["BuildInputs", "build_dataset", "split_of"]
