//! Shared plumbing of the workload programs.
