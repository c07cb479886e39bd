//! Integration tests: every test drives the real looptop binary against real programs (node,
//! python3, C) with the real agent and segment. Fixtures write their own ground truth.

mod util;

mod attach;
mod blockers;
mod bpf;
mod browser;
mod check;
mod cli;
mod cluster;
mod docs;
mod errors;
mod express;
mod golang;
mod harm;
mod hostile;
mod java;
mod limits;
mod long;
mod man;
mod nginx;
mod outputs;
mod ps;
mod pyapps;
mod python;
mod record;
mod redis;
mod run;
mod runtime;
mod signals;
mod tokio;
mod top;
mod transparency;
mod unwind;
