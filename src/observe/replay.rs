//! Replaying a recording: the same session a live observation builds, from the file.

use crate::error::UserError;
use crate::source::recording::{self, Load, RecordingError};
use anyhow::Result;

/// Loads a recording for a report or a flamegraph, as `how` says, turning format errors into
/// usage errors (exit 2) and printing warnings.
pub fn replay(path: &std::path::Path, how: &Load) -> Result<recording::Replay> {
    let replay = recording::load(path, how).map_err(|e| match e {
        RecordingError::Io { .. } => UserError::usage(e.to_string()).hint("check the path"),
        RecordingError::NotFile { .. } | RecordingError::NotRecording { .. } | RecordingError::BadHeader { .. } => {
            UserError::usage(e.to_string()).hint("give a file written by `looptop record -o FILE`")
        }
        RecordingError::Version { .. } => {
            UserError::usage(e.to_string()).hint("read it with the looptop version that wrote it")
        }
    })?;
    for w in replay.warnings(path) {
        eprintln!("looptop: warning: {w}");
    }
    Ok(replay)
}
