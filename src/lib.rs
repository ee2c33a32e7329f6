//! dnarun: neural architecture search by block-wise knowledge distillation (DNA), declared in a
//! TOML recipe and run on Burn.
//!
//! The pipeline: a [`recipe::Recipe`] (what the user wrote) is loaded and checked, then resolved
//! into a [`plan::Plan`] (what will run). [`run::run`] interprets the plan stage by stage: the
//! teacher is loaded or trained, every block of the supernet is distilled against the teacher's
//! taps, every candidate path is rated, the best architectures under the budget are searched
//! exactly, retrained from scratch and reported, with everything tracked in MLflow.

pub mod atomic;
pub mod data;
pub mod nn;
pub mod plan;
pub mod recipe;
pub mod run;
pub mod rundir;
pub mod slurm;
pub mod space;
pub mod stages;
pub mod stats;
pub mod status;
pub mod track;
