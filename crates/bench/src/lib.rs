//! `switchboard-bench`: measures every path of a running Switchboard against the
//! machine's own ceilings, in one run, and prints a table (and JSON).

pub mod ceilings;
pub mod clients;
mod cost;
pub mod cpu;
pub mod load;
pub mod report;
pub mod scenarios;
pub mod suite;
