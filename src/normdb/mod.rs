//! The HDF5 normative database: templates, voxelwise statistics, subjects and calibration.
