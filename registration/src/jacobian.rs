//! Jacobian determinant and log-Jacobian maps of displacement fields.
