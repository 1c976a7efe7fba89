//! Affine registration: centre-of-mass / principal-axes initialization, rigid → affine stages, multi-resolution.
