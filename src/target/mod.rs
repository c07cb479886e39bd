//! Targets: launching a command with the agent, finding what a pid is, and the embedded agent
//! library itself.

pub mod embedded;
pub mod golang;
pub mod launch;
pub mod proc;
pub mod signals;
