//! Ingest of DICOM studies: de-identification (PS3.15 Annex E), national pseudonym, admission rules, study index.
