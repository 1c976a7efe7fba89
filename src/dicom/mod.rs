//! DICOM series → volume: grouping, slice sorting, geometry (LPS → RAS), pixel decoding, metadata sidecar.
