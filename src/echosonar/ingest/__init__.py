"""Ingest: DICOM/MP4/AVI files to de-identified, view-labelled, preprocessed clip tensors."""
