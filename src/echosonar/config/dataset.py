"""Dataset config (owned by the ``dataset`` stage): how ``echosonar dataset build`` turns a
folder of a user's studies and a labels file into a clip cache the trainers read."""

from __future__ import annotations

from dataclasses import dataclass

from echosonar.config.base import opt


@dataclass
class DatasetConfig:
    """Settings of ``echosonar dataset build`` (the command line's options override them)."""

    id_from: str = opt("folder", "what identifies a study: 'folder' (each sub-folder of the "
                       "input folder is one study, its name the identifier) or 'uid' (DICOMs "
                       "grouped by StudyInstanceUID, which the labels file then holds)")
    id_column: str = opt("", "labels-file column with the study identifier ('' = the first of "
                         "study, study_id, id, StudyInstanceUID, accession)")
    list_separator: str = opt(";", "separator inside a 'findings' list cell ('healthy' or an "
                              "empty cell = no finding)")
    split_fractions: list[float] = opt([0.7, 0.15, 0.15], "train/val/test fractions for studies "
                                       "whose split the labels file does not give; each study's "
                                       "split is a pure function of its salted key")
    min_split_studies: int = opt(1, "warn (in the summary) when the val or test split has fewer "
                                 "studies than this")
