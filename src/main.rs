//! looptop: parse, dispatch, choose the exit code. Nothing else.

use std::process::ExitCode;

fn main() -> ExitCode {
    let plan = looptop::plan::Plan::from(looptop::cli::parse());
    match looptop::cmd::execute(plan) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            let code = match err.downcast_ref::<looptop::error::UserError>() {
                Some(u) => u.exit_code(),
                None => looptop::error::exit::OBSERVE,
            };
            eprintln!("looptop: {err:#}");
            ExitCode::from(code)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
}
