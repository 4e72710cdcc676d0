//! Profiles: which call each CPU sample was taken in.
//!
//! - `labels`: the call's label on the worker thread while a profile runs.

pub mod labels;
