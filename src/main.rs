//! The `edgeclip` binary: parse the command line, set up logging, run, map errors to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    // A panic on any thread ends the process (status 101) so that systemd restarts it.
    edgeclip::daemon::exit_on_panic();
    let cli = edgeclip::cli::Cli::parse();
    pin_kernel_cache(&cli);
    match edgeclip::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Points tract-cuda's kernel cache at edgeclip's (`model.kernel_cache`, `--kernel-cache`, else
/// the daemon's cache folder; see `edgeclip::model::device`).
///
/// tract-cuda 0.23.9 has no setting for it: it computes the folder once per process from
/// `XDG_CACHE_HOME` and keeps it. So the variable is set, the folder computed, and the variable
/// put back as it was, before any other thread exists: the rest of the process and its child
/// processes (camera pipes) see the environment unchanged.
#[allow(unsafe_code)]
fn pin_kernel_cache(cli: &edgeclip::cli::Cli) {
    use edgeclip::model::device::{KERNEL_CACHE_ENV, kernel_dir};
    let Some(base) = edgeclip::cli::kernel_cache_for(cli) else {
        return;
    };
    let saved = std::env::var_os(KERNEL_CACHE_ENV);
    // SAFETY: the process has one thread here (nothing above spawns one: clap, env_logger and
    // reading the config file do not), so no other thread reads or writes the environment.
    unsafe { std::env::set_var(KERNEL_CACHE_ENV, &base) };
    let dir = kernel_dir();
    match saved {
        // SAFETY: as above.
        Some(value) => unsafe { std::env::set_var(KERNEL_CACHE_ENV, value) },
        // SAFETY: as above.
        None => unsafe { std::env::remove_var(KERNEL_CACHE_ENV) },
    }
    if let Some(dir) = dir {
        log::debug!("compiled CUDA kernels are kept in {}", dir.display());
    }
}
