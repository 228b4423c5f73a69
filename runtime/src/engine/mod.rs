//! The outbound engine: builds requests from the plan, signs them and (later) sends them and
//! maps their answers.

pub mod build;
