use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: a request allocates many small, short-lived buffers
/// (headers, JSON, futures); glibc's malloc/free took ~13 % of rbac's CPU per check.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    queue_platform::bootstrap::service_main(
        queue_auth::NAME,
        "Queue auth service: users, passkeys, sessions v2, backup codes and email verification.",
        |config: queue_auth::AuthConfig| queue_auth::run(config, queue_platform::Signals::Handle),
    )
}
