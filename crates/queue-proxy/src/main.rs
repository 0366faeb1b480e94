use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: forwarding allocates many small, short-lived buffers
/// (headers, bodies, futures), and glibc's malloc/free took ~10 % of the CPU per request.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    queue_platform::bootstrap::service_main(
        queue_proxy::NAME,
        "Queue proxy: sends each legacy path to Raptor or to Queue according to the migration phase.",
        |config| queue_proxy::run(config, queue_platform::Signals::Handle),
    )
}
