//! The benchmark (`gebeta-bench`) and what the reliability tests share with it: the objects
//! they create ([`objects`]), watches that record Ready times and every token written
//! ([`observe`]), and sample summaries ([`stats`]); a run's time series ([`timeline`]) and its
//! SVG plots ([`plot`]).

mod ceiling;
pub mod objects;
pub mod observe;
pub mod overload;
pub mod plot;
mod run;
pub mod stats;
pub mod timeline;

pub use run::{BenchArgs, BenchError, OPERATOR_USER, Report, load_report, render, run};
