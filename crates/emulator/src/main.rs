use std::process::ExitCode;

use clap::Parser;

use workload_identity_core::echo::visible;
use workload_identity_emulator::EmulateArgs;
#[cfg(target_os = "linux")]
use workload_identity_webhook::shell::allocator::Allocator;

// Linux only (mremap); elsewhere (the kubectl plugin on macOS) the system allocator.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: Allocator = Allocator;

fn main() -> ExitCode {
    let args = EmulateArgs::parse();
    let result = args.log.init().and_then(|()| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(workload_identity_emulator::run(args)))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", visible(&format!("{err:#}")));
            ExitCode::FAILURE
        }
    }
}
