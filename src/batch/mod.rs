//! Batch executors for template and normative-database builds: local worker pool and Slurm job arrays.
